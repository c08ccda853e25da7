"""upscale_video (native): the key layout the upscaler, CodeFormer and RetinaFace files must have (the files
themselves, torch-free: spinbot/models/needs.py; `files` here is that list, for layout_for(task).files).

The upscaler and CodeFormer load through spandrel, which detects the architecture from the keys and shapes: the
check runs spandrel's own detection and load on meta tensors made from the header (the wrappers `params_ema`,
`params`, `state_dict` and the `module.` prefix unwrapped by spandrel's canonicalisation, as the loader does), so it
accepts exactly what the loader accepts. RetinaFace is the backend's own module, built on the meta device.
"""

from __future__ import annotations

from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import torch

from spinbot.models.compare import Problem, compare_layout, guarded, module_layout, problems_from_error
from spinbot.models.headers import TensorSpec, as_meta, read_tree
from spinbot.models.needs import upscale_files as files


def check(params: Any, models_dir: Path) -> list[Problem]:
    needed = files(params, models_dir)
    problems = [
        Problem(f.path, f"missing ({f.param}){f.why_missing()}") for f in needed if f.required and not f.present
    ]
    for f, run in zip(needed, (upscaler_problems, restorer_problems, retinaface_problems)):
        if f.present:
            problems += guarded(f.path, partial(run, f.path))
    return problems


def spandrel_layout(path: Path) -> tuple[Any, list[Problem]]:
    """spandrel's descriptor for the file's architecture, built on the meta device, or the problems that stop it."""
    from spandrel.__helpers.canonicalize import canonicalize_state_dict

    from spinbot.backends.upscale.model_loading import import_spandrel

    spandrel = import_spandrel()
    state = canonicalize_state_dict(read_tree(path))
    header = {k: v for k, v in state.items() if isinstance(v, TensorSpec)}
    try:
        with torch.device("meta"):
            return spandrel.MAIN_REGISTRY.load(as_meta(header)), []
    except spandrel.UnsupportedModelError:
        return None, [Problem(path, "spandrel does not recognise this checkpoint's architecture")]
    except Exception as err:  # noqa: BLE001 - torch's load_state_dict error: every missing/unexpected/misshapen key
        return None, problems_from_error(path, err)


def upscaler_problems(path: Path) -> list[Problem]:
    descriptor, problems = spandrel_layout(path)
    if descriptor is not None and (
        descriptor.input_channels != 3 or descriptor.output_channels != 3 or descriptor.scale < 1
    ):
        problems.append(Problem(path, f"not an RGB upscaler ({descriptor.architecture.name})"))
    return problems


def upscaler_scale(path: Path) -> int | None:
    """The factor of the upscaler in this file, from its header alone (spandrel's detection on meta tensors; no
    weights read unless the .pth is in torch's legacy format: spinbot.models.headers), or None where it does not
    read (missing, not a checkpoint, an architecture spandrel does not know): the task that loads it says what is
    wrong. 0.17 s for a 64 MB RealESRGAN_x4plus-sized safetensors, 0.24 s for its .pth, on one CPU core; cached by
    the file's size and modification time, so a file replaced is read again."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return _scale_of(path, stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=64)
def _scale_of(path: Path, size: int, mtime_ns: int) -> int | None:
    # size and mtime_ns are there for the cache key only
    try:
        descriptor, _ = spandrel_layout(path)
    except Exception:  # noqa: BLE001 - an unreadable file is the task's to refuse, in its own line, when it loads it
        return None
    if descriptor is None or descriptor.input_channels != 3 or descriptor.output_channels != 3:
        return None
    return int(descriptor.scale) if descriptor.scale >= 1 else None


def restorer_problems(path: Path) -> list[Problem]:
    descriptor, problems = spandrel_layout(path)
    if descriptor is not None and descriptor.architecture.id != "CodeFormer":
        problems.append(
            Problem(path, f"a {descriptor.architecture.name} model; the native backend restores faces with CodeFormer")
        )
    return problems


def retinaface_layout() -> dict[str, TensorSpec]:
    from spinbot.backends.upscale.retinaface import RetinaFace

    with torch.device("meta"):
        return module_layout(RetinaFace())


def retinaface_problems(path: Path) -> list[Problem]:
    """As load_retinaface reads it: a `state_dict` wrapper unwrapped, DataParallel's `module.` prefix dropped."""
    tree = read_tree(path)
    if isinstance(tree.get("state_dict"), dict):
        tree = tree["state_dict"]
    found = {k.removeprefix("module."): v for k, v in tree.items() if isinstance(v, TensorSpec)}
    prefixed = any(k.startswith("module.") for k in tree)
    return compare_layout(path, retinaface_layout(), found, file_name=lambda k: f"module.{k}" if prefixed else k)
