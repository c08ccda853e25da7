"""8-bit self-attention (SageAttention's recipe) for long sequences: Q K^T in INT8 or FP8 e4m3, P V in FP8 e4m3.

What is quantized, and why it keeps the softmax's result (SageAttention 1 and 2, Zhang et al. 2024):
- K is smoothed first: its mean over the tokens (per batch and head) is subtracted. q . (k - mean) differs from
  q . k by a constant per query, which the softmax removes, and the keys' shared offset (large in trained video
  DiTs) no longer eats the 8-bit range.
- Q and K: one scale per block of SCALE_BLOCK tokens per head (absmax / 127 for INT8, / 448 for e4m3).
- V: its channel mean is subtracted (each softmax row sums to 1, so the mean is added back exactly after), then
  one e4m3 scale per channel (per head).
- P (the softmax numerators, in [0, 2^8]): e4m3 without a scale, P V accumulated in float32 (eight_bit_kernel.py).

`quantize` is plain PyTorch, so under torch.compile Inductor fuses it with the RoPE that produces q and k; the
kernel is an opaque custom op (`spinbot::attention_8bit`). On CUDA it is the Triton kernel; on CPU tensors the
Triton interpreter runs it when TRITON_INTERPRET=1 (the tests), otherwise `emulate` computes the same quantized
numbers in float32 (slow: a CPU fallback, not a CPU backend).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

QK_FORMATS = {"int8": (torch.int8, 127.0), "fp8": (torch.float8_e4m3fn, 448.0)}
E4M3 = torch.float8_e4m3fn
E4M3_MAX = 448.0
SCALE_BLOCK = 128  # tokens per Q / K scale on the GPU (every kernel tile is at most this long)
P_SHIFT = 8.0  # P = 2^(s - rowmax + P_SHIFT) lies in [0, 256]
LOG2E = 1.4426950408889634


@dataclass(frozen=True)
class Quantized:
    """8-bit Q, K, V with their scales, in the kernel's layout (tokens padded to a multiple of `block`)."""

    q: torch.Tensor  # [B*H, Lp, D] int8 or e4m3
    k: torch.Tensor  # [B*H, Lp, D], smoothed
    vt: torch.Tensor  # [B*H, D, Lp] e4m3, smoothed, transposed
    q_scale: torch.Tensor  # [B*H, Lp / block] float32
    k_scale: torch.Tensor
    v_scale: torch.Tensor  # [B*H, D] float32
    v_mean: torch.Tensor  # [B*H, D] float32
    tokens: int
    heads: int
    block: int


def quantize(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, qk_format: str, block: int = SCALE_BLOCK) -> Quantized:
    """q, k, v [B, L, heads, D] -> Quantized (see the module docstring for the scheme)."""
    dtype, top = QK_FORMATS[qk_format]
    tokens, heads = q.shape[1], q.shape[2]
    pad = (-tokens) % block

    def head_major(x: torch.Tensor) -> torch.Tensor:  # [B, L, H, D] -> [B*H, Lp, D] float32, zero rows padded
        return F.pad(x.float().transpose(1, 2), (0, 0, 0, pad)).flatten(0, 1)

    def per_block(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        blocks = x.unflatten(1, (-1, block))  # [BH, Lp / block, block, D]
        scale = blocks.abs().amax(dim=(2, 3)).clamp_min(1e-20) / top
        scaled = (blocks / scale[:, :, None, None]).flatten(1, 2)
        values = scaled.round().to(dtype) if dtype == torch.int8 else scaled.clamp(-top, top).to(dtype)
        return values, scale

    kf = k.float()
    q8, q_scale = per_block(head_major(q))
    k8, k_scale = per_block(head_major(kf - kf.mean(dim=1, keepdim=True)))
    vf = v.float()
    v_mean = vf.mean(dim=1)  # [B, H, D]
    vs = head_major(vf - v_mean[:, None])  # [BH, Lp, D]
    v_scale = vs.abs().amax(dim=1).clamp_min(1e-20) / E4M3_MAX  # [BH, D]
    vt = (vs / v_scale[:, None, :]).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3).transpose(1, 2).contiguous()
    return Quantized(q8, k8, vt, q_scale, k_scale, v_scale, v_mean.flatten(0, 1), tokens, heads, block)


def attention_8bit(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, qk_format: str = "int8") -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) v over [B, L, heads, D] tensors with 8-bit Q K^T and P V; output in q's dtype."""
    x = quantize(q, k, v, qk_format, block=SCALE_BLOCK if q.is_cuda else min(SCALE_BLOCK, 32))
    return torch.ops.spinbot.attention_8bit(
        x.q, x.k, x.vt, x.q_scale, x.k_scale, x.v_scale, x.v_mean, x.tokens, x.heads, x.block, q.dtype
    )


def int8_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """INT8 Q K^T, FP8 P V (SageAttention 2's formats)."""
    return attention_8bit(q, k, v, "int8")


def fp8_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """FP8 e4m3 Q K^T and P V (FlashAttention 3's FP8 formats, with SageAttention's smoothing and block scales)."""
    return attention_8bit(q, k, v, "fp8")


@torch.library.custom_op("spinbot::attention_8bit", mutates_args=())
def _attention_8bit_op(
    q: torch.Tensor,
    k: torch.Tensor,
    vt: torch.Tensor,
    q_scale: torch.Tensor,
    k_scale: torch.Tensor,
    v_scale: torch.Tensor,
    v_mean: torch.Tensor,
    tokens: int,
    heads: int,
    block: int,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    x = Quantized(q, k, vt, q_scale, k_scale, v_scale, v_mean, tokens, heads, block)
    from spinbot.backends.attention.eight_bit_kernel import interpreted

    if q.is_cuda or interpreted():
        return launch(x, out_dtype)
    return emulate(x, out_dtype)


@_attention_8bit_op.register_fake
def _(q, k, vt, q_scale, k_scale, v_scale, v_mean, tokens, heads, block, out_dtype):
    return q.new_empty((q.shape[0] // heads, tokens, heads, q.shape[2]), dtype=out_dtype)


def launch(x: Quantized, out_dtype: torch.dtype = torch.bfloat16, config: dict | None = None) -> torch.Tensor:
    """The Triton kernel: on the GPU, Hopper's measured configuration (eight_bit_kernel.HOPPER_CONFIG) or the
    autotuner's choice elsewhere, unless a fixed `config` (BLOCK_M, BLOCK_N, num_warps, num_stages) is
    given; in the interpreter, 16-token tiles unless `config` says otherwise."""
    import triton

    from spinbot.backends.attention import eight_bit_kernel as kernels

    bh, padded, dim = x.q.shape
    out = torch.empty(bh // x.heads, x.tokens, x.heads, dim, dtype=out_dtype, device=x.q.device)
    # The kernel addresses Q, K [BH, Lp, D] and Vt [BH, D, Lp] as dense row-major blocks; with nothing to pad,
    # quantize's F.pad keeps the transposed [B, H, L, D] strides, so the layout is made here (a no-op when dense).
    args = (
        x.q.contiguous(),
        x.k.contiguous(),
        x.vt.contiguous(),
        x.q_scale,
        x.k_scale,
        x.v_scale,
        x.v_mean,
        out,
        LOG2E / math.sqrt(dim),
        x.tokens,
        padded,
        x.heads,
        out.stride(0),
        out.stride(1),
        out.stride(2),
    )
    constants = {"HEAD_DIM": dim, "SCALE_BLOCK": x.block, "QK_INT8": x.q.dtype == torch.int8, "P_SHIFT": P_SHIFT}
    if config is None and x.q.is_cuda:
        config = kernels.pinned_config(torch.cuda.get_device_capability(x.q.device))
    if kernels.interpreted() or config is not None:
        config = {"BLOCK_M": 16, "BLOCK_N": 16} | (config or {})
        if kernels.interpreted():  # e4m3 conversion done on the grid first (eight_bit_kernel.py)
            config["ROUND_P"] = True
        grid = (triton.cdiv(x.tokens, config["BLOCK_M"]), bh)
        kernels.attention_8bit_kernel[grid](*args, **constants, **config)
    else:
        if x.block != SCALE_BLOCK:
            raise ValueError(f"the tuned kernel's tiles need {SCALE_BLOCK}-token scale blocks, got {x.block}")
        kernels.tuned_kernel[lambda meta: (triton.cdiv(x.tokens, meta["BLOCK_M"]), bh)](*args, **constants)
    return out


def emulate(x: Quantized, out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The kernel's arithmetic in float32 PyTorch: the same quantized Q, K, V and e4m3 P (against each row's final
    maximum instead of the kernel's running one)."""
    dim = x.q.shape[2]
    q = x.q.float() * x.q_scale.repeat_interleave(x.block, dim=1)[..., None]
    k = x.k.float() * x.k_scale.repeat_interleave(x.block, dim=1)[..., None]
    scores = (q @ k.transpose(1, 2)) * (LOG2E / math.sqrt(dim))  # [BH, Lp, Lp], base 2
    scores[:, :, x.tokens :] = float("-inf")
    p = torch.exp2(scores - scores.amax(dim=2, keepdim=True) + P_SHIFT)
    pv = p.to(E4M3).float() @ x.vt.float().transpose(1, 2)  # [BH, Lp, D]
    out = pv / p.sum(dim=2, keepdim=True) * x.v_scale[:, None, :] + x.v_mean[:, None, :]
    return out[:, : x.tokens].unflatten(0, (-1, x.heads)).transpose(1, 2).to(out_dtype)
