"""f5_to_tts (native): the key layout each file the `model` param names must have (the files themselves, torch-free:
spinbot/models/needs.py; `files` here is that list, for layout_for(task).files).

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
from spinbot.models.headers import read_tree
from spinbot.models.needs import f5tts_files as files


def check(params: Any, models_dir: Path) -> list[Problem]:
    """Every missing file, then the CFM's layout (checkpoint + vocabulary present) and the vocoder's."""
    from spinbot.backends.tts.f5.loading import F5Files

    needed = files(params, models_dir)
    problems = [
        Problem(f.path, f"missing ({f.param}){f.why_missing()}") for f in needed if f.required and not f.present
    ]
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
