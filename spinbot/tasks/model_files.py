"""Which params name a model file, where in SPINBOT_MODELS_DIR the native backends look for it, and which files
are there: for the page's choices and for refusing, at submission, a file that a native backend would not find.

The folders are those of docs/models.md (ComfyUI's models/ layout); each native backend's loader resolves the same
paths. Listing never opens a file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from spinbot.errors import echo

MODEL_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
MAX_LISTED = 200  # a models folder holds tens of files; a huge one is not walked to its end


@dataclass(frozen=True)
class ModelSlot:
    folder: str  # under SPINBOT_MODELS_DIR
    # "file": a model file, named by its path under the folder; otherwise a folder that holds a file of this name
    # pattern (its path under the folder names it)
    holds: str = "file"


MODEL_SLOTS: dict[str, dict[str, ModelSlot]] = {
    "f5_to_tts": {"model": ModelSlot("F5-TTS", "model_*")},
    "infinite_talk": {
        "wan_video_model": ModelSlot("diffusion_models"),
        "infinitetalk_model": ModelSlot("diffusion_models"),
        "lora_model": ModelSlot("loras"),
        "vae_model": ModelSlot("vae"),
        "t5_text_encoder_model": ModelSlot("text_encoders"),
        "clip_vision_model": ModelSlot("clip_vision"),
        "wav2vec_model": ModelSlot("wav2vec2", "config.json"),
    },
    "upscale_video": {"model_name_0": ModelSlot("upscale_models"), "model_name_1": ModelSlot("facerestore_models")},
}


def model_folders(task: str) -> dict[str, str]:
    """param -> its folder under SPINBOT_MODELS_DIR, for the task's params model (TaskParams.MODEL_FOLDERS)."""
    return {param: slot.folder for param, slot in MODEL_SLOTS[task].items()}


def outside_folder(name: str) -> str | None:
    """Why a model-file param's value could name something outside its folder, or None. The value is joined to the
    folder as it is (the backends' loaders, `spinbot models`, the check at submission), and it comes from users
    (the API, --set): only a relative POSIX path whose every part is a name may pass. (Symlinks that the models
    folder's owner put inside are followed on purpose: a folder kept on another disk.)"""
    if not name:
        return None  # lora_model's "no LoRA"; for any other param a file that is simply not there
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "is absolute"
    if "\\" in name:
        return "has a backslash (use '/' between folders)"
    if re.search(r"[\x00-\x1f\x7f]", name):
        return "has a control character"
    parts = name.split("/")
    if ".." in parts:
        return "has a '..' part"
    if "" in parts or "." in parts:
        return "has an empty or '.' part"
    return None


def present_models(models_dir: Path, slot: ModelSlot) -> list[str]:
    """The names that the slot's param may take in this models folder, sorted."""
    root = Path(models_dir) / slot.folder
    if not root.is_dir():
        return []
    if slot.holds == "file":
        found = (p for p in root.rglob("*") if p.suffix.lower() in MODEL_SUFFIXES and p.is_file())
    else:
        found = (p.parent for p in root.rglob(slot.holds) if p.is_file())
    names = []
    for path in found:
        names.append(path.relative_to(root).as_posix())
        if len(names) >= MAX_LISTED:
            break
    return sorted(set(names))


def missing_model(models_dir: Path, task: str, param: str, name: str) -> str | None:
    """Why the model a param names is not in the models folder, or None when it is there."""
    slot = MODEL_SLOTS[task][param]
    why = outside_folder(name)
    if why:  # params validation refuses it first (TaskParams.MODEL_FOLDERS); a caller that skipped it learns nothing
        return f"{echo(name)} is not a relative path inside {slot.folder}/ of the models folder: it {why}"
    path = Path(models_dir) / slot.folder / name
    present = path.is_file() if slot.holds == "file" else any(path.glob(slot.holds))
    if present:
        return None
    return f"{echo(name)} is not in the models folder: looked for {path} (SPINBOT_MODELS_DIR={models_dir})"
