"""The Triton kernel of fp8_gelu (which documents it): one program per row, the whole row in registers."""

from __future__ import annotations

import triton
import triton.language as tl

from spinbot.backends.attention.eight_bit_kernel import _round_to_e4m3

E4M3_MAX = tl.constexpr(448.0)
SQRT_2_OVER_PI = tl.constexpr(0.7978845608028654)
MINUS_TWO_LOG2_E = tl.constexpr(-2.8853900817779268)  # sigmoid(2u) = 1 / (1 + 2^(-2u / ln 2))


@triton.jit
def gelu_quantize_kernel(
    X, Bias, Values, Scales, cols, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr, INTERPRETED: tl.constexpr
):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < cols
    x = tl.load(X + row * cols + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        x += tl.load(Bias + offs, mask=mask, other=0.0).to(tl.float32)
    u = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)
    hidden = x / (1.0 + tl.math.exp2(u * MINUS_TWO_LOG2_E))  # x * sigmoid(2u) = 0.5 x (1 + tanh(u))
    hidden = tl.where(mask, hidden, 0.0)
    scale = tl.maximum(tl.max(tl.abs(hidden), axis=0), 1e-12) / E4M3_MAX
    scaled = hidden / scale
    if INTERPRETED:  # the interpreter's e4m3 conversion needs values already on the grid (eight_bit_kernel.py)
        magnitude = _round_to_e4m3(tl.abs(scaled))
        scaled = tl.where(scaled < 0, -magnitude, magnitude)
    tl.store(Values + row * cols + offs, scaled.to(Values.dtype.element_ty), mask=mask)
    tl.store(Scales + row, scale)
