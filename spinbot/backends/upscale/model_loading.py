"""The native upscaler's three models from SPINBOT_MODELS_DIR: the upscaler and CodeFormer through spandrel,
RetinaFace from its official checkpoint; each loaded once into the worker's model cache (or a process-wide dict).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import MethodType
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.nn.functional as F

from spinbot.backends.upscale.files import DETECTOR_FILES
from spinbot.backends.upscale.retinaface import RetinaFaceConfig, RetinaFaceDetector, load_retinaface
from spinbot.errors import BackendUnavailable, ParamsError

if TYPE_CHECKING:
    from spinbot.tasks.upscale import AIUpscalerParams

T = TypeVar("T")


@dataclass
class Models:
    upscaler: Any  # spandrel ImageModelDescriptor (handles padding to the model's size multiple)
    restorer: torch.nn.Module  # CodeFormer
    restorer_autocast: torch.dtype | None
    detector: RetinaFaceDetector
    dtype: torch.dtype  # of the upscaler, and of the frames between the steps

    @property
    def scale(self) -> int:
        return int(self.upscaler.scale)


def model_file(folder: str, name: str, param: str) -> Path:
    from spinbot.settings import get_settings

    root = Path(get_settings().models_dir)
    path = root / folder / name
    if not path.is_file():
        raise BackendUnavailable(
            f"upscale_video native: {param} file {name} not found: looked for {path} (SPINBOT_MODELS_DIR={root})"
        )
    return path


def load_models(params: AIUpscalerParams, device: torch.device, half: bool = True) -> Models:
    detector_name = DETECTOR_FILES.get(params.facedetection)
    if detector_name is None:
        raise ParamsError(
            f"facedetection {params.facedetection!r} is not available in the native backend; "
            f"use one of: {', '.join(DETECTOR_FILES)}"
        )
    upscaler_path = model_file("upscale_models", params.model_name_0, "model_name_0")
    restorer_path = model_file("facerestore_models", params.model_name_1, "model_name_1")
    detector_path = model_file("facedetection", detector_name, "facedetection")
    half = half and device.type == "cuda"  # CPU half-precision kernels are slow or missing
    upscaler, dtype = load_upscaler(upscaler_path, device, half)
    restorer, autocast = load_restorer(restorer_path, device, half)
    detector_dtype = torch.float16 if half else torch.float32
    detector = cached(
        "retinaface",
        detector_path,
        device,
        detector_dtype,
        lambda: load_retinaface(detector_path, device, detector_dtype),
    )
    return Models(upscaler, restorer, autocast, RetinaFaceDetector(detector, RetinaFaceConfig()), dtype)


def load_upscaler(path: Path, device: torch.device, half: bool) -> tuple[Any, torch.dtype]:
    def load() -> tuple[Any, torch.dtype]:
        descriptor = load_spandrel(path, "model_name_0")
        if descriptor.input_channels != 3 or descriptor.output_channels != 3 or descriptor.scale < 1:
            raise ParamsError(f"model_name_0 {path.name}: not an RGB upscaler ({descriptor.architecture.name})")
        dtype = torch.float32
        if half:  # float16 where the architecture allows it, else bfloat16
            dtype = (
                torch.float16 if descriptor.supports_half else torch.bfloat16 if descriptor.supports_bfloat16 else dtype
            )
        descriptor = descriptor.to(device=device, dtype=dtype).eval()
        if device.type == "cuda":
            descriptor.model.to(memory_format=torch.channels_last)
        return descriptor, dtype

    # The precision follows from the file, so the cache key says "half where allowed" rather than a dtype.
    return cached("upscaler", path, device, "half-if-allowed" if half else torch.float32, load)


def load_restorer(path: Path, device: torch.device, half: bool) -> tuple[torch.nn.Module, torch.dtype | None]:
    def load() -> torch.nn.Module:
        descriptor = load_spandrel(path, "model_name_1")
        if descriptor.architecture.id != "CodeFormer":
            raise ParamsError(
                f"model_name_1 {path.name} is a {descriptor.architecture.name} model; the native "
                "backend restores faces with CodeFormer"
            )
        model = descriptor.model.to(device).eval()
        model.quantize.get_codebook_feat = MethodType(codebook_lookup, model.quantize)
        return model

    autocast = torch.bfloat16 if half else None
    return cached("restorer", path, device, torch.float32, load), autocast


def load_spandrel(path: Path, param: str) -> Any:
    spandrel = import_spandrel()
    try:
        return spandrel.ModelLoader("cpu").load_from_file(path)
    except spandrel.UnsupportedModelError:
        raise ParamsError(f"{param} {path.name}: spandrel does not recognise this checkpoint's architecture") from None


_spandrel_lock = threading.Lock()


def import_spandrel() -> Any:
    """spandrel with CodeFormer registered."""
    with _spandrel_lock:
        try:
            import spandrel
            import spandrel_extra_arches
        except ImportError as err:
            raise BackendUnavailable(
                f"upscale_video native needs the gpu extra (pip install -e '.[gpu]'): {err}"
            ) from None
        spandrel_extra_arches.install(ignore_duplicates=True)
        return spandrel


def codebook_lookup(quantizer: Any, indices: torch.Tensor, shape: list[int] | None) -> torch.Tensor:
    """CodeFormer's code lookup as a gather of codebook rows. The original builds a one-hot matrix on the CPU
    and copies it to the device on every forward (a stall of the calling thread, and 16 MB for 16 faces), to
    multiply it with the codebook: the same rows."""
    quantized = F.embedding(indices.reshape(-1), quantizer.embedding.weight)
    if shape is not None:
        quantized = quantized.view(shape).permute(0, 3, 1, 2).contiguous()
    return quantized


# ---- model cache ----------------------------------------------------------------------------------------------

_local_cache: dict[tuple[str, str], Any] = {}
_local_lock = threading.Lock()


def cached(role: str, path: Path, device: torch.device, dtype: torch.dtype | str, load: Callable[[], T]) -> T:
    """The worker's model cache when there is one (shared with the other backends, with a memory budget),
    else a process-wide dict. Keyed by file, role (one file loaded as two things is two entries), device and
    dtype. The file's size stands for the model's (its float32 weights: an upper bound for a half-precision
    copy)."""
    tag = f"{role}:{device}:{dtype}"
    try:
        from spinbot.worker.model_cache import get_model_cache
    except ImportError:
        key = (str(path.resolve()), tag)
        with _local_lock:
            if key not in _local_cache:
                _local_cache[key] = load()
            return _local_cache[key]
    return get_model_cache().get(path, tag, load, size=path.stat().st_size, on_evict=_release)


def _release(model: Any) -> None:
    model = model[0] if isinstance(model, tuple) else model
    module = getattr(model, "model", model)
    if isinstance(module, torch.nn.Module):
        module.to("cpu")
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
