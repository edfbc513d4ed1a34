"""The fused kernels on a CUDA device (skipped elsewhere): bit-identical to the eager chain of
ATen ops they replace, over every 16-bit input value for the activations and on random
strided tensors for the rotary embedding, and the labeler's predictions with them identical
to the eager labeler's, probabilities included, for both model families."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from packsight.labels.taxonomy import load_taxonomy
from packsight.vlm import fused, fused_model
from packsight.vlm.clip_input import ClipInput
from packsight.vlm.labeler import load_labeler
from packsight.vlm.speedups import Speedups
from packsight.vlm.tiny import build_tiny_model

pytestmark = pytest.mark.gpu
KINDS = [torch.bfloat16, torch.float16]


def every_value(kind: torch.dtype) -> torch.Tensor:
    """All 65,536 values of a 16-bit type (NaNs and infinities included), on the GPU."""
    bits = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    return bits.view(kind).cuda()


def assert_identical(got: torch.Tensor, want: torch.Tensor) -> None:
    assert fused.same_layout(got, want) and got.dtype == want.dtype
    nan = got.isnan() & want.isnan()
    differ = ~((got == want) | nan) | (got.signbit() != want.signbit()) & ~nan
    where = differ.nonzero()[:5].flatten().tolist()
    assert not differ.any(), f"{int(differ.sum())} values differ, e.g. at {where}"


@pytest.mark.parametrize("kind", KINDS)
def test_quick_gelu_is_bit_identical_for_every_value(kind: torch.dtype) -> None:
    x = every_value(kind)
    assert_identical(fused.quick_gelu(x), x * torch.sigmoid(1.702 * x))


@pytest.mark.parametrize("kind", KINDS)
def test_silu_mul_is_bit_identical_for_every_gate_value(kind: torch.dtype) -> None:
    gate = every_value(kind)
    for seed in range(3):
        generator = torch.Generator(device="cuda").manual_seed(seed)
        up = gate[torch.randperm(gate.numel(), device="cuda", generator=generator)]
        assert_identical(fused.silu_mul(gate, up), F.silu(gate) * up)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("heads", "dim"), [(16, 80), (2, 16), (16, 64)])
def test_rotary_is_bit_identical_on_the_towers_strided_views(
    kind: torch.dtype, heads: int, dim: int
) -> None:
    from transformers.models.qwen2_vl.modeling_qwen2_vl import apply_rotary_pos_emb_vision

    torch.manual_seed(heads * dim)
    tokens = 4099  # not a multiple of the kernel's rows
    qkv = torch.randn(tokens, 3, heads, dim, device="cuda") * 8
    qkv[: tokens // 2] *= 1e-39  # float32 subnormals too: none may be flushed to zero
    qkv = qkv.to(kind)
    q, k, _ = qkv.permute(1, 0, 2, 3).unbind(0)  # the towers' packed projection, split
    angles = torch.rand(tokens, dim // 2, device="cuda") * 500
    angles = torch.cat([angles, angles], dim=-1)
    cos, sin = angles.cos(), angles.sin()
    want = apply_rotary_pos_emb_vision(q, k, cos, sin)
    for got, expected in zip(fused.rotary_vision(q, k, cos, sin), want, strict=True):
        assert_identical(got, expected)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("length", [1, 7, 900])
def test_text_rotary_is_bit_identical_and_laid_out_as_eager(kind: torch.dtype, length: int) -> None:
    from transformers.models.qwen2_vl.modeling_qwen2_vl import apply_rotary_pos_emb

    torch.manual_seed(length)
    batch, heads, kv_heads, dim = 3, 12, 2, 128
    # As the attention layers make them: projections viewed as heads, then transposed.
    q = torch.randn(batch, length, heads * dim, device="cuda").to(kind) * 4
    q[0] *= 1e-38  # products below float32's normal range
    k = torch.randn(batch, length, kv_heads * dim, device="cuda").to(kind) * 4
    q, k = (t.view(batch, length, -1, dim).transpose(1, 2) for t in (q, k))
    angles = torch.rand(batch, length, dim // 2, device="cuda") * 3000
    angles = torch.cat([angles, angles], dim=-1)
    cos, sin = angles.cos().to(kind), angles.sin().to(kind)
    want = apply_rotary_pos_emb(q, k, cos, sin)
    for got, expected in zip(fused.rotary_text(q, k, cos, sin), want, strict=True):
        assert_identical(got, expected)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(64, 900, 1536), (4099, 1280), (3, 1, 2048)])
def test_rms_norm_is_bit_identical_to_the_models_module(kind: torch.dtype, shape: tuple) -> None:
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLRMSNorm

    torch.manual_seed(len(shape))
    norm = Qwen2VLRMSNorm(shape[-1], eps=1e-6).to(kind).cuda()
    with torch.no_grad():
        norm.weight.copy_(torch.randn(shape[-1]) * 2)
        x = (torch.randn(shape, device="cuda") * 7).to(kind)
        assert_identical(fused.rms_norm(x, norm.weight, norm.variance_epsilon), norm(x))


def clips() -> list[ClipInput]:
    result = []
    for seed in range(5):
        n = 125 if seed % 2 else 60
        frames = np.random.default_rng(seed).integers(0, 256, (8, 56, 56, 3), dtype=np.uint8)
        indices = tuple(round(i * (n - 1) / 7) for i in range(8))
        result.append(ClipInput(frames=frames, clip_frame_count=n, frame_indices=indices))
    return result


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
@pytest.mark.parametrize("kind", KINDS)
def test_the_labeler_with_fused_kernels_predicts_what_the_eager_one_does(
    tmp_path: Path, family: str, kind: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny = build_tiny_model(tmp_path / family, family=family)  # type: ignore[arg-type]
    rotations: list[str] = []

    def counted(name: str):
        rotate = getattr(fused, name)

        def call(*args: torch.Tensor) -> tuple:
            rotations.append(name)
            return rotate(*args)

        return call

    for name in ("rotary_vision", "rotary_text"):
        monkeypatch.setattr(fused_model, name, counted(name))

    def labeler(speedups: Speedups):
        return load_labeler(
            model=str(tiny),
            adapter=None,
            quantization="nf4",
            device="cuda",
            taxonomy=load_taxonomy("assignment"),
            batch_size=4,
            dtype=kind,
            speedups=speedups,
        )

    eager = labeler(Speedups.none())
    assert eager.fused is None
    expected = eager.predict(clips())
    assert not rotations  # the eager model's tower is untouched by the routing
    del eager
    only_fused = labeler(Speedups(cuda_graphs=False, host_positions=False, fewer_syncs=False))
    # Loading checked the kernels against the eager ops on this GPU, and they agreed.
    assert only_fused.fused is not None and only_fused.fused.patched
    rotations.clear()
    monkeypatch.setattr(fused_model, "_failed", False)
    assert only_fused.predict(clips()) == expected
    assert set(rotations) == {"rotary_vision", "rotary_text"}  # the kernels did run
    assert not fused_model._failed  # and none fell back to the eager ops
