"""The F5-TTS package's layers computed with fewer passes over memory: the same weights, the same math.

Each function here stands in for one of the package's modules inside the packed forward (packed.py), where the
GPU profile of the 30 s benchmark showed time going to layout copies, separate element-wise passes or narrow
matmuls rather than to arithmetic.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from x_transformers.x_transformers import rotate_half


def project_qkv(attn: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[total, dim] -> q, k, v as [total, heads, head_dim]: one matmul where fuse_projections joined the three
    weights (3x the columns fill the GPU better than three narrow products), else the three layers."""
    fused = getattr(attn, "qkv_weight", None)
    if fused is None:
        return tuple(proj(x).unflatten(-1, (attn.heads, -1)) for proj in (attn.to_q, attn.to_k, attn.to_v))
    qkv = F.linear(x, fused, attn.qkv_bias)
    return tuple(part.unflatten(-1, (attn.heads, -1)) for part in qkv.chunk(3, dim=-1))


def feed_forward(ff: Any, x: torch.Tensor) -> torch.Tensor:
    """The package's FeedForward (Linear, tanh GELU, Dropout, Linear) on [total, dim]. With plain linear layers the
    GELU runs in the first matmul's epilogue on CUDA (cuBLASLt's GELU epilogue is the same tanh approximation;
    the CPU kernel of _addmm_activation applies the exact GELU, so the CPU keeps the module): one pass over the
    [total, 2 x dim] activations fewer."""
    (project, act), dropout, out = ff.ff[0], ff.ff[1], ff.ff[2]
    if (
        x.is_cuda
        and type(project) is nn.Linear
        and project.bias is not None
        and getattr(act, "approximate", None) == "tanh"
    ):
        h = torch._addmm_activation(project.bias, x, project.weight.t(), use_gelu=True)
        return out(dropout(h))
    return ff(x)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x_transformers' apply_rotary_pos_emb (as the package applies it, scale 1) on [total, heads, head_dim], with
    the angles' cos and sin computed once per sample() call instead of in every block of every step."""
    rot = cos.shape[-1]
    turned = x[..., :rot] * cos + rotate_half(x[..., :rot]) * sin
    return torch.cat([turned, x[..., rot:]], dim=-1).to(x.dtype)


def fuse_projections(attn: Any) -> bool:
    """Join to_q, to_k and to_v's weights into one [3 x inner, dim] buffer (qkv_weight, qkv_bias; not saved with
    the state dict), the three layers' weights becoming views of it: no second copy. Only plain linear layers."""
    layers = (attn.to_q, attn.to_k, attn.to_v)
    if not all(type(layer) is nn.Linear for layer in layers) or len({layer.bias is None for layer in layers}) > 1:
        return False
    with torch.no_grad():
        weight = torch.cat([layer.weight for layer in layers])
        bias = None if attn.to_q.bias is None else torch.cat([layer.bias for layer in layers])
        for layer, part in zip(layers, weight.chunk(3)):
            layer.weight.data = part
        if bias is not None:
            for layer, part in zip(layers, bias.chunk(3)):
                layer.bias.data = part
    attn.register_buffer("qkv_weight", weight, persistent=False)
    attn.register_buffer("qkv_bias", bias, persistent=False)
    return True


def use_fused_conv_position(conv_pos: Any) -> bool:
    """ConvPositionEmbedding (padding zeroed; grouped Conv1d, Mish, padding zeroed; the same again) on CUDA as two
    calls of one Triton kernel each (grouped_conv.py: convolution, bias, Mish and mask in one pass, no layout
    changes). Only for a module on a CUDA device whose convolutions the kernel takes; the others keep theirs."""
    layers = list(conv_pos.conv1d)
    if [type(layer) for layer in layers] != [nn.Conv1d, nn.Mish, nn.Conv1d, nn.Mish]:
        return False
    convs = (layers[0], layers[2])
    if not all(fused_conv_fits(conv) for conv in convs):
        return False
    from spinbot.backends.tts.f5.grouped_conv import grouped_conv_mish, tap_major_weight

    weights = [tap_major_weight(conv) for conv in convs]  # once: the model does not change while loaded

    def forward(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        keep = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if mask is None else mask
        h = x.masked_fill(~keep[..., None], 0.0).contiguous()
        for conv, weight in zip(convs, weights):
            h = grouped_conv_mish(h, weight, conv.bias, keep)
        return h

    conv_pos.forward = forward
    return True


def fused_conv_fits(conv: nn.Conv1d) -> bool:
    """The kernel's case: CUDA, "same" padding, stride and dilation 1, a bias, as many channels out as in, and
    groups of a power of two >= 16 channels (its tiles are one group wide; tensor-core tiles start at 16)."""
    group = conv.in_channels // conv.groups
    return (
        conv.weight.is_cuda
        and conv.bias is not None
        and conv.in_channels == conv.out_channels
        and conv.padding[0] == conv.kernel_size[0] // 2
        and conv.stride[0] == 1
        and conv.dilation[0] == 1
        and group >= 16
        and group & (group - 1) == 0
    )
