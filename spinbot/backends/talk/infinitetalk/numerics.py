"""What a native render's numbers come from besides its params and inputs, for the window checkpoints' fingerprint
(spinbot.tasks.talk_resume): a window rendered in FP8 or with 8-bit attention, by another VAE dtype, another model
file, another GPU layout or another kind of GPU differs from one rendered otherwise, and joined to it the video
would jump at the seam. The GPU's kind counts because the kernels are chosen per GPU (cuDNN's FP8 attention on
Hopper, the int8 kernel or SDPA elsewhere; cuBLAS's and cuDNN's plans by architecture and SM count), so a render
resumed on an H100 by windows an A100 made, or the other way, starts again at its first window.

Only names, flags and, of each model file, its size and a digest of its first and last MiB (a safetensors header
and the first and last weights): no tensor is loaded, and the same file copied to another worker has the same
identity there (an mtime would differ), so another worker continues the render. A file replaced in place under its
name (another LoRA of the same rank) is another identity. The digest is computed once per file and modification.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from spinbot.backends.talk.infinitetalk.loading import Precision

SAMPLE = 1 << 20  # bytes read at each end of a model file


def render_numerics(
    precision: Precision, compile_mode: str | None, ranks: int, files: dict[str, Path], seed: int, lora_strength: float
) -> dict[str, Any]:
    """The effective precision (as resolved for the device: the CPU ignores SPINBOT_TALK_FP8, `auto` attention is
    the kernel it chose), the compile mode, the sequence-parallel ranks, the sampler's seed and LoRA strength, and
    every model file's identity."""
    p = precision
    return {
        "device": p.device.type,  # not its index: cuda:0 and cuda:1 render the same numbers
        "gpu": gpu_kind(p.device),
        "dtypes": {
            name: str(getattr(p, name)).removeprefix("torch.") for name in ("transformer", "encoders", "audio", "vae")
        },
        "fp8": p.fp8,
        "attention": p.attention,
        "fast_vae": p.fast_vae,
        "compile_mode": compile_mode,
        "ranks": ranks,
        "seed": seed,
        "lora_strength": lora_strength,
        "files": {param: file_identity(path) for param, path in sorted(files.items())},
    }


def gpu_kind(device: torch.device) -> str | None:
    """The GPU's model and compute capability ("NVIDIA H100 80GB HBM3, sm_90"); None on the CPU. The model too, not
    only the architecture: two GPUs of one architecture with other SM counts can get other kernel plans."""
    if device.type != "cuda":
        return None
    major, minor = torch.cuda.get_device_capability(device)
    return f"{torch.cuda.get_device_name(device)}, sm_{major}{minor}"


def file_identity(path: Path) -> list[Any]:
    """[name, size, digest] of a file; of a folder (wav2vec2's), that of each file in it, in name order."""
    if path.is_dir():
        return [[str(f.relative_to(path)), *_sampled(f)] for f in sorted(path.rglob("*")) if f.is_file()]
    return [path.name, *_sampled(path)]


@lru_cache(maxsize=256)
def _sampled_at(path: Path, size: int, mtime_ns: int) -> str:
    # mtime_ns is there for the cache key only: a file replaced under the same name and size is sampled again
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        digest.update(file.read(SAMPLE))
        if size > 2 * SAMPLE:
            file.seek(size - SAMPLE)
        digest.update(file.read())
    return digest.hexdigest()


def _sampled(path: Path) -> tuple[int, str]:
    stat = os.stat(path)
    return stat.st_size, _sampled_at(path, stat.st_size, stat.st_mtime_ns)
