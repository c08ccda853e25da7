"""The files each native backend needs from SPINBOT_MODELS_DIR, by name and place only: `needed_files(task, params,
models_dir)`, present or not, with their sources and sizes.

Nothing here imports torch or a backend's packages (the names come from the backends' torch-free `files.py`
modules), so `spinbot models list`, `spinbot models pull` and a presence check run on the CPU install (`make demo`,
no gpu extra). The key layouts that need torch are in `layouts/`, one module per task, built on these lists.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from spinbot.backends.talk.infinitetalk.files import FOLDERS, TOKENIZER_FILE, WAV2VEC_WEIGHTS
from spinbot.backends.tts.f5.files import FOLDER as F5_FOLDER
from spinbot.backends.tts.f5.files import VOCODER, latest_checkpoint
from spinbot.backends.upscale.files import DETECTOR_FILES
from spinbot.models import manifest
from spinbot.models.files import ModelFile, model_file

# ---- f5_to_tts ----------------------------------------------------------------------------------------------------


def f5tts_files(params: Any, models_dir: Path) -> list[ModelFile]:
    task, model = "f5_to_tts", params.model
    checkpoint = _f5_checkpoint_name(models_dir / F5_FOLDER / model, model)
    return [
        model_file(task, "model", models_dir, F5_FOLDER, model, checkpoint),
        model_file(task, "model (vocabulary)", models_dir, F5_FOLDER, model, "vocab.txt"),
        model_file(
            task,
            "model (config)",
            models_dir,
            F5_FOLDER,
            model,
            "config.yaml",
            required=False,
            note=f"optional: f5-tts's own configs/{model}.yaml is used without it",
        ),
        model_file(task, "vocoder", models_dir, F5_FOLDER, VOCODER, "config.yaml"),
        model_file(task, "vocoder", models_dir, F5_FOLDER, VOCODER, "pytorch_model.bin"),
    ]


def _f5_checkpoint_name(folder: Path, model: str) -> str:
    """The checkpoint the loader would pick (the highest model_<step>), else the one the manifest names."""
    found = latest_checkpoint(folder)
    if found is not None:
        return found.name
    known = [k.rsplit("/", 1)[1] for k in manifest.SOURCES if k.startswith(f"{F5_FOLDER}/{model}/model_")]
    return known[0] if known else "model_<step>.safetensors"


# ---- infinite_talk ------------------------------------------------------------------------------------------------


def infinitetalk_files(params: Any, models_dir: Path) -> list[ModelFile]:
    task = "infinite_talk"
    out = []
    for param, (folder, _) in FOLDERS.items():
        name = getattr(params, param)
        if param == "lora_model" and not name:
            continue
        if param == "wav2vec_model":
            out += _wav2vec_files(task, models_dir, folder, name)
            continue
        out.append(model_file(task, param, models_dir, folder, name))
        if param == "t5_text_encoder_model":
            tokenizer = model_file(
                task, f"{param} (tokenizer)", models_dir, folder, str(Path(name).parent), TOKENIZER_FILE
            )
            out.append(tokenizer)
    return out


def _wav2vec_files(task: str, models_dir: Path, folder: str, name: str) -> list[ModelFile]:
    base = (folder, name)
    weights = next((w for w in WAV2VEC_WEIGHTS if (models_dir.joinpath(*base) / w).is_file()), WAV2VEC_WEIGHTS[1])
    return [
        model_file(task, "wav2vec_model", models_dir, *base, "config.json"),
        model_file(task, "wav2vec_model", models_dir, *base, weights),
        model_file(
            task,
            "wav2vec_model",
            models_dir,
            *base,
            "preprocessor_config.json",
            required=False,
            note="optional: without it the feature extractor's defaults are used",
        ),
    ]


# ---- upscale_video ------------------------------------------------------------------------------------------------


def upscale_files(params: Any, models_dir: Path) -> list[ModelFile]:
    task = "upscale_video"
    detector = DETECTOR_FILES.get(params.facedetection, f"<no native detector '{params.facedetection}'>")
    return [
        model_file(task, "model_name_0", models_dir, "upscale_models", params.model_name_0),
        model_file(task, "model_name_1", models_dir, "facerestore_models", params.model_name_1),
        model_file(task, "facedetection", models_dir, "facedetection", detector),
    ]


NEEDS: dict[str, Callable[[Any, Path], list[ModelFile]]] = {
    "f5_to_tts": f5tts_files,
    "infinite_talk": infinitetalk_files,
    "upscale_video": upscale_files,
}


def needed_files(task: str, params: Any, models_dir: Path) -> list[ModelFile]:
    """Every file the task's native backend reads for these params: where it is looked up, whether it is there
    (`.present`, `.size`), where it comes from (`.source`); required or optional. Names and paths only."""
    return NEEDS[task](params, models_dir)
