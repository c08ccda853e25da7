"""Self-attention kernels for the native backends' long sequences, chosen once when a model loads.

Every kernel is a function softmax(q k^T / sqrt(D)) v over [B, L, heads, D] tensors, so a caller (or a wrapper such
as sequence parallelism) holds one function and does not know which kernel it is.

- `sdpa`: PyTorch's scaled_dot_product_attention in the model's dtype (cuDNN's bfloat16 kernel on Hopper).
- `int8`: INT8 Q K^T and FP8 P V (SageAttention 2's formats) in our Triton kernel (eight_bit.py).
- `fp8`: FP8 e4m3 Q K^T and P V, the same kernel.
- `cudnn-fp8`: cuDNN's fused FP8 flash attention (cudnn-frontend's sdpa_fp8, per-tensor scales, e4m3 output on
  Hopper; cudnn_fp8.py): the fastest on Hopper, the least exact of the three.
The 8-bit kernels need FP8 tensor cores on CUDA (Ada or Hopper, compute capability 8.9 or newer; cuDNN's FP8
attention Hopper or newer); on the CPU they run as a float32 emulation of the same quantized arithmetic (slow; for
tests).
- `auto` (the default): `int8` on a CUDA GPU with FP8 tensor cores, `sdpa` elsewhere. Chosen from the H200 table in
  the README: INT8 attention changes the 14B forward by 1.1-1.5% against bfloat16 SDPA (our bfloat16 forward and the
  official code's differ by 2.0%) for a step 9% shorter; on keys with channel offsets its kernel error is 2.4x
  smaller than FP8 Q K^T's, at about the same speed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from spinbot.errors import BackendUnavailable

Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
ATTENTION_KERNELS = ("sdpa", "int8", "fp8", "cudnn-fp8")
ATTENTION_CHOICES = ("auto", *ATTENTION_KERNELS)
FP8_CAPABILITY = (8, 9)


def resolve_attention(name: str, device: torch.device) -> str:
    """The kernel `name` stands for on `device`: `auto` is `int8` where FP8 tensor cores exist, else `sdpa`."""
    if name != "auto":
        return name
    device = torch.device(device)
    has_fp8 = (
        device.type == "cuda"
        and torch.cuda.is_available()
        and torch.cuda.get_device_capability(device) >= FP8_CAPABILITY
    )
    return "int8" if has_fp8 else "sdpa"


def select_attention(name: str, device: torch.device, setting: str = "attention") -> Attention:
    """The kernel called `name` for a model on `device`; one-line errors for an unknown name or a GPU without
    FP8 tensor cores. `setting` names the option in the messages (e.g. SPINBOT_TALK_ATTENTION)."""
    if name not in ATTENTION_CHOICES:
        raise ValueError(f"{setting}={name!r} is not an attention kernel; use one of: {', '.join(ATTENTION_CHOICES)}")
    name = resolve_attention(name, device)
    if name == "sdpa":
        from spinbot.backends.attention.sdpa import sdpa_attention

        return sdpa_attention
    device = torch.device(device)
    if device.type == "cuda":
        capability = torch.cuda.get_device_capability(device)
        if capability < FP8_CAPABILITY:
            raise BackendUnavailable(
                f"{setting}={name} needs FP8 tensor cores (compute capability 8.9 or newer: "
                f"Ada, Hopper); this GPU is sm{capability[0]}{capability[1]}"
            )
    if name == "cudnn-fp8":
        from spinbot.backends.attention import cudnn_fp8

        if device.type == "cuda":
            cudnn_fp8.check_support(device, setting)
        return cudnn_fp8.cudnn_fp8_attention
    from spinbot.backends.attention import eight_bit

    return eight_bit.int8_attention if name == "int8" else eight_bit.fp8_attention
