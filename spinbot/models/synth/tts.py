"""f5_to_tts's files with random weights, in the seed files' layouts: F5TTS_v1_Base's EMA checkpoint (every key
under `ema_model.`, float32, safetensors) with the package's vocab.txt, and Vocos (config.yaml + pytorch_model.bin).

Full size: the package's own configs/F5TTS_v1_Base.yaml describes the model (no config.yaml is written, as in the
real folder) and Vocos is charactr/vocos-mel-24khz's configuration. Tiny: a small DiT described by a config.yaml
beside the checkpoint (the loader reads it first) and a small Vocos.
"""

from __future__ import annotations

import shutil
from importlib.resources import files as package_files
from pathlib import Path

import torch
import yaml

from spinbot.models.synth.tensors import Entry, write_safetensors

MEL = {
    "target_sample_rate": 24000,
    "n_mel_channels": 100,
    "hop_length": 256,
    "win_length": 1024,
    "n_fft": 1024,
    "mel_spec_type": "vocos",
}
TINY_ARCH = {
    "dim": 32,
    "depth": 2,
    "heads": 2,
    "dim_head": 16,
    "ff_mult": 2,
    "text_dim": 16,
    "text_mask_padding": True,
    "qk_norm": None,
    "conv_layers": 1,
    "pe_attn_head": None,
    "attn_backend": "torch",
    "attn_mask_enabled": False,
    "checkpoint_activations": False,
}


def vocos_config(dim: int, intermediate: int, layers: int) -> dict:
    return {
        "feature_extractor": {
            "class_path": "vocos.feature_extractors.MelSpectrogramFeatures",
            "init_args": {"sample_rate": 24000, "n_fft": 1024, "hop_length": 256, "n_mels": 100, "padding": "center"},
        },
        "backbone": {
            "class_path": "vocos.models.VocosBackbone",
            "init_args": {"input_channels": 100, "dim": dim, "intermediate_dim": intermediate, "num_layers": layers},
        },
        "head": {
            "class_path": "vocos.heads.ISTFTHead",
            "init_args": {"dim": dim, "n_fft": 1024, "hop_length": 256, "padding": "center"},
        },
    }


def write_tts(checkpoint: Path, vocoder: Path, tiny: bool, seed: int, device: torch.device) -> None:
    """`checkpoint`: F5-TTS/<model>/model_<step>.safetensors; `vocoder`: F5-TTS/vocos-mel-24khz."""
    from spinbot.backends.tts.f5.loading import F5Files
    from spinbot.models.layouts.f5tts import cfm_layout, package_config

    folder = checkpoint.parent
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(str(package_files("f5_tts").joinpath("infer/examples/vocab.txt")), folder / "vocab.txt")
    config = package_config(folder.name)
    if tiny:
        config = folder / "config.yaml"
        config.write_text(
            yaml.safe_dump({"model": {"name": "tiny", "backbone": "DiT", "arch": TINY_ARCH, "mel_spec": MEL}})
        )
    layout = cfm_layout(F5Files(checkpoint, folder / "vocab.txt", config, vocoder))
    write_safetensors(
        checkpoint, [Entry(f"ema_model.{k}", v.shape, torch.float32) for k, v in layout.items()], seed, device
    )
    write_vocoder(vocoder, vocos_config(32, 64, 1) if tiny else vocos_config(512, 1536, 8), seed)


def write_vocoder(folder: Path, config: dict, seed: int) -> None:
    from vocos import Vocos

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    torch.manual_seed(seed)
    torch.save(Vocos.from_hparams(str(folder / "config.yaml")).state_dict(), folder / "pytorch_model.bin")
