"""Bias, tanh-GELU and e4m3 row quantization in one pass: the hidden activation between an FP8 feed-forward's two
matmuls (fp8.FP8FeedForward).

Written by hand because torch.compile's kernel for the same four ops reads each 13,824-wide hidden row twice and
evaluates the GELU twice (its row maximum and its cast are two loops over the row): 4.0 ms of a 720p block on an
H200 for 3.1 GB that must move (benchmarks/results/infinitetalk_block_gpu.json). One program here holds a whole row
in registers: one read, one GELU, the e4m3 values and the row's scale written.

GELU(x) with the tanh approximation is 0.5 x (1 + tanh(u)) = x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3),
computed as x / (1 + 2^(-2u log2 e)) in float32; each row's scale is absmax / 448 (spinbot.backends.fp8's rule).
Off the GPU `reference` computes the same in torch; Triton's interpreter (TRITON_INTERPRET=1) runs the kernel on the
CPU for the tests.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

E4M3 = torch.float8_e4m3fn
E4M3_MAX = 448.0
# widest row one program holds in registers (16 warps, 64 values a thread); wider rows take the torch path
MAX_FUSED_WIDTH = 32768


def reference(x: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """[rows, k] -> (e4m3 values, float32 scales [rows, 1]) of GELU_tanh(x + bias), in float32 torch ops."""
    x32 = x.float() if bias is None else x.float() + bias.float()
    hidden = F.gelu(x32, approximate="tanh")
    scale = hidden.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) / E4M3_MAX
    return (hidden / scale).to(E4M3), scale


@torch.library.custom_op("spinbot::gelu_quantize_rows", mutates_args=())
def gelu_quantize_rows(x: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """x [rows, k] (a matmul's output, bias not yet added) -> e4m3 GELU_tanh(x + bias) and its row scales [rows, 1]."""
    from spinbot.backends.attention.eight_bit_kernel import interpreted

    if (x.is_cuda or interpreted()) and x.shape[-1] <= MAX_FUSED_WIDTH:
        return _launch(x, bias)
    return reference(x, bias)


@gelu_quantize_rows.register_fake
def _(x, bias):
    return torch.empty(x.shape, dtype=E4M3, device=x.device), x.new_empty((x.shape[0], 1), dtype=torch.float32)


def _launch(x: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    import triton

    from spinbot.backends.attention.eight_bit_kernel import interpreted
    from spinbot.backends.fp8_gelu_kernel import gelu_quantize_kernel

    x = x.contiguous()
    rows, cols = x.shape
    values = torch.empty((rows, cols), dtype=E4M3, device=x.device)
    scales = torch.empty((rows, 1), dtype=torch.float32, device=x.device)
    block = triton.next_power_of_2(cols)
    gelu_quantize_kernel[(rows,)](
        x,
        x if bias is None else bias,
        values,
        scales,
        cols,
        HAS_BIAS=bias is not None,
        BLOCK=block,
        INTERPRETED=interpreted(),
        num_warps=max(4, min(16, block // 1024)),  # about 32 values a thread: the row stays in registers
    )
    return values, scales
