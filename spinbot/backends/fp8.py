"""FP8 (e4m3) matmuls for a transformer's big linear layers: an option of the native backends, with its error
measured by their GPU benchmarks against the 16-bit model.

Hopper runs e4m3 matmuls at about twice the bfloat16 rate (`torch._scaled_mm`). Weights are quantized once, per
output row (each row's absmax maps to e4m3's largest value, 448); activations per token, when the layer runs
(the same absmax rule, computed on the fly; under torch.compile it fuses into the op before). The product comes back
in bfloat16 (the kernel's output with row-wise scales), then the bias is added and the layer's own dtype restored.
Each backend names the layers (InfiniteTalk: INFINITETALK_LINEARS; F5-TTS: F5_LINEARS). A tanh-GELU MLP of two
such layers becomes FP8FeedForward: its hidden activation is quantized in the same pass as the bias and GELU
(fp8_gelu.py). InfiniteTalk's layers accumulate with Hopper's fast FP8 accumulation (use_fp8's `fast_accum`).

Where `_scaled_mm` has no kernel (the CPU), the same quantized numbers are multiplied in float32: the tests check
the quantization, the device run checks the kernel.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

E4M3 = torch.float8_e4m3fn
E4M3_MAX = 448.0
# InfiniteTalk: every block's attention, cross-attention, audio-attention and FFN projections (the 40 x 10 large
# matrices, ~98% of the matmul FLOPs); embeddings, the timestep path and the head stay as they are.
INFINITETALK_LINEARS = (
    "self_attn.q",
    "self_attn.k",
    "self_attn.v",
    "self_attn.o",
    "cross_attn.q",
    "cross_attn.o",
    "audio_cross_attn.q_linear",
    "audio_cross_attn.proj",
    "ffn.0",
    "ffn.2",
)
# F5-TTS DiT blocks: attention and feed-forward (the adaptive norm's linear works on one time embedding a sample)
F5_LINEARS = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "ff.ff.0.0", "ff.ff.2")


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[rows, k] -> e4m3 values and float32 scales [rows, 1] with x ~ values * scales."""
    scale = x.abs().amax(dim=-1, keepdim=True).float().clamp_min(1e-12) / E4M3_MAX
    return (x.float() / scale).to(E4M3), scale


class FP8Linear(nn.Module):
    """nn.Linear with an e4m3 weight (row scales) and e4m3 activations (token scales)."""

    weight: torch.Tensor  # buffers, declared for the type checker
    weight_scale: torch.Tensor

    def __init__(self, linear: nn.Linear, fast_accum: bool = False):
        super().__init__()
        self.fast_accum = fast_accum  # the matmul's fast (fewer-bit) accumulation; see use_fp8
        weight, scale = quantize_rows(linear.weight.detach())
        self.register_buffer("weight", weight)  # [out, in]
        self.register_buffer("weight_scale", scale.T.contiguous())  # [1, out]
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)
        self.out_dtype = linear.weight.dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply_quantized(*quantize_rows(x.reshape(-1, x.shape[-1])), x.shape[:-1])

    def apply_quantized(self, values: torch.Tensor, scale: torch.Tensor, lead: torch.Size) -> torch.Tensor:
        """The layer on rows already in e4m3 (values [rows, in], scales [rows, 1]): [*lead, out] in its dtype."""
        out = self.product(values, scale)
        if self.bias is not None:
            out = out + self.bias
        return out.to(self.out_dtype).reshape(*lead, out.shape[-1])

    def product(self, values: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """e4m3 rows [rows, in] with their scales [rows, 1] times the weight: [rows, out], no bias."""
        if values.is_cuda:  # row-wise scales: the kernel returns bfloat16 (the bias add fuses under compile)
            return torch._scaled_mm(
                values,
                self.weight.T,
                scale_a=scale,
                scale_b=self.weight_scale,
                out_dtype=torch.bfloat16,
                use_fast_accum=self.fast_accum,
            )
        return F.linear(values.float() * scale, self.weight.float() * self.weight_scale.T)  # no e4m3 kernel: float32


class FP8FeedForward(nn.Sequential):
    """Sequential(Linear, GELU(tanh), Linear) with FP8Linear layers (same children, same state-dict keys), whose
    hidden activation goes from the first product to the second through one fused kernel (bias, GELU, row scales,
    e4m3; fp8_gelu.py) instead of a bfloat16 round trip and torch.compile's two-pass kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from spinbot.backends.fp8_gelu import gelu_quantize_rows

        first, second = cast(FP8Linear, self[0]), cast(FP8Linear, self[2])
        rows = x.reshape(-1, x.shape[-1])
        values, scale = gelu_quantize_rows(first.product(*quantize_rows(rows)), first.bias)
        return second.apply_quantized(values, scale, x.shape[:-1])


def is_tanh_gelu_mlp(module: nn.Module) -> bool:
    """Sequential(FP8Linear, GELU(approximate="tanh"), FP8Linear): what FP8FeedForward computes."""
    if type(module) is not nn.Sequential or len(module) != 3:
        return False
    first, act, second = module
    gelu = isinstance(act, nn.GELU) and act.approximate == "tanh"
    return gelu and isinstance(first, FP8Linear) and isinstance(second, FP8Linear)


def use_fp8(blocks: nn.ModuleList, paths: tuple[str, ...], fast_accum: bool = False) -> int:
    """Swap each block's linear layers at `paths` for FP8Linear in place, and each tanh-GELU MLP they then form for
    FP8FeedForward; returns how many linear layers were swapped. `fast_accum`: the matmuls accumulate with Hopper's
    fast, fewer-bit FP8 accumulation: InfiniteTalk's matmuls 7% faster, its forward error 5.5% / 6.1% against
    5.5% / 5.9% (random / structured weights), the decoded window's 6.8% / 7.2% against 6.8% / 7.3%
    (benchmarks/results/infinitetalk_speed_gpu_fused_gelu_errors.json)."""
    swapped = 0
    for block in blocks:
        parents = set()
        for path in paths:
            parent_path, _, name = path.rpartition(".")
            parent = block.get_submodule(parent_path)
            layer = getattr(parent, name)  # a Sequential's children too: their names are "0", "1", ...
            if isinstance(layer, nn.Linear):
                setattr(parent, name, FP8Linear(layer, fast_accum))
                swapped += 1
                parents.add(parent_path)
        for parent_path in sorted(parents):
            parent = block.get_submodule(parent_path)
            if parent_path and is_tanh_gelu_mlp(parent):
                owner_path, _, name = parent_path.rpartition(".")
                setattr(block.get_submodule(owner_path), name, FP8FeedForward(*cast(nn.Sequential, parent)))
    return swapped
