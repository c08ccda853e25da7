"""The native infinite_talk backend's tiny models and the fixtures that run it (shared by
tests/unit/test_infinitetalk_backend.py, test_infinitetalk_loading.py and test_infinitetalk_group.py).

Every model is the real architecture (same module classes, same key names) at the package's tiny sizes
(spinbot/models/synth/talk.py's TINY) with random weights from the modules' own initialisation, saved in the official
file formats under the default names of InfiniteTalkParams in a temporary SPINBOT_MODELS_DIR: the transformer split
into the Wan file and the InfiniteTalk file (official names), a lightx2v-format LoRA, the Wan VAE (original Wan
names), UMT5 (Wan's names) with the package's tiny tokenizer.json, CLIP vision (ComfyUI / transformers names) and a
wav2vec2 transformers folder. Not the package's synthetic values (synth/tensors.py): on the frames those give,
x264 beside the live output's encoders now and then writes a window's chunk with other bytes, and the resume test
compares decoded frames bit for bit. Import it after the test module's importorskip of torch, diffusers and
transformers.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from spinbot.backends.talk.infinitetalk.audio import OFFICIAL_PREPROCESSOR
from spinbot.backends.talk.infinitetalk.files import TOKENIZER_FILE
from spinbot.backends.talk.infinitetalk.model import InfiniteTalkModel
from spinbot.backends.talk.infinitetalk.t5 import hf_to_wan
from spinbot.backends.talk.infinitetalk.vae import wan_name
from spinbot.media.audio import write_wav
from spinbot.models.layouts.infinitetalk import ADAPTER_KEYS
from spinbot.models.synth.talk import TINY as TINY_SIZES
from spinbot.models.synth.talk import write_tokenizer
from spinbot.tasks.talk import InfiniteTalkParams
from tests.support.random_weights import randomized

DEFAULTS = InfiniteTalkParams()
TINY = TINY_SIZES.transformer
LORA_TARGETS = ("blocks.0.self_attn.q", "blocks.1.ffn.0")
RUN = {"frame_window_size": 13, "motion_frame": 5, "sampling_steps": 2, "audio_cfg_scale": 2.0}
TINY_BUCKETS = {"0.50": (32, 64), "1.00": (64, 64), "2.00": (64, 32)}  # (height, width), as the official tables


# ---- tiny models in the official formats -------------------------------------------------------------------------


def random_transformer(seed: int = 0) -> InfiniteTalkModel:
    return randomized(lambda: InfiniteTalkModel(TINY), seed)


def lora_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    state = {}
    for module, (out_dim, in_dim) in zip(LORA_TARGETS, ((256, 256), (64, 256))):
        state[f"diffusion_model.{module}.lora_down.weight"] = torch.randn(4, in_dim, generator=g) * 0.1
        state[f"diffusion_model.{module}.lora_up.weight"] = torch.randn(out_dim, 4, generator=g) * 0.1
        state[f"diffusion_model.{module}.alpha"] = torch.tensor(2.0)
    state["diffusion_model.blocks.0.cross_attn.o.diff_b"] = torch.randn(256, generator=g) * 0.1
    state["diffusion_model.blocks.1.diff_m"] = torch.randn(1, 6, 256, generator=g) * 0.1
    return state


def write_transformer(models: Path, model: InfiniteTalkModel) -> None:
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    talk = {k: v for k, v in state.items() if any(part in k for part in ADAPTER_KEYS)}
    save(models / "diffusion_models" / DEFAULTS.wan_video_model, {k: v for k, v in state.items() if k not in talk})
    save(models / "diffusion_models" / DEFAULTS.infinitetalk_model, {k: v.half() for k, v in talk.items()})
    save(models / "loras" / DEFAULTS.lora_model, lora_tensors())


def write_vae(models: Path) -> None:
    from diffusers import AutoencoderKLWan

    torch.manual_seed(2)
    vae = AutoencoderKLWan(base_dim=TINY_SIZES.vae_base_dim, z_dim=16)
    save(models / "vae" / DEFAULTS.vae_model, {wan_name(k): v.bfloat16() for k, v in vae.state_dict().items()})


def write_umt5(models: Path) -> None:
    from transformers import UMT5EncoderModel

    torch.manual_seed(3)
    state = UMT5EncoderModel(TINY_SIZES.umt5.config()).state_dict()
    path = models / "text_encoders" / DEFAULTS.t5_text_encoder_model
    save(path, {hf_to_wan(k): v.bfloat16() for k, v in state.items() if k != "encoder.embed_tokens.weight"})
    write_tokenizer(path.parent / TOKENIZER_FILE, TINY_SIZES.umt5.vocab_size)


def write_clip(models: Path) -> None:
    from transformers import CLIPVisionModel

    torch.manual_seed(4)
    state = {
        f"vision_model.{k.removeprefix('vision_model.')}": v.bfloat16()
        for k, v in CLIPVisionModel(TINY_SIZES.clip.config()).state_dict().items()
    }
    state["visual_projection.weight"] = torch.zeros(1024, 1280, dtype=torch.bfloat16)  # in the file, unused
    save(models / "clip_vision" / DEFAULTS.clip_vision_model, state)


def write_wav2vec(models: Path) -> None:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(5)
    folder = models / "wav2vec2" / DEFAULTS.wav2vec_model
    Wav2Vec2Model(Wav2Vec2Config(**TINY_SIZES.wav2vec)).half().save_pretrained(str(folder))
    Wav2Vec2FeatureExtractor(**OFFICIAL_PREPROCESSOR).save_pretrained(str(folder))


def save(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    models = tmp_path_factory.mktemp("models")
    write_transformer(models, random_transformer())
    write_vae(models)
    write_umt5(models)
    write_clip(models)
    write_wav2vec(models)
    return models


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    """A 64x64 portrait and 1.2 s of voiced sound between short silences."""
    folder = tmp_path_factory.mktemp("inputs")
    yy, xx = np.mgrid[0:64, 0:64]
    image = np.stack([xx * 4, yy * 4, 255 - xx * 2], axis=-1).astype(np.uint8)
    cv2.circle(image, (32, 30), 14, (220, 180, 150), -1)
    cv2.imwrite(str(folder / "portrait.png"), image[..., ::-1])
    sr = 16000
    t = np.arange(int(1.2 * sr)) / sr
    voice = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 6)) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    audio = np.concatenate([np.zeros(3200), 0.2 * voice, np.zeros(3200)]).astype(np.float32)
    return folder / "portrait.png", write_wav(folder / "speech.wav", audio, sr)


@pytest.fixture
def native(models_dir: Path, use_settings, spinbot_env, monkeypatch) -> Path:
    from spinbot.backends.talk.infinitetalk.sizing import BUCKETS

    use_settings(models_dir=models_dir, talk_backend="native")
    monkeypatch.setitem(BUCKETS, "480p", TINY_BUCKETS)  # the official rule at a size the CPU renders in seconds
    return models_dir
