"""The Triton kernels of cudnn_fp8_quantize (which documents them). Both see Q, K, V as [B, tokens, channels]
(channels = heads x head dim) and tile them [BLOCK_L tokens, BLOCK_C channels]."""

from __future__ import annotations

import triton
import triton.language as tl

from spinbot.backends.attention.eight_bit_kernel import _round_to_e4m3

E4M3_MAX = tl.constexpr(448.0)


@triton.jit
def smoothing_stats_kernel(Q, K, V, Partials, tokens, channels, rows_per_program, BLOCK_L: tl.constexpr,
                           BLOCK_C: tl.constexpr):  # fmt: skip
    """Per channel, over this program's `rows_per_program` tokens: max |q|, and the sum, max and min of k and of v.
    Partials is [7, B, programs along the tokens, channels] float32. The statistics stay [BLOCK_L, BLOCK_C] tiles
    through the loop and are reduced across the rows once at the end (a reduction a tile costs a pass through
    shared memory: seven of them an iteration made this pass 3x slower than its reads)."""
    pid_l, pid_c, batch = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    col_ok = cols < channels
    base = batch.to(tl.int64) * tokens * channels
    absmax_q = tl.zeros([BLOCK_L, BLOCK_C], tl.float32)
    sum_k = tl.zeros([BLOCK_L, BLOCK_C], tl.float32)
    sum_v = tl.zeros([BLOCK_L, BLOCK_C], tl.float32)
    max_k = tl.full([BLOCK_L, BLOCK_C], float("-inf"), tl.float32)
    max_v = tl.full([BLOCK_L, BLOCK_C], float("-inf"), tl.float32)
    min_k = tl.full([BLOCK_L, BLOCK_C], float("inf"), tl.float32)
    min_v = tl.full([BLOCK_L, BLOCK_C], float("inf"), tl.float32)
    start = pid_l * rows_per_program
    for first in range(start, tl.minimum(start + rows_per_program, tokens), BLOCK_L):
        rows = first + tl.arange(0, BLOCK_L)
        ok = (rows < tokens)[:, None] & col_ok[None, :]
        offs = base + rows[:, None].to(tl.int64) * channels + cols[None, :]
        q = tl.load(Q + offs, mask=ok, other=0.0).to(tl.float32)
        k = tl.load(K + offs, mask=ok, other=0.0).to(tl.float32)
        v = tl.load(V + offs, mask=ok, other=0.0).to(tl.float32)
        absmax_q = tl.maximum(absmax_q, tl.abs(q))
        sum_k += k
        sum_v += v
        max_k = tl.maximum(max_k, tl.where(ok, k, float("-inf")))
        max_v = tl.maximum(max_v, tl.where(ok, v, float("-inf")))
        min_k = tl.minimum(min_k, tl.where(ok, k, float("inf")))
        min_v = tl.minimum(min_v, tl.where(ok, v, float("inf")))
    stride = tl.num_programs(2) * tl.num_programs(0) * channels  # one statistic's [B, programs, channels]
    out = Partials + (batch * tl.num_programs(0) + pid_l).to(tl.int64) * channels + cols
    tl.store(out, tl.max(absmax_q, axis=0), mask=col_ok)
    tl.store(out + stride, tl.sum(sum_k, axis=0), mask=col_ok)
    tl.store(out + 2 * stride, tl.max(max_k, axis=0), mask=col_ok)
    tl.store(out + 3 * stride, tl.min(min_k, axis=0), mask=col_ok)
    tl.store(out + 4 * stride, tl.sum(sum_v, axis=0), mask=col_ok)
    tl.store(out + 5 * stride, tl.max(max_v, axis=0), mask=col_ok)
    tl.store(out + 6 * stride, tl.min(min_v, axis=0), mask=col_ok)


@triton.jit
def _to_e4m3(x, descale, INTERPRETED: tl.constexpr):
    scaled = tl.minimum(tl.maximum(x / descale, -E4M3_MAX), E4M3_MAX)
    if INTERPRETED:  # the interpreter's e4m3 conversion needs values already on the grid (eight_bit_kernel.py)
        magnitude = _round_to_e4m3(tl.abs(scaled))
        scaled = tl.where(scaled < 0, -magnitude, magnitude)
    return scaled


@triton.jit
def smooth_quantize_kernel(Q, K, V, MeanK, MeanV, Descales, Q8, K8, V8, tokens, padded, channels,
                           BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr, INTERPRETED: tl.constexpr):  # fmt: skip
    """q / descale_q, (k - mean_k) / descale_k, (v - mean_v) / descale_v in e4m3, written [B, padded, channels]
    with zeros past `tokens`."""
    pid_l, pid_c, batch = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rows = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    col_ok = cols < channels
    ok = (rows < tokens)[:, None] & col_ok[None, :]
    offs = batch.to(tl.int64) * tokens * channels + rows[:, None].to(tl.int64) * channels + cols[None, :]
    q = tl.load(Q + offs, mask=ok, other=0.0).to(tl.float32)
    k = tl.load(K + offs, mask=ok, other=0.0).to(tl.float32)
    v = tl.load(V + offs, mask=ok, other=0.0).to(tl.float32)
    mean_k = tl.load(MeanK + batch * channels + cols, mask=col_ok, other=0.0)
    mean_v = tl.load(MeanV + batch * channels + cols, mask=col_ok, other=0.0)
    q8 = _to_e4m3(q, tl.load(Descales), INTERPRETED)
    k8 = _to_e4m3(tl.where(ok, k - mean_k[None, :], 0.0), tl.load(Descales + 1), INTERPRETED)
    v8 = _to_e4m3(tl.where(ok, v - mean_v[None, :], 0.0), tl.load(Descales + 2), INTERPRETED)
    written = (rows < padded)[:, None] & col_ok[None, :]
    out = batch.to(tl.int64) * padded * channels + rows[:, None].to(tl.int64) * channels + cols[None, :]
    tl.store(Q8 + out, q8.to(Q8.dtype.element_ty), mask=written)
    tl.store(K8 + out, k8.to(K8.dtype.element_ty), mask=written)
    tl.store(V8 + out, v8.to(V8.dtype.element_ty), mask=written)
