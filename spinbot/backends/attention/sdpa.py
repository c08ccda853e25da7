"""16-bit attention through PyTorch's scaled_dot_product_attention (cuDNN / FlashAttention kernels on the GPU)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) v over [B, L, heads, D] tensors."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)
