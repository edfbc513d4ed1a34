"""The fused kernels' indexing, on the CPU through Triton's interpreter: strided queries and keys
from one packed projection, a head size that is no power of two, tails of partial blocks. The
interpreter has no CUDA math library, so plain operators stand in for the `*_rn` functions and
`exp` here, and it emulates bfloat16 only roughly: float16 values must be within a rounding of
ATen's. That both types are bit-identical on a GPU is what test_fused_gpu.py checks."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

CHECK = r'''
import types
import torch
import triton
import triton.language as tl
from packsight.vlm import fused, fused_kernels

@triton.jit
def mul(a, b):
    return a * b

@triton.jit
def add(a, b):
    return a + b

@triton.jit
def div(a, b):
    return a / b

@triton.jit
def exp(x):
    return tl.exp(x)

fused_kernels.libdevice = types.SimpleNamespace(mul_rn=mul, add_rn=add, div_rn=div, exp=exp)


def ulps(got, want):
    """How many 16-bit steps apart, per element (the bit patterns are ordered for finite
    values of one sign)."""
    step = (got.view(torch.int16).int() - want.view(torch.int16).int()).abs()
    return int(step[torch.isfinite(want)].max())


torch.manual_seed(0)
for kind in (torch.float16,):
    x = (torch.randn(3001) * 4).to(kind)  # not a multiple of the block
    assert ulps(fused.quick_gelu(x), x * torch.sigmoid(1.702 * x)) <= 1, kind
    up = torch.randn(3001).to(kind)
    assert ulps(fused.silu_mul(x, up), torch.nn.functional.silu(x) * up) <= 1, kind
    for heads, dim in ((3, 80), (2, 16)):
        qkv = torch.randn(37, 3, heads, dim).to(kind)  # as the towers' packed projection
        q, k, _ = qkv.permute(1, 0, 2, 3).unbind(0)
        angles = torch.randn(37, dim // 2) * 30
        angles = torch.cat([angles, angles], dim=-1)
        cos, sin = angles.cos(), angles.sin()
        from transformers.models.qwen2_vl.modeling_qwen2_vl import apply_rotary_pos_emb_vision
        want = apply_rotary_pos_emb_vision(q, k, cos, sin)
        got = fused.rotary_vision(q, k, cos, sin)
        for g, w in zip(got, want):
            assert fused.same_layout(g, w) and g.dtype == w.dtype
            assert ulps(g, w) == 0, (kind, heads, dim)  # float32 all through: no exp
    from transformers.models.qwen2_vl.modeling_qwen2_vl import apply_rotary_pos_emb
    for length in (1, 9):
        q = torch.randn(2, length, 3 * 16).to(kind).view(2, length, 3, 16).transpose(1, 2)
        k = torch.randn(2, length, 16).to(kind).view(2, length, 1, 16).transpose(1, 2)
        angles = torch.randn(2, length, 8) * 30
        angles = torch.cat([angles, angles], dim=-1)
        cos, sin = angles.cos().to(kind), angles.sin().to(kind)
        for g, w in zip(fused.rotary_text(q, k, cos, sin), apply_rotary_pos_emb(q, k, cos, sin)):
            assert fused.same_layout(g, w) and g.dtype == w.dtype
            assert ulps(g, w) <= 1, (kind, length)
    x = (torch.randn(5, 37) * 3).to(kind)  # a width that is no power of two
    weight = torch.randn(37).to(kind)
    assert ulps(fused.rms_norm(x, weight, 1e-6), fused.eager_rms_norm(x, weight, 1e-6)) <= 1
print("ok")
'''


def test_the_kernels_compute_the_eager_chain_in_the_interpreter(tmp_path: Path) -> None:
    env = os.environ | {"TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_a_failing_kernel_leaves_the_eager_ops_for_good(monkeypatch: pytest.MonkeyPatch) -> None:
    from packsight.vlm import fused_model

    monkeypatch.setattr(fused_model, "_failed", False)
    calls: list[str] = []

    def broken(x: int) -> int:
        calls.append("fused")
        raise RuntimeError("no compiler for this shape")

    def eager(x: int) -> int:
        calls.append("eager")
        return x + 1

    assert fused_model._either(broken, eager, 1) == 2
    assert fused_model._either(broken, eager, 2) == 3
    assert calls == ["fused", "eager", "eager"]  # not tried again


def test_the_norms_reference_is_what_the_models_norm_modules_compute() -> None:
    import torch
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLRMSNorm
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLRMSNorm

    from packsight.vlm import fused

    torch.manual_seed(0)
    for kind in (torch.bfloat16, torch.float16):
        x = (torch.randn(4, 9, 48) * 5).to(kind)
        for norm in (Qwen2VLRMSNorm(48, eps=1e-6), Qwen2_5_VLRMSNorm(48, eps=1e-5)):
            norm = norm.to(kind)
            with torch.no_grad():
                norm.weight.copy_(torch.randn(48))
                want = norm(x)
            got = fused.eager_rms_norm(x, norm.weight.detach(), norm.variance_epsilon)
            assert torch.equal(got, want) and got.dtype == want.dtype


def test_routing_counts_forwards_and_leaves_other_tensors_to_eager() -> None:
    import torch

    from packsight.vlm import fused_model

    class Tower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[bool] = []
            self.fail = False

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.seen.append(fused_model._active("vision"))
            if self.fail:
                raise RuntimeError("a failing forward")
            return x

    tower, fused = Tower(), fused_model.Fused()
    fused_model._hooks(fused, tower, "vision")
    tower(torch.zeros(1))
    tower.fail = True
    with pytest.raises(RuntimeError):
        tower(torch.zeros(1))
    assert tower.seen == [True, True] and not fused_model._active("vision")  # left each time
    # Inside the forward of a fused model, tensors the check did not pass (here: on the CPU)
    # still take the library's own function.
    calls: list[str] = []

    def eager(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        calls.append("eager")
        return args[:2]

    router = fused_model._vision_rotary(eager)
    fused_model._inside.vision = 1
    try:
        q = torch.zeros(3, 2, 4, dtype=torch.bfloat16)
        router(q, q, torch.zeros(3, 4), torch.zeros(3, 4))
    finally:
        fused_model._inside.vision = 0
    assert calls == ["eager"]
    fused.remove()
    tower.fail = False
    tower(torch.zeros(1))
    assert tower.seen[-1] is False  # the hooks are gone
