"""Self-attention kernels for the native backends' long sequences, chosen once when a model loads.

Every kernel is a function softmax(q k^T / sqrt(D)) v over [B, L, heads, D] tensors, so a caller (or a wrapper such
as sequence parallelism) holds one function and does not know which kernel it is.

- `sdpa`: PyTorch's scaled_dot_product_attention in the model's dtype (cuDNN's bfloat16 kernel on Hopper).
- `int8`: INT8 Q K^T and FP8 P V (SageAttention 2's formats) in our Triton kernel (eight_bit.py).
- `fp8`: FP8 e4m3 Q K^T and P V, the same kernel.
The 8-bit kernels need FP8 tensor cores on CUDA (Ada or Hopper, compute capability 8.9 or newer); on the CPU they
run as a float32 emulation of the same quantized arithmetic (slow; for tests).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from spinbot.errors import BackendUnavailable

Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
ATTENTION_KERNELS = ("sdpa", "int8", "fp8")
FP8_CAPABILITY = (8, 9)


def select_attention(name: str, device: torch.device, setting: str = "attention") -> Attention:
    """The kernel called `name` for a model on `device`; one-line errors for an unknown name or a GPU without
    FP8 tensor cores. `setting` names the option in the messages (e.g. SPINBOT_TALK_ATTENTION)."""
    if name not in ATTENTION_KERNELS:
        raise ValueError(f"{setting}={name!r} is not an attention kernel; use one of: {', '.join(ATTENTION_KERNELS)}")
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
    from spinbot.backends.attention import eight_bit

    return eight_bit.int8_attention if name == "int8" else eight_bit.fp8_attention
