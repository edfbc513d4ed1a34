"""The Triton kernels of `fused.py`, imported on first use (importing Triton takes ~1 s).

Triton resolves the names a kernel uses from its module's globals, hence a module of their own.
Every product, sum and quotient is an explicit round-to-nearest operation (`*_rn`), so none is
contracted into a fused multiply-add; `.to(kind)` marks where the eager chain stores a 16-bit
intermediate tensor.
"""

import triton
import triton.language as tl
from triton.language.extra import libdevice


@triton.jit
def rotary(x, cos, sin, out, rows, heads, length, x_b, x_h, x_l, c_b, c_l, o_b, o_h, o_l,
           DIM: tl.constexpr, WIDTH: tl.constexpr, BLOCK_ROWS: tl.constexpr,
           STORED: tl.constexpr):  # fmt: skip
    # x [batch, heads, length, DIM] and out alike, cos and sin [batch, length, DIM], all
    # strided (the last dimension contiguous). STORED: the eager chain runs in x's 16-bit type
    # (each product stored in it, then the sum), as the language models' does; otherwise in
    # float32 with one rounding at the end, as the vision towers' does.
    row = (tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)[:, None]).to(tl.int64)
    d = tl.arange(0, WIDTH)[None, :]
    keep = (row < rows) & (d < DIM)
    b, h, p = row // (heads * length), (row // length) % heads, row % length
    half = DIM // 2
    partner = tl.where(d < half, d + half, d - half)
    at = x + b * x_b + h * x_h + p * x_l
    value = tl.load(at + d, mask=keep, other=0.0)
    kind = value.dtype
    value = value.to(tl.float32)
    other = tl.load(at + partner, mask=keep, other=0.0).to(tl.float32)
    # rotate_half's negation as a product with -1, exact for every value and the sign of zero
    # flipped as ATen's neg flips it (some Triton versions negate as 0 - x, which gives +0).
    minus = tl.full(other.shape, -1.0, tl.float32)
    turned = tl.where(d < half, libdevice.mul_rn(other, minus), other)
    angle = b * c_b + p * c_l + d
    c = tl.load(cos + angle, mask=keep, other=0.0).to(tl.float32)
    s = tl.load(sin + angle, mask=keep, other=0.0).to(tl.float32)
    first = libdevice.mul_rn(value, c)
    second = libdevice.mul_rn(turned, s)
    if STORED:
        first = first.to(kind).to(tl.float32)
        second = second.to(kind).to(tl.float32)
    rotated = libdevice.add_rn(first, second)
    target = out + b * o_b + h * o_h + p * o_l + d
    tl.store(target, rotated.to(out.dtype.element_ty), mask=keep)


@triton.jit
def quick_gelu(x, out, n, BLOCK: tl.constexpr):
    # x * sigmoid(1.702 * x), each of the three eager results stored in x's type.
    at = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    keep = at < n
    value = tl.load(x + at, mask=keep, other=0.0)
    kind = value.dtype
    wide = value.to(tl.float32)
    scale = tl.full(wide.shape, 1.702, tl.float32)
    scaled = libdevice.mul_rn(wide, scale).to(kind).to(tl.float32)
    one = tl.full(wide.shape, 1.0, tl.float32)
    gate = libdevice.div_rn(one, libdevice.add_rn(one, libdevice.exp(-scaled)))
    gate = gate.to(kind).to(tl.float32)
    tl.store(out + at, libdevice.mul_rn(wide, gate).to(kind), mask=keep)


@triton.jit
def silu_mul(gate, up, out, n, BLOCK: tl.constexpr):
    # silu(gate) * up, silu's result stored in gate's type first.
    at = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    keep = at < n
    g = tl.load(gate + at, mask=keep, other=0.0)
    kind = g.dtype
    wide = g.to(tl.float32)
    one = tl.full(wide.shape, 1.0, tl.float32)
    act = libdevice.div_rn(wide, libdevice.add_rn(one, libdevice.exp(-wide)))
    act = act.to(kind).to(tl.float32)
    u = tl.load(up + at, mask=keep, other=0.0).to(tl.float32)
    tl.store(out + at, libdevice.mul_rn(act, u).to(kind), mask=keep)


@triton.jit
def squares(x, out, n, BLOCK: tl.constexpr):
    # x.to(float32).pow(2): the RMS norm's input to its mean (ATen's reduction, kept).
    at = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    keep = at < n
    wide = tl.load(x + at, mask=keep, other=0.0).to(tl.float32)
    tl.store(out + at, libdevice.mul_rn(wide, wide), mask=keep)


@triton.jit
def rms_scale(x, scale, weight, out, n, width, BLOCK: tl.constexpr):
    # weight * (x.to(float32) * scale).to(x's type), scale = rsqrt(mean + eps) per row.
    at = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    keep = at < n
    value = tl.load(x + at, mask=keep, other=0.0)
    kind = value.dtype
    row_scale = tl.load(scale + at // width, mask=keep, other=0.0)
    normed = libdevice.mul_rn(value.to(tl.float32), row_scale).to(kind).to(tl.float32)
    w = tl.load(weight + at % width, mask=keep, other=0.0).to(tl.float32)
    tl.store(out + at, libdevice.mul_rn(w, normed).to(out.dtype.element_ty), mask=keep)
