"""Fused GPU kernels for the forward's memory-bound elementwise steps, rounding as eager does.

Eagerly, the vision tower's rotary embedding is eight passes over the queries and keys in
float32 (cast, two products, a negation, a concatenation, a sum, the cast back) and its
QuickGELU three passes over the widest activation, in each of 32 blocks: more GPU time than
some of the matrix products around them. Each kernel here reads its inputs once and writes its
output once, and performs the same IEEE operations as the eager chain, in the same order, with
the same roundings: every product and sum rounded to float32 on its own (`mul_rn`, `add_rn`:
never contracted into a fused multiply-add, which rounds once), division correctly rounded
(`div_rn`), `exp` from CUDA's own math library (what ATen's kernels call), and a rounding to
the tensor's 16-bit type wherever the eager chain stores an intermediate tensor. So the
outputs are bit-identical to the eager ones (checked on CUDA over every 16-bit input value for
the activations, and on random tensors for the rotary), unlike torch.compile, whose
reductions and fused arithmetic round differently.

Only the elementwise steps are replaced; norms, matrix products and attention stay ATen's.
Applies on CUDA devices with Triton; elsewhere the eager functions run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

BLOCK = 1024  # elements per program of the elementwise kernels
ROWS = 16  # rows of the rotary kernel per program


def _kernels() -> Any:
    """The Triton kernels, imported on first use."""
    from packsight.vlm import fused_kernels

    return fused_kernels


_NO_FUSION = {"enable_fp_fusion": False}  # belt and braces beside the explicit *_rn


def _blocks(n: int) -> tuple[int]:
    return ((n + BLOCK - 1) // BLOCK,)


def rotary_vision(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The vision towers' `apply_rotary_pos_emb_vision`: q, k [tokens, heads, dim] (any
    strides along tokens and heads), cos, sin [tokens, dim]; computed in float32, returned
    contiguous in q's and k's dtypes."""
    return _rotate(q, cos, sin), _rotate(k, cos, sin)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    tokens, heads, dim = x.shape
    if x.stride(2) != 1 or cos.stride(1) != 1 or sin.stride() != cos.stride():
        cos, sin = cos.contiguous(), sin.contiguous()
        x = x if x.stride(2) == 1 else x.contiguous()
    out = torch.empty((tokens, heads, dim), dtype=x.dtype, device=x.device)
    rows = tokens * heads
    width = 1 << max(dim - 1, 1).bit_length()
    _kernels().rotary[((rows + ROWS - 1) // ROWS,)](
        x, cos, sin, out, rows, heads, x.stride(0), x.stride(1), cos.stride(0),
        DIM=dim, WIDTH=width, BLOCK_ROWS=ROWS, **_NO_FUSION,
    )  # fmt: skip
    return out


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """`x * torch.sigmoid(1.702 * x)` for a 16-bit tensor."""
    x = x.contiguous()
    out = torch.empty_like(x)
    _kernels().quick_gelu[_blocks(x.numel())](x, out, x.numel(), BLOCK=BLOCK, **_NO_FUSION)
    return out


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """`F.silu(gate) * up` for 16-bit tensors of one shape."""
    gate, up = gate.contiguous(), up.contiguous()
    out = torch.empty_like(gate)
    n = gate.numel()
    _kernels().silu_mul[_blocks(n)](gate, up, out, n, BLOCK=BLOCK, **_NO_FUSION)
    return out


def usable(device: torch.device, kind: torch.dtype) -> bool:
    """Whether the kernels run here and give the eager bits: a CUDA device, an importable
    Triton that compiles for it, and each kernel equal to its eager chain on every value of
    `kind` (a few milliseconds once compiled; checked once per device and type). Anything else
    leaves the model unfused, with a warning."""
    if device.type != "cuda" or kind not in (torch.float16, torch.bfloat16):
        return False
    key = (str(device), kind)
    if key not in _CHECKED:
        try:
            _CHECKED[key] = _differs(device, kind)
        except Exception as exc:  # no Triton on the worker image, no compiler, an old GPU
            _CHECKED[key] = f"{type(exc).__name__}: {exc}"
        if _CHECKED[key]:
            log.warning("fused kernels not used on %s (%s): %s", device, kind, _CHECKED[key])
    return _CHECKED[key] is None


_CHECKED: dict[tuple[str, torch.dtype], str | None] = {}


def _differs(device: torch.device, kind: torch.dtype) -> str | None:
    """Which kernel's output differs from its eager chain on `device`, if any."""
    from transformers.models.qwen2_vl.modeling_qwen2_vl import apply_rotary_pos_emb_vision

    values = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(kind)
    x = values[torch.isfinite(values)].to(device)
    up = x.flip(0)
    moderate = x[x.abs() < 1000]  # no infinities in the products, so no NaN to compare
    qkv = moderate[:: max(1, len(moderate) // 3360)][:3360].reshape(7, 3, 2, 80)
    q, k, _ = qkv.permute(1, 0, 2, 3).unbind(0)
    angles = torch.linspace(-300, 300, 7 * 40, device=device).reshape(7, 40).repeat(1, 2)
    cos, sin = angles.cos(), angles.sin()
    pairs = {
        "quick_gelu": (quick_gelu(x), x * torch.sigmoid(1.702 * x)),
        "silu_mul": (silu_mul(x, up), F.silu(x) * up),
        "rotary": (
            torch.cat(rotary_vision(q, k, cos, sin)),
            torch.cat(apply_rotary_pos_emb_vision(q, k, cos, sin)),
        ),
    }
    wrong = [name for name, (got, want) in pairs.items() if not torch.equal(got, want)]
    return f"{', '.join(wrong)} differ from the eager ops" if wrong else None


def _sixteen_bit(*tensors: torch.Tensor) -> bool:
    return all(t.is_cuda and t.dtype in (torch.float16, torch.bfloat16) for t in tensors)


# The towers call a module-level `apply_rotary_pos_emb_vision`; it is replaced by a function
# that runs the fused kernel while this thread is inside the vision forward of a model whose
# kernels are fused (forward hooks below), and the library's own function otherwise, so that
# another model in the process (an eager reference) is untouched.
_inside = threading.local()
_ROTARY_MODULES = (
    "transformers.models.qwen2_vl.modeling_qwen2_vl",
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl",
)


def _route_rotary(module_name: str) -> None:
    import importlib

    module = importlib.import_module(module_name)
    eager = getattr(module, "apply_rotary_pos_emb_vision", None)
    if eager is None or getattr(eager, "_packsight_fused", False):
        return

    def apply(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> Any:
        if getattr(_inside, "vision", 0) and _sixteen_bit(q, k) and q.dim() == cos.dim() + 1 == 3:
            return rotary_vision(q, k, cos, sin)
        return eager(q, k, cos, sin)

    apply._packsight_fused = True  # type: ignore[attr-defined]
    module.apply_rotary_pos_emb_vision = apply  # type: ignore[attr-defined]


def _enter(*_: object) -> None:
    _inside.vision = getattr(_inside, "vision", 0) + 1


def _leave(*_: object) -> None:
    _inside.vision = getattr(_inside, "vision", 1) - 1


class Fused:
    """The modules whose forward runs fused kernels; `remove` restores them."""

    def __init__(self) -> None:
        self.patched: list[torch.nn.Module] = []
        self.hooks: list[Any] = []

    def patch(self, module: torch.nn.Module, forward: Callable[..., Any]) -> None:
        module.forward = partial(forward, module)
        self.patched.append(module)

    def remove(self) -> None:
        for module in self.patched:
            vars(module).pop("forward", None)
        for hook in self.hooks:
            hook.remove()
        self.patched, self.hooks = [], []


def _gelu_forward(_act: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return quick_gelu(x) if _sixteen_bit(x) else x * torch.sigmoid(1.702 * x)


def _mlp_forward(mlp: Any, x: torch.Tensor) -> torch.Tensor:
    # What the gated MLP computes, down(act(gate(x)) * up(x)), the product fused with silu.
    gate, up = mlp.gate_proj(x), mlp.up_proj(x)
    if _sixteen_bit(gate, up):
        return mlp.down_proj(silu_mul(gate, up))
    return mlp.down_proj(mlp.act_fn(gate) * up)


def _gated(mlp: Any) -> bool:
    act = type(getattr(mlp, "act_fn", None)).__name__
    return all(hasattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj")) and act in (
        "SiLUActivation",
        "SiLU",
    )


def fuse_model(
    model: torch.nn.Module, device: torch.device, *, vision: bool, language: bool
) -> Fused | None:
    """Route the loaded model's vision tower (rotary, activation) and/or its language model's
    MLP activations through the fused kernels; None where nothing is asked for or the kernels
    cannot run on `device`."""
    unwrap = getattr(model, "get_base_model", None)
    base = unwrap() if callable(unwrap) else model
    kind = getattr(base, "dtype", torch.float32)
    if not (vision or language) or not usable(device, kind):
        return None
    fused = Fused()
    visual = getattr(getattr(base, "model", None), "visual", None)
    if vision and visual is not None:
        for name in _ROTARY_MODULES:
            _route_rotary(name)
        fused.hooks.append(visual.register_forward_pre_hook(_enter))
        fused.hooks.append(visual.register_forward_hook(_leave, always_call=True))
        for block in getattr(visual, "blocks", []):
            mlp = block.mlp
            if type(getattr(mlp, "act", None)).__name__ == "QuickGELUActivation":
                fused.patch(mlp.act, _gelu_forward)
            elif _gated(mlp):
                fused.patch(mlp, _mlp_forward)
    text = getattr(getattr(base, "model", None), "language_model", None)
    if language and text is not None:
        for layer in getattr(text, "layers", []):
            mlp = layer.get_submodule("mlp")
            if _gated(mlp):
                fused.patch(mlp, _mlp_forward)
    return fused
