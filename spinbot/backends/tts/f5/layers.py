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
    if (x.is_cuda and type(project) is nn.Linear and project.bias is not None
            and getattr(act, "approximate", None) == "tanh"):
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


def use_channels_last_conv(conv_pos: Any) -> bool:
    """ConvPositionEmbedding (grouped Conv1d, Mish, grouped Conv1d, Mish; padding zeroed before each conv and
    after it) with its convolutions run as 2-D ones on [b, n, d] memory as it is (channels last): the package's
    permute to [b, d, n] makes cuDNN transpose to NHWC and back around every convolution, which cost as much as
    the convolutions themselves."""
    layers = list(conv_pos.conv1d)
    if not [type(layer) for layer in layers] == [nn.Conv1d, nn.Mish, nn.Conv1d, nn.Mish]:
        return False

    def forward(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        keep = None if mask is None else mask[..., None]
        h = x if keep is None else x.masked_fill(~keep, 0.0)
        for conv, act in ((layers[0], layers[1]), (layers[2], layers[3])):
            h = act(conv_channels_last(conv, h))
            h = h if keep is None else h.masked_fill(~keep, 0.0)
        return h

    conv_pos.forward = forward
    return True


def conv_channels_last(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """conv(x.permute(0, 2, 1)).permute(0, 2, 1) for x: [b, n, d], without moving x: a [b, d, 1, n] view of it is
    an NCHW tensor in channels-last memory, which cuDNN convolves as it lies."""
    image = x.transpose(1, 2)[:, :, None, :]
    out = F.conv2d(image, conv.weight[:, :, None, :], conv.bias, stride=(1, conv.stride[0]),
                   padding=(0, conv.padding[0]), dilation=(1, conv.dilation[0]), groups=conv.groups)
    return out[:, :, 0, :].transpose(1, 2)
