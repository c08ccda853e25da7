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
- `auto` (the default): `cudnn-fp8` on a GPU where it runs, else `int8` on a GPU with FP8 tensor cores, else
  `sdpa`. Chosen from the H200 table in the README: either 8-bit attention changes the 14B forward by 1.1-1.5%
  against bfloat16 SDPA, the same to three digits (our bfloat16 forward and the official code's differ by 2.0%), for
  a step 18% (cudnn-fp8) or 9% (int8) shorter. cuDNN's kernel alone is less exact (6.0% against 1.6% on keys with
  channel offsets at 480p), a difference the forward did not show on either weight set; `int8` stays for whoever
  wants the more exact kernel.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from spinbot.errors import BackendUnavailable, SettingsError

Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
ATTENTION_KERNELS = ("sdpa", "int8", "fp8", "cudnn-fp8")
ATTENTION_CHOICES = ("auto", *ATTENTION_KERNELS)
FP8_CAPABILITY = (8, 9)


def resolve_attention(name: str, device: torch.device) -> str:
    """The kernel `name` stands for on `device`: `auto` is `cudnn-fp8` where cuDNN's FP8 attention can run (Hopper
    or newer with the gpu extra), else `int8` where FP8 tensor cores exist, else `sdpa`."""
    if name != "auto":
        return name
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return "sdpa"
    if torch.cuda.get_device_capability(device) < FP8_CAPABILITY:
        return "sdpa"
    from spinbot.backends.attention import cudnn_fp8

    return "cudnn-fp8" if cudnn_fp8.missing(device) is None else "int8"


def select_attention(name: str, device: torch.device, setting: str = "attention") -> Attention:
    """The kernel called `name` for a model on `device`; one-line errors for an unknown name or a GPU without
    FP8 tensor cores. `setting` names the option in the messages (e.g. SPINBOT_TALK_ATTENTION)."""
    if name not in ATTENTION_CHOICES:
        choices = ", ".join(ATTENTION_CHOICES)
        raise SettingsError(f"{setting}={name!r} is not an attention kernel; use one of: {choices}")
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
