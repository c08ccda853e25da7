"""CLIP ViT-H/14 image features through transformers' `CLIPVisionModel`.

File format (`clip_vision_model`): one safetensors file in transformers' CLIP names, as ComfyUI's
`clip_vision_h.safetensors` holds them (`vision_model.embeddings.*`, `vision_model.pre_layrnorm.*`,
`vision_model.encoder.layers.N.{self_attn,mlp,layer_norm1,layer_norm2}.*`, `vision_model.post_layernorm.*`,
`visual_projection.weight`); the `vision_model.` prefix is optional and parts not used here (the projection, the
final norm, a text tower) are ignored. Width, depth, MLP width, patch and image size are read from the file; heads
are 80 wide, as in ViT-H/14 (1280 = 16 x 80), since no shape tells the head count.

Features, as the official `CLIPModel.visual(..., use_31_block=True)`: the image in [-1, 1] is resized to the
model's input size (bicubic, corners not aligned, no crop: the aspect is not kept), taken to [0, 1] and normalised
with OpenAI CLIP's mean and std; the output is the second-to-last block's hidden states (block 31 of 32 for
ViT-H), before the final norm: [1, 1 + patches, width] = [1, 257, 1280] at 224 px.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from torch import nn

from spinbot.backends.talk.infinitetalk.weights import load_checked, read_safetensors, strip_prefix, uninitialised

if TYPE_CHECKING:
    from transformers import CLIPVisionModel

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HEAD_DIM = 80


@dataclass(frozen=True)
class ClipVisionSize:
    """ViT-H/14 at 224 px by default; read from a file by `from_state`."""

    hidden_size: int = 1280
    intermediate_size: int = 5120
    num_layers: int = 32
    patch_size: int = 14
    image_size: int = 224

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> ClipVisionSize:
        patch = state.get("embeddings.patch_embedding.weight")
        positions = state.get("embeddings.position_embedding.weight")
        fc1 = state.get("encoder.layers.0.mlp.fc1.weight")
        layers = {int(k.split(".")[2]) for k in state if k.startswith("encoder.layers.")}
        if patch is None or positions is None:
            return cls()  # the load names the missing key
        grid = math.isqrt(positions.shape[0] - 1)
        return cls(
            hidden_size=patch.shape[0],
            intermediate_size=cls.intermediate_size if fc1 is None else fc1.shape[0],
            num_layers=max(layers) + 1 if layers else cls.num_layers,
            patch_size=patch.shape[-1],
            image_size=grid * patch.shape[-1],
        )

    def config(self):
        from transformers import CLIPVisionConfig

        return CLIPVisionConfig(
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.hidden_size // HEAD_DIM,
            patch_size=self.patch_size,
            image_size=self.image_size,
            hidden_act="gelu",
            layer_norm_eps=1e-5,
        )


class ClipImageEncoder(nn.Module):
    mean: torch.Tensor  # buffers, declared for the type checker
    std: torch.Tensor

    def __init__(self, model: CLIPVisionModel):
        super().__init__()
        self.model = model
        self.image_size = cast(int, model.config.image_size)  # CLIP's vision config holds one side
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image [1, 3, H, W] in [-1, 1] -> [1, tokens, width] float32."""
        size = (self.image_size, self.image_size)
        pixels = F.interpolate(image.float(), size=size, mode="bicubic", align_corners=False)
        pixels = (pixels * 0.5 + 0.5 - self.mean) / self.std
        dtype = next(self.model.parameters()).dtype
        out = self.model(pixel_values=pixels.to(dtype), output_hidden_states=True)
        return out.hidden_states[-2].float()


def load_clip_vision(
    path: Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> ClipImageEncoder:
    state = strip_prefix(read_safetensors(path, "CLIP vision"), ("clip_vision.",))
    state = {k.removeprefix("vision_model."): v for k, v in state.items()}
    from transformers import CLIPVisionModel

    with uninitialised(dtype):
        model = CLIPVisionModel(ClipVisionSize.from_state(state).config())
    if "vision_model.embeddings.class_embedding" in model.state_dict():  # transformers 4 nests the tower
        state = {f"vision_model.{k}": v for k, v in state.items()}
    load_checked(
        model,
        state,
        "CLIP vision",
        path,
        file_name=lambda k: k if k.startswith("vision_model.") else f"vision_model.{k}",
    )
    return ClipImageEncoder(model.eval().requires_grad_(False)).to(device)
