"""F5-TTS's position convolution (grouped Conv1d, kernel 31, 16 groups of 64 channels, then Mish and the padding
zeroed) as one Triton kernel on [batch, frames, channels] activations. Written by hand because cuDNN runs this
grouped convolution as one small kernel per group (16 launches, ~35 us each, plus layout slices: 0.65 ms a call,
98 ms of the 30 s benchmark's 556 ms of GPU time) while the work is a tensor-core matmul per tap: each program
sums 31 [frames x 64] @ [64 x 64] products for one group, and adds the bias, the Mish and the mask before writing.

CUDA only (the module imports triton); the tests run the kernel through Triton's interpreter on the CPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_FRAMES = 64


@triton.jit
def _grouped_conv_mish_kernel(
    x_ptr,
    w_ptr,
    bias_ptr,
    keep_ptr,
    out_ptr,
    frames,
    stride_xb,
    stride_xn,
    stride_kb,
    TAPS: tl.constexpr,
    GROUP: tl.constexpr,
    BLOCK: tl.constexpr,
    MISH: tl.constexpr,
):
    block, group, batch = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rows = block * BLOCK + tl.arange(0, BLOCK)
    channels = tl.arange(0, GROUP)
    x_base = x_ptr + batch * stride_xb + group * GROUP
    acc = tl.zeros((BLOCK, GROUP), dtype=tl.float32)
    for tap in range(TAPS):
        src = rows + tap - TAPS // 2
        inside = (src >= 0) & (src < frames)
        x = tl.load(x_base + src[:, None] * stride_xn + channels[None, :], mask=inside[:, None], other=0.0)
        # weights as [tap, group, in, out]: one contiguous 64 x 64 tile per tap and group
        w = tl.load(
            w_ptr + ((tap * tl.num_programs(1) + group) * GROUP + channels[:, None]) * GROUP + channels[None, :]
        )
        acc += tl.dot(x, w)
    acc += tl.load(bias_ptr + group * GROUP + channels).to(tl.float32)[None, :]
    if MISH:  # x * tanh(softplus(x)), softplus linear above 20 as torch's
        soft = tl.where(acc > 20.0, acc, tl.log(1.0 + tl.exp(tl.minimum(acc, 20.0))))
        acc = acc * (2.0 / (1.0 + tl.exp(-2.0 * soft)) - 1.0)
    valid = rows < frames
    keep = tl.load(keep_ptr + batch * stride_kb + rows, mask=valid, other=0) != 0
    acc = tl.where(keep[:, None], acc, 0.0)
    out = out_ptr + batch * stride_xb + group * GROUP + rows[:, None] * stride_xn + channels[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=valid[:, None])


def tap_major_weight(conv: torch.nn.Conv1d) -> torch.Tensor:
    """[out, in / groups, taps] -> [taps, groups, in / groups, out / groups], contiguous (made once per model)."""
    out_channels, per_group, taps = conv.weight.shape
    groups = conv.groups
    weight = conv.weight.view(groups, out_channels // groups, per_group, taps)
    return weight.permute(3, 0, 2, 1).contiguous()


def grouped_conv_mish(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, keep: torch.Tensor, mish: bool = True
) -> torch.Tensor:
    """mask(mish(conv1d(x))) for x: [batch, frames, channels] (contiguous), weight from tap_major_weight,
    keep: [batch, frames] bool (False frames come out as zeros; the input's must be zeros already)."""
    batch, frames, channels = x.shape
    taps, groups, group, _ = weight.shape
    assert channels == groups * group and x.is_contiguous()
    out = torch.empty_like(x)
    keep = keep.to(torch.uint8).contiguous()
    grid = (triton.cdiv(frames, BLOCK_FRAMES), groups, batch)
    _grouped_conv_mish_kernel[grid](
        x,
        weight,
        bias,
        keep,
        out,
        frames,
        x.stride(0),
        x.stride(1),
        keep.stride(0),
        TAPS=taps,
        GROUP=group,
        BLOCK=BLOCK_FRAMES,
        MISH=mish,
    )
    return out
