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

Fused here: both rotary embeddings (the vision towers' in float32, the language models' in
their 16-bit type), QuickGELU, silu(gate) * up, and the RMS norms' elementwise passes around
ATen's own mean. Reductions, matrix products and attention stay ATen's. Applies on CUDA
devices with Triton (fused_model.py routes the model's modules here); elsewhere the eager
functions run.
"""

from __future__ import annotations

import logging
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


# Compile options: no contraction into fused multiply-adds (belt and braces beside the explicit
# *_rn), and no flushing of subnormal float32 values to zero, which Triton would otherwise ask
# of libdevice and ATen's kernels do not do (bfloat16 has float32's subnormals).
_EXACT = {"enable_fp_fusion": False, "enable_reflect_ftz": False}


def _launch(kernel: Any, n: int, *args: Any, **constants: Any) -> None:
    """`kernel` over `n` programs on the device of its first tensor argument (Triton launches
    on the current device, which need not be the tensors')."""
    if not args[0].is_cuda:  # Triton's interpreter, in the tests
        kernel[(n,)](*args, **constants, **_EXACT)
        return
    with torch.cuda.device(args[0].device):
        kernel[(n,)](*args, **constants, **_EXACT)


def _blocks(n: int) -> int:
    return (n + BLOCK - 1) // BLOCK


def rotary_vision(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The vision towers' `apply_rotary_pos_emb_vision`: q, k [tokens, heads, dim] (any
    strides along tokens and heads), cos, sin [tokens, dim]; computed in float32, returned
    contiguous in q's and k's dtypes."""
    outs = []
    for x in (q, k):  # as [tokens, heads, 1, dim] beside angles [tokens, 1, dim]
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        _rotate(x[:, :, None], cos[:, None], sin[:, None], out[:, :, None], stored=False)
        outs.append(out)
    return outs[0], outs[1]


def rotary_text(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The language models' `apply_rotary_pos_emb`: q, k [batch, heads, length, dim], cos,
    sin [batch, length, dim], all of one 16-bit type; each output laid out in memory as the
    eager ops lay theirs out (asked of them on the meta device, once per shape)."""
    outs = []
    for x, stride in zip((q, k), _text_layout(q, k, cos, sin), strict=True):
        out = torch.empty_strided(x.shape, stride, dtype=x.dtype, device=x.device)
        outs.append(_rotate(x, cos, sin, out, stored=True))
    return outs[0], outs[1]


def _text_layout(*tensors: torch.Tensor) -> tuple[tuple[int, ...], ...]:
    key = tuple((t.shape, t.stride(), t.dtype) for t in tensors)
    if key not in _LAYOUTS:
        if len(_LAYOUTS) >= 512:  # prompt lengths vary from batch to batch: keep it bounded
            _LAYOUTS.clear()
        meta = [
            torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta") for t in tensors
        ]
        _LAYOUTS[key] = tuple(out.stride() for out in eager_text_rotary(*meta))
    return _LAYOUTS[key]


_LAYOUTS: dict[tuple, tuple[tuple[int, ...], ...]] = {}


def _rotate(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, out: torch.Tensor, *, stored: bool
) -> torch.Tensor:
    """x and out [batch, heads, length, dim], cos and sin [batch, length, dim]."""
    batch, heads, length, dim = x.shape
    if dim % 2 or out.shape != x.shape or out.stride(3) != 1:
        raise ValueError(f"no fused rotary for {tuple(x.shape)} into {tuple(out.shape)}")
    # As eager broadcasts them (a batch of one, say): stride 0 where they repeat.
    cos, sin = cos.expand(batch, length, dim), sin.expand(batch, length, dim)
    if x.stride(3) != 1:
        x = x.contiguous()
    if cos.stride(2) != 1 or sin.stride() != cos.stride():
        cos, sin = cos.contiguous(), sin.contiguous()
    rows = batch * heads * length
    width = 1 << max(dim - 1, 1).bit_length()
    _launch(
        _kernels().rotary, (rows + ROWS - 1) // ROWS,
        x, cos, sin, out, rows, heads, length, *x.stride()[:3], *cos.stride()[:2],
        *out.stride()[:3], DIM=dim, WIDTH=width, BLOCK_ROWS=ROWS, STORED=stored,
    )  # fmt: skip
    return out


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """`x * torch.sigmoid(1.702 * x)` for a 16-bit tensor."""
    x = x.contiguous()
    out = torch.empty_like(x)
    _launch(_kernels().quick_gelu, _blocks(x.numel()), x, out, x.numel(), BLOCK=BLOCK)
    return out


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """`F.silu(gate) * up` for 16-bit tensors of one shape."""
    gate, up = gate.contiguous(), up.contiguous()
    out = torch.empty_like(gate)
    n = gate.numel()
    _launch(_kernels().silu_mul, _blocks(n), gate, up, out, n, BLOCK=BLOCK)
    return out


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The Qwen RMS norms' forward for a contiguous 16-bit `x`: the squares and the scaling
    fused, the mean over the last dimension and the rsqrt of it left to ATen (a reduction
    whose order these kernels could not promise to follow)."""
    x = x.contiguous()
    n, width = x.numel(), x.shape[-1]
    squares = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    _launch(_kernels().squares, _blocks(n), x, squares, n, BLOCK=BLOCK)
    scale = torch.rsqrt(squares.mean(-1, keepdim=True) + eps)
    out = torch.empty(x.shape, dtype=torch.result_type(weight, x), device=x.device)
    _launch(_kernels().rms_scale, _blocks(n), x, scale, weight, out, n, width, BLOCK=BLOCK)
    return out


def eager_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """What the models' RMS norm modules compute (the reference of `rms_norm`)."""
    wide = x.to(torch.float32)
    wide = wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + eps)
    return weight * wide.to(x.dtype)


def usable(device: torch.device, kind: torch.dtype) -> bool:
    """Whether the kernels run here and give the eager bits: a CUDA device, an importable
    Triton that compiles for it, and each kernel equal to its eager chain on every value of
    `kind` (a few milliseconds once compiled; checked once per device and type). Anything else
    leaves the model unfused, with a warning."""
    if device.type != "cuda" or kind not in (torch.float16, torch.bfloat16):
        return False
    key = (_index(device), kind)
    if key not in _CHECKED:
        try:
            _CHECKED[key] = _differs(device, kind)
        except Exception as exc:  # no Triton on the worker image, no compiler, an old GPU
            _CHECKED[key] = f"{type(exc).__name__}: {exc}"
        if _CHECKED[key]:
            log.warning("fused kernels not used on %s (%s): %s", device, kind, _CHECKED[key])
    return _CHECKED[key] is None


_CHECKED: dict[tuple[int, torch.dtype], str | None] = {}


def _index(device: torch.device) -> int:
    return torch.cuda.current_device() if device.index is None else device.index


def _differs(device: torch.device, kind: torch.dtype) -> str | None:
    """Which kernel's output differs from its eager chain on `device`, if any."""
    from transformers.models.qwen2_vl import modeling_qwen2_vl

    vision = modeling_qwen2_vl.apply_rotary_pos_emb_vision
    vision = getattr(vision, "_packsight_eager", vision)
    values = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(kind)
    x = values[torch.isfinite(values)].to(device)
    up = x.flip(0)
    moderate = x[x.abs() < 1000]  # no infinities in the products, so no NaN to compare
    spread = moderate[:: max(1, len(moderate) // 3360)][:3360].clone()
    spread[:160], spread[160:320] = 0.0, -0.0  # signed zeros: a sign may not flip wrongly
    q, k, _ = spread.reshape(7, 3, 2, 80).permute(1, 0, 2, 3).unbind(0)
    angles = torch.linspace(-300, 300, 7 * 40, device=device).reshape(7, 40).repeat(1, 2)
    cos, sin = angles.cos(), angles.sin()
    # [batch, heads, length, dim] as the language models' attention makes them (dim 128).
    text = spread[: 7 * 3 * 128].reshape(1, 7, 3, 128).transpose(1, 2)
    norm = spread.reshape(42, 80), moderate[-80:], 1e-6
    steps = torch.linspace(-300, 300, 7 * 64, device=device).reshape(1, 7, 64).repeat(1, 1, 2)
    angles16 = steps.cos().to(kind), steps.sin().to(kind)
    pairs: dict[str, tuple[Any, Any]] = {
        "quick_gelu": (quick_gelu(x), x * torch.sigmoid(1.702 * x)),
        "silu_mul": (silu_mul(x, up), F.silu(x) * up),
        "rms_norm": (rms_norm(*norm), eager_rms_norm(*norm)),
        "rotary_vision": (rotary_vision(q, k, cos, sin), vision(q, k, cos, sin)),
        "rotary_text": (
            rotary_text(text, text[:, :1], *angles16),
            eager_text_rotary(text, text[:, :1], *angles16),
        ),
    }
    wrong = [
        name
        for name, (got, want) in pairs.items()
        if not all(
            same_bits(g, w) and same_layout(g, w)
            for g, w in zip(_tensors(got), _tensors(want), strict=True)
        )
    ]
    return f"{', '.join(wrong)} differ from the eager ops" if wrong else None


def _tensors(value: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return value if isinstance(value, tuple) else (value,)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit for bit (so +0 and -0 differ, and a NaN equals the same NaN)."""
    bits = {2: torch.int16, 4: torch.int32}[a.element_size()]
    return a.dtype == b.dtype and torch.equal(a.view(bits), b.view(bits))


def same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    """The same shape, laid out alike in memory (a dimension of size 1 has no stride to speak
    of: it may be reported either way)."""
    return a.shape == b.shape and all(
        x == y for x, y, n in zip(a.stride(), b.stride(), a.shape, strict=True) if n > 1
    )


def sixteen_bit(*tensors: torch.Tensor) -> bool:
    """Whether the tensors are on a CUDA device, of a 16-bit type, that `usable` checked and
    found exact."""
    return all(
        t.is_cuda and _CHECKED.get((_index(t.device), t.dtype), "unchecked") is None
        for t in tensors
    )


def eager_text_rotary(*args: Any) -> Any:
    """transformers' own `apply_rotary_pos_emb`, routed or not."""
    from transformers.models.qwen2_vl import modeling_qwen2_vl

    apply = modeling_qwen2_vl.apply_rotary_pos_emb
    return getattr(apply, "_packsight_eager", apply)(*args)
