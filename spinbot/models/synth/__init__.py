"""A complete SPINBOT_MODELS_DIR with random weights, in the real layouts, names and dtypes of every seed default.

    from spinbot.models.synth import write_model_folder
    write_model_folder(Path("/data/models"), scale="full", device="cuda")   # the GPU end-to-end run: 54 GB
    write_model_folder(tmp_path, scale="tiny")                              # CI: small configs the backends accept

or `python -m spinbot.models.synth ROOT --scale full --device cuda`. Not used by the backends: a tool for tests,
benchmarks and the GPU end-to-end run, kept in the package so that those import it the same way everywhere.

"full" writes the real sizes (Wan 2.1 I2V 14B, the InfiniteTalk adapter, the rank-64 LoRA, UMT5-XXL's encoder,
CLIP ViT-H, the Wan VAE, chinese-wav2vec2-base, F5TTS_v1_Base + Vocos, RealESRGAN x2, CodeFormer, RetinaFace);
the big safetensors files are generated tensor by tensor on `device` and streamed to disk, so host memory stays at
about one tensor (the largest, UMT5's 256384 x 4096 embedding, is 2 GB in bfloat16). Each file's dtypes follow the
real file's (tensors.py, talk.py, tts.py, upscale.py say which). "tiny" writes the same files and keys with small
configurations, which the backends read the same way (they infer sizes from the files).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from spinbot.models.needs import needed_files

SCALES = ("tiny", "full")
TASKS = ("f5_to_tts", "infinite_talk", "upscale_video")


def write_model_folder(
    root: Path,
    scale: str = "tiny",
    device: str | torch.device = "cpu",
    seed: int = 0,
    tasks: tuple[str, ...] = TASKS,
    log=print,
) -> dict[Path, int]:
    """Write every file the native backends' default params name under `root`; returns each file written (relative
    to `root`) with its size in bytes."""
    from spinbot.models.synth.talk import FULL, TINY, write_talk
    from spinbot.models.synth.tts import write_tts
    from spinbot.models.synth.upscale import write_upscale

    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    device, tiny = torch.device(device), scale == "tiny"
    root.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        start = time.monotonic()
        paths = default_paths(task, root)
        if task == "f5_to_tts":
            write_tts(paths["model"], paths["vocoder"], tiny, seed, device)
        elif task == "infinite_talk":
            write_talk(paths, TINY if tiny else FULL, seed, device)
        else:
            write_upscale(paths, tiny, seed)
        log(f"{task}: {scale} files written in {time.monotonic() - start:.0f} s")
    return {p.relative_to(root): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}


def default_paths(task: str, root: Path) -> dict[str, Path]:
    """param -> where the backend looks for it, from the backend's own file list (defaults of its params)."""
    from spinbot.tasks.catalog import load_task

    params = load_task(task).params_model()
    paths: dict[str, Path] = {}
    for f in needed_files(task, params, root):
        param = f.param.split(" ")[0]
        if param == "wav2vec_model" or param == "vocoder":
            paths[param] = f.path.parent
        else:
            paths.setdefault(param, f.path)
    return paths
