"""cuDNN FP8 attention's input quantization (cudnn_fp8.quantize's numbers) in two passes over Q, K and V.

Written by hand because torch.compile spreads the same work (K's and V's means over the tokens, three per-tensor
absmaxes, the e4m3 casts with the padding) over about ten kernels, most of them reductions across the tokens at well
under the H200's bandwidth: about 7 ms of a 720p block's 16 ms outside the matmuls and attentions
(benchmarks/results/infinitetalk_block_gpu_merged.json). Here:
- pass 1 (`smoothing_stats`): per channel and per slice of tokens, max |q| and the sum, max and min of k and of v;
  the means and the smoothed tensors' absmaxes follow from those few numbers, since max |k - mean| over a channel is
  max(max k - mean, mean - min k): no second pass to find them;
- pass 2 (`smooth_quantize`): q, k - mean, v - mean at their scales in e4m3, zero rows to the padded length.
Both are custom ops (opaque to torch.compile; the small reductions between them stay in PyTorch). Triton's
interpreter (TRITON_INTERPRET=1) runs them on the CPU for the tests.
"""

from __future__ import annotations

import torch

E4M3 = torch.float8_e4m3fn
E4M3_MAX = 448.0
BLOCK_L = 64  # tokens a tile
BLOCK_C = 128  # channels a tile: one head
STATS_BLOCK_L = 32  # tokens a statistics tile: its seven [32, 128] float32 accumulators are 112 registers a thread
ROWS_PER_PROGRAM = 1024  # tokens one statistics program walks: 74 slices at 720p, so the partials stay small


def smoothed_e4m3(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, padded: int):
    """q, k, v [B, L, heads, D] -> e4m3 q, k - mean, v - mean [B, padded, heads, D] and the float32 descales
    (absmax / 448) [3], the mean of v [B, 1, heads, D] float32 (cudnn_fp8.quantize's contract)."""
    batch, tokens, heads, dim = q.shape
    q, k, v = (t.contiguous() for t in (q, k, v))
    partials = smoothing_stats(q, k, v)  # [7, B, slices, channels]
    mean_k = partials[1].sum(dim=1) / tokens  # [B, channels]
    mean_v = partials[4].sum(dim=1) / tokens
    spread_k = torch.maximum(partials[2].amax(dim=1) - mean_k, mean_k - partials[3].amin(dim=1))
    spread_v = torch.maximum(partials[5].amax(dim=1) - mean_v, mean_v - partials[6].amin(dim=1))
    absmax = torch.stack([partials[0].amax(), spread_k.amax(), spread_v.amax()])
    descales = absmax.clamp_min(1e-12) / E4M3_MAX
    q8, k8, v8 = smooth_quantize(q, k, v, mean_k, mean_v, descales, padded)
    return q8, k8, v8, descales, mean_v.reshape(batch, 1, heads, dim)


@torch.library.custom_op("spinbot::smoothing_stats", mutates_args=())
def smoothing_stats(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Pass 1 (module docstring): [7, B, token slices, channels] float32."""
    import triton

    from spinbot.backends.attention.cudnn_fp8_quantize_kernel import smoothing_stats_kernel

    batch, tokens = q.shape[:2]
    channels = q[0, 0].numel()
    slices = triton.cdiv(tokens, ROWS_PER_PROGRAM)
    partials = torch.empty((7, batch, slices, channels), dtype=torch.float32, device=q.device)
    grid = (slices, triton.cdiv(channels, BLOCK_C), batch)
    smoothing_stats_kernel[grid](
        q, k, v, partials, tokens, channels, ROWS_PER_PROGRAM, BLOCK_L=STATS_BLOCK_L, BLOCK_C=BLOCK_C, num_warps=8
    )
    return partials


@smoothing_stats.register_fake
def _(q, k, v):
    batch, tokens = q.shape[:2]
    slices = -(-tokens // ROWS_PER_PROGRAM)
    return q.new_empty((7, batch, slices, q[0, 0].numel()), dtype=torch.float32)


@torch.library.custom_op("spinbot::smooth_quantize", mutates_args=())
def smooth_quantize(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mean_k: torch.Tensor,
    mean_v: torch.Tensor,
    descales: torch.Tensor,
    padded: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pass 2 (module docstring): e4m3 [B, padded, heads, D] each."""
    import triton

    from spinbot.backends.attention.cudnn_fp8_quantize_kernel import smooth_quantize_kernel
    from spinbot.backends.attention.eight_bit_kernel import interpreted

    batch, tokens, heads, dim = q.shape
    outs = [torch.empty((batch, padded, heads, dim), dtype=E4M3, device=q.device) for _ in range(3)]
    channels = heads * dim
    grid = (triton.cdiv(padded, BLOCK_L), triton.cdiv(channels, BLOCK_C), batch)
    smooth_quantize_kernel[grid](
        q,
        k,
        v,
        mean_k.contiguous(),
        mean_v.contiguous(),
        descales.contiguous(),
        *outs,
        tokens,
        padded,
        channels,
        BLOCK_L=BLOCK_L,
        BLOCK_C=BLOCK_C,
        INTERPRETED=interpreted(),
        num_warps=4,
    )
    return outs[0], outs[1], outs[2]


@smooth_quantize.register_fake
def _(q, k, v, mean_k, mean_v, descales, padded):
    batch, _, heads, dim = q.shape
    return tuple(q.new_empty((batch, padded, heads, dim), dtype=E4M3) for _ in range(3))
