"""Speech -> InfiniteTalk's audio condition: wav2vec2 features per video frame, cut into per-window windows.

Model: chinese-wav2vec2-base (`wav2vec_model`), a transformers folder (config.json, the weights as
model.safetensors or pytorch_model.bin, preprocessor_config.json) loaded with transformers' `Wav2Vec2Model`.

Waveform normalization (zero mean, unit variance before the CNN): the feature extractor follows the folder's
preprocessor_config.json, as the official code's `Wav2Vec2FeatureExtractor.from_pretrained` does. The official
folder's file (TencentGameMate/chinese-wav2vec2-base, 160 bytes, sha256 c1707926...1c09) says do_normalize false,
and ComfyUI-WanVideoWrapper agrees: its folder loader reads that file and its single-file loader hard-codes
do_normalize False. A folder without the file gets those same values (OFFICIAL_PREPROCESSOR), never transformers'
own default (do_normalize True); the choice made is reported (`normalizes`).

Embedding (official `get_embedding` + its Wav2Vec2Model subclass): the 16 kHz speech goes through the CNN feature
encoder; the CNN features (50 per second) are linearly interpolated (align_corners) to one per video frame before
the transformer; the outputs of all 12 transformer layers are stacked: [frames, 12, 768]. Here the interpolation is
a forward hook on the stock model's feature encoder, so transformers' forward is used as it is.

Windows (official `generate_infinitetalk`): each video frame of a window takes the features of frames -2..+2 around
it, clamped at the track's start; past the track's end the track continues as its own reversed tail (the official
code appends the flipped last frames before clamping), so the last window's padding frames hear the speech's end
played backwards rather than silence.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spinbot.backends.talk.infinitetalk.transformer_checkpoint import CheckpointError
from spinbot.errors import first_line

if TYPE_CHECKING:
    from transformers import Wav2Vec2Model

SAMPLE_RATE = 16000
AUDIO_WINDOW = 5  # wav2vec2 frames around each video frame
UNUSED_KEYS = ("masked_spec_embed",)  # only used for masked pre-training
PRETRAINING_HEADS = [r"^quantizer\.", r"^project_hid\.", r"^project_q\."]  # Wav2Vec2ForPreTraining's, not the encoder's


# chinese-wav2vec2-base's preprocessor_config.json, as published (docs/infinitetalk-notes.md)
OFFICIAL_PREPROCESSOR = {
    "do_normalize": False,
    "feature_size": 1,
    "padding_side": "right",
    "padding_value": 0.0,
    "return_attention_mask": False,
    "sampling_rate": SAMPLE_RATE,
}


class AudioEncoder(nn.Module):
    def __init__(self, model: Wav2Vec2Model, feature_extractor):
        super().__init__()
        self.model = model
        self.feature_extractor = feature_extractor

    @property
    def normalizes(self) -> bool:
        """Whether the waveform is normalized to zero mean and unit variance before the model."""
        return bool(self.feature_extractor.do_normalize)

    @torch.no_grad()
    def forward(self, speech: np.ndarray, frames: int) -> torch.Tensor:
        """16 kHz mono float speech -> [frames, layers, width] float32, one row per video frame."""
        values = self.feature_extractor(speech, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_values
        param = next(self.model.parameters())

        def per_video_frame(module, inputs, features):  # [B, C, T] at 50 Hz -> [B, C, frames]
            return F.interpolate(features, size=frames, mode="linear", align_corners=True)

        hook = self.model.feature_extractor.register_forward_hook(per_video_frame)
        try:
            out = self.model(values.to(param.device, param.dtype), output_hidden_states=True)
        finally:
            hook.remove()
        return torch.stack(out.hidden_states[1:], dim=2)[0].float()  # [B, frames, layers, width] -> one track


def audio_windows(embedding: torch.Tensor, start: int, length: int, window: int = AUDIO_WINDOW) -> torch.Tensor:
    """[N, layers, width] per video frame -> [length, window, layers, width] for video frames [start, start+length)."""
    n = embedding.shape[0]
    offsets = torch.arange(window) - window // 2
    index = torch.arange(start, start + length)[:, None] + offsets[None, :]
    index = torch.where(index >= n, 2 * n - 1 - index, index)  # past the end: the reversed tail
    return embedding[index.clamp(0, n - 1)]


def load_audio_encoder(
    folder: Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> AudioEncoder:
    if not (folder / "config.json").is_file():
        raise CheckpointError(
            f"wav2vec2 model not found: {folder} needs config.json and the weights (a transformers folder)"
        )
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model
    from transformers.utils import logging as hf_logging

    # The official folder is a Wav2Vec2ForPreTraining checkpoint: its pre-training heads are not the encoder's, and
    # transformers printed them as an UNEXPECTED "LOAD REPORT" table (with a "Loading weights" bar) on every load.
    class Wav2Vec2Encoder(Wav2Vec2Model):
        _keys_to_ignore_on_load_unexpected = PRETRAINING_HEADS

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        loaded = Wav2Vec2Encoder.from_pretrained(
            str(folder), local_files_only=True, dtype=dtype, output_loading_info=True
        )
        # With output_loading_info the call returns (model, info); transformers' annotations say model alone.
        model, info = cast("tuple[Wav2Vec2Model, dict[str, list[str]]]", loaded)
    except OSError as err:  # no weights file, or an unreadable one
        raise CheckpointError(f"wav2vec2 model {folder.name}: {first_line(err)}") from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    missing = sorted(k for k in info["missing_keys"] if not k.endswith(UNUSED_KEYS))
    if missing:  # transformers would leave them randomly initialised, with a warning
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise CheckpointError(f"wav2vec2 checkpoint in {folder} is missing '{missing[0]}'{more}")
    has_preprocessor = (folder / "preprocessor_config.json").is_file()
    extractor = (
        Wav2Vec2FeatureExtractor.from_pretrained(str(folder), local_files_only=True)
        if has_preprocessor
        else Wav2Vec2FeatureExtractor(**OFFICIAL_PREPROCESSOR)
    )
    return AudioEncoder(model.eval().requires_grad_(False).to(device), extractor)
