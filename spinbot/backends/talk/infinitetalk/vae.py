"""The Wan 2.1 VAE through diffusers' `AutoencoderKLWan`, loaded from a file under the original Wan key names.

File format: one safetensors file with the official Wan 2.1 VAE keys (`encoder.conv1.*`,
`encoder.downsamples.N.residual.K.*`, `encoder.middle.*`, `encoder.head.*`, `conv1.*`, `conv2.*`, `decoder.*`), as
`Wan2.1_VAE.pth` holds them and Kijai's `Wan2_1_VAE_bf16.safetensors` repackages them (ComfyUI-WanVideoWrapper
accepts them with or without a `model.` prefix, so does this loader); diffusers' single-file
converter (`convert_wan_vae_to_diffusers`) maps them to diffusers' names. A file already in diffusers' names
(`encoder.conv_in.*`) loads as it is. The converter knows one layout (4 levels, 2 residual blocks per level): widths
(`base_dim`, from `encoder.conv1`) and the latent size (`z_dim`, from `conv2`) are read from the file, the rest is
Wan 2.1's.

Latents are normalised as the official `WanVAE` does: (mu - mean) / std per channel with Wan 2.1's constants
(diffusers keeps them in the config but leaves the scaling to its pipelines), and encoding takes the mean, no
sampling. Video is [B, 3, T, H, W] in [-1, 1]; T = 1 + 4k frames map to 1 + k latent frames, 8x smaller.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from spinbot.backends.talk.infinitetalk.weights import load_checked, read_safetensors, strip_prefix, uninitialised

TEMPORAL_STRIDE = 4
SPATIAL_STRIDE = 8
RESIDUAL_PARTS = {
    "norm1.gamma": "residual.0.gamma",
    "conv1.": "residual.2.",
    "norm2.gamma": "residual.3.gamma",
    "conv2.": "residual.6.",
    "conv_shortcut.": "shortcut.",
}


@dataclass(frozen=True)
class WanVAEConfig:
    base_dim: int = 96
    z_dim: int = 16

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> WanVAEConfig:
        """Widths from the file (diffusers' names); a missing key keeps the default and is reported by the load."""
        conv_in, post_quant = state.get("encoder.conv_in.weight"), state.get("post_quant_conv.weight")
        return cls(
            base_dim=cls.base_dim if conv_in is None else conv_in.shape[0],
            z_dim=cls.z_dim if post_quant is None else post_quant.shape[0],
        )


class WanVAE(nn.Module):
    """AutoencoderKLWan with the official latent normalisation."""

    mean: torch.Tensor  # buffers, declared for the type checker
    std: torch.Tensor

    def __init__(self, autoencoder: Any):  # diffusers' AutoencoderKLWan (its config and outputs are untyped)
        super().__init__()
        self.autoencoder = autoencoder
        self.memory_format = torch.contiguous_format
        config = autoencoder.config
        self.register_buffer("mean", torch.tensor(config.latents_mean).view(1, -1, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.latents_std).view(1, -1, 1, 1, 1), persistent=False)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.autoencoder.parameters()).dtype

    def speed_up(self, channels_last: bool = True, compile_norms: bool = True, backend: str = "inductor") -> None:
        """For the GPU: convolutions in channels-last layout (cuDNN's 3-D convolutions run on the tensor cores without
        transposing every input), and the RMS norms (a float32 normalize, a scale and a bias: five elementwise
        kernels each) compiled into one kernel each, shapes left dynamic so the many resolutions and chunk lengths
        of a decode share their graphs. Timed per window in benchmarks/infinitetalk_speed_gpu.py. `backend`: the
        torch.compile backend (tests use "eager" to check the graphs without building kernels)."""
        if channels_last:
            self.memory_format = torch.channels_last_3d
            for module in self.autoencoder.modules():
                if isinstance(module, (nn.Conv3d, nn.Conv2d)):
                    layout = torch.channels_last_3d if isinstance(module, nn.Conv3d) else torch.channels_last
                    module.weight.data = module.weight.data.contiguous(memory_format=layout)
        if compile_norms:
            compile_rms_norms(self.autoencoder, backend)

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """[B, 3, 1 + 4k, H, W] in [-1, 1] -> normalised latents [B, z, 1 + k, H / 8, W / 8], float32."""
        video = video.to(self.dtype).contiguous(memory_format=self.memory_format)
        mu = self.autoencoder.encode(video).latent_dist.mode().float()
        return (mu - self.mean) / self.std

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents [B, z, 1 + k, h, w] -> video [B, 3, 1 + 4k, 8h, 8w] in [-1, 1], float32."""
        z = (latents.float() * self.std + self.mean).to(self.dtype).contiguous(memory_format=self.memory_format)
        return self.autoencoder.decode(z).sample.float().clamp_(-1, 1)


def wan_name(key: str) -> str:
    """diffusers' AutoencoderKLWan name -> the official Wan name: the inverse of diffusers'
    convert_wan_vae_to_diffusers for Wan 2.1's layout (3 residual blocks and 1 upsampler per decoder level)."""
    for diffusers, wan in (("quant_conv.", "conv1."), ("post_quant_conv.", "conv2.")):
        if key.startswith(diffusers):
            return wan + key[len(diffusers) :]
    side, rest = key.split(".", 1)
    for diffusers, wan in (("conv_in.", "conv1."), ("norm_out.", "head.0."), ("conv_out.", "head.2.")):
        if rest.startswith(diffusers):
            return f"{side}.{wan}{rest[len(diffusers) :]}"
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", rest):
        return f"{side}.middle.{2 * int(m[1])}.{_residual_part(m[2])}"
    if m := re.match(r"mid_block\.attentions\.0\.(.*)", rest):
        return f"{side}.middle.1.{m[1]}"
    if m := re.match(r"down_blocks\.(\d+)\.(.*)", rest):
        return f"{side}.downsamples.{m[1]}.{_residual_part(m[2])}"
    if m := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", rest):
        return f"{side}.upsamples.{4 * int(m[1]) + int(m[2])}.{_residual_part(m[3])}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.(.*)", rest):
        return f"{side}.upsamples.{4 * int(m[1]) + 3}.{m[2]}"
    return key


def _residual_part(name: str) -> str:
    for diffusers, wan in RESIDUAL_PARTS.items():
        if name.startswith(diffusers):
            return wan + name[len(diffusers) :]
    return name  # resample / time_conv keep their names


def to_diffusers_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official Wan names -> diffusers' (a file already in diffusers' names passes through)."""
    if "encoder.conv_in.weight" in state:
        return state
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    return convert_wan_vae_to_diffusers(state)


def load_vae(
    path: Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", fast: bool = False
) -> WanVAE:
    original = strip_prefix(read_safetensors(path, "Wan VAE"), ("model.", "vae.", "first_stage_model."))
    state = to_diffusers_names(original)
    config = WanVAEConfig.from_state(state)
    from diffusers import AutoencoderKLWan

    with uninitialised(dtype):
        autoencoder = AutoencoderKLWan(base_dim=config.base_dim, z_dim=config.z_dim)
    load_checked(autoencoder, state, "Wan VAE", path, file_name=lambda k: k if state is original else wan_name(k))
    vae = WanVAE(autoencoder.eval().requires_grad_(False)).to(device)
    if fast:
        vae.speed_up()
    return vae


RMS_NORM_GRAPHS = 64  # graphs the compiled norm may keep (see _compiled_forward)


def rms_norm(x: torch.Tensor, gamma: torch.Tensor, bias: Any, scale: float, channel_first: bool) -> torch.Tensor:
    """diffusers' WanRMS_norm.forward as a function of its tensors: normalise over the channels (in float32 for
    half-precision inputs), times sqrt(channels) and the gain, plus the bias."""
    low_precision = x.dtype in (torch.float16, torch.bfloat16)
    normalized = F.normalize(x.float() if low_precision else x, dim=1 if channel_first else -1).to(x.dtype)
    return normalized * scale * gamma + bias


def compile_rms_norms(autoencoder: nn.Module, backend: str = "inductor") -> None:
    """Every WanRMS_norm of the VAE through one compiled function. Compiling each module (module.compile) gave a
    graph per module instance, since torch.compile guards on the module it traces: the VAE's few dozen norms passed
    torch._dynamo's recompile limit (8) in the first window (seen on the H200, benchmarks/results/
    native_e2e_head_worker.log) and the rest ran uncompiled. As a function of the tensors, the norms share a few
    graphs (by layout and bias), their sizes left dynamic."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanRMS_norm

    compiled = torch.compile(rms_norm, dynamic=True, backend=backend)
    for module in autoencoder.modules():
        if isinstance(module, WanRMS_norm):
            module.forward = functools.partial(_compiled_forward, module, compiled)


def _compiled_forward(module: Any, compiled: Any, x: torch.Tensor) -> torch.Tensor:
    # detached: torch.compile keeps a Parameter's sizes static (force_parameter_static_shapes), which would tie the
    # graph to one channel count through the broadcast with x
    bias = module.bias.detach() if isinstance(module.bias, torch.Tensor) else module.bias
    # Still a graph per input rank, memory layout and size-1 dimension (8 for a tiny VAE's three clip lengths in
    # channels-last): more than torch's default limit of 8 in a real decode, past which the calls run uncompiled.
    with torch._dynamo.config.patch(recompile_limit=RMS_NORM_GRAPHS):
        return compiled(x, module.gamma.detach(), bias, module.scale, module.channel_first)
