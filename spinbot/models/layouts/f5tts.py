"""f5_to_tts (native): the files the `model` param names and the key layout each must have.

The CFM is built by the backend's own code (loading.new_cfm: the package's classes from the config and the
vocabulary) on the meta device, and the checkpoint's header goes through the loader's own unwrapping
(loading.ema_weights); Vocos is built from its config.yaml (on the CPU, it is small). Both loaders load strictly, so
missing and unexpected keys are both problems.
"""

from __future__ import annotations

from importlib.resources import files as package_files
from pathlib import Path
from typing import Any

import torch

from spinbot.models.compare import Problem, compare_layout, guarded, module_layout, unreadable_safetensors
from spinbot.models.files import ModelFile, model_file
from spinbot.models.headers import read_tree
from spinbot.models.manifest import SOURCES

TASK = "f5_to_tts"
FOLDER, VOCODER = "F5-TTS", "vocos-mel-24khz"


def files(params: Any, models_dir: Path) -> list[ModelFile]:
    folder = models_dir / FOLDER / params.model
    return [
        model_file(TASK, "model", models_dir, FOLDER, params.model, _checkpoint_name(folder, params.model)),
        model_file(TASK, "model (vocabulary)", models_dir, FOLDER, params.model, "vocab.txt"),
        model_file(
            TASK,
            "model (config)",
            models_dir,
            FOLDER,
            params.model,
            "config.yaml",
            required=False,
            note=f"optional: f5-tts's own configs/{params.model}.yaml is used without it",
        ),
        model_file(TASK, "vocoder", models_dir, FOLDER, VOCODER, "config.yaml"),
        model_file(TASK, "vocoder", models_dir, FOLDER, VOCODER, "pytorch_model.bin"),
    ]


def _checkpoint_name(folder: Path, model: str) -> str:
    """The checkpoint the loader would pick (the highest model_<step>), else the one the manifest names."""
    from spinbot.backends.tts.f5.loading import find_checkpoint

    try:
        return find_checkpoint(folder, folder).name
    except Exception:  # noqa: BLE001 - BackendUnavailable: none there yet
        known = [k.rsplit("/", 1)[1] for k in SOURCES if k.startswith(f"{FOLDER}/{model}/model_")]
        return known[0] if known else "model_<step>.safetensors"


def check(params: Any, models_dir: Path) -> list[Problem]:
    """Every missing file, then the CFM's layout (checkpoint + vocabulary present) and the vocoder's."""
    from spinbot.backends.tts.f5.loading import F5Files

    needed = files(params, models_dir)
    problems = [Problem(f.path, f"missing ({f.param})") for f in needed if f.required and not f.present]
    missing = {p.path for p in problems}
    checkpoint, vocab, config, vocoder_config, vocoder_weights = (f.path for f in needed)
    if not {checkpoint, vocab} & missing:
        config = config if config.is_file() else package_config(params.model)
        if not config.is_file():
            problems.append(
                Problem(
                    checkpoint.parent / "config.yaml",
                    f"missing, and f5-tts has no built-in config for model '{params.model}'",
                )
            )
        else:
            found = F5Files(checkpoint, vocab, config, vocoder_config.parent)
            problems += guarded(checkpoint, lambda: cfm_problems(found))
    else:
        problems += unreadable_safetensors([checkpoint] if checkpoint not in missing else [])
    if not {vocoder_config, vocoder_weights} & missing:
        problems += guarded(vocoder_weights, lambda: vocoder_problems(vocoder_config.parent))
    return problems


def cfm_layout(found) -> dict:
    """The CFM's keys and shapes as the config and vocabulary describe it."""
    from spinbot.backends.tts.f5.loading import new_cfm

    with torch.device("meta"):
        cfm, _ = new_cfm(found)
    return module_layout(cfm)


def cfm_problems(found) -> list[Problem]:
    from spinbot.backends.tts.f5.loading import ema_weights
    from spinbot.errors import BackendUnavailable

    try:
        expected = cfm_layout(found)
    except BackendUnavailable as err:
        return [Problem(found.config, str(err))]
    state = ema_weights(read_tree(found.checkpoint))
    return compare_layout(found.checkpoint, expected, state, file_name=lambda k: f"ema_model.{k}")


def vocoder_problems(folder: Path) -> list[Problem]:
    from spinbot.backends.tts.f5.loading import vocos_from_config
    from spinbot.errors import BackendUnavailable

    # Built on the CPU (13M parameters): torchaudio computes its mel filter bank at construction, which the meta
    # device cannot.
    try:
        expected = module_layout(vocos_from_config(folder / "config.yaml"))
    except BackendUnavailable as err:
        return [
            Problem(folder / "config.yaml", str(err).removeprefix(f"f5_to_tts native: {folder / 'config.yaml'} is "))
        ]
    return compare_layout(folder / "pytorch_model.bin", expected, read_tree(folder / "pytorch_model.bin"))


def package_config(model: str) -> Path:
    return Path(str(package_files("f5_tts").joinpath(f"configs/{model}.yaml")))
