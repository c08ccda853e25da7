"""Make torchvision importable on machines whose torchvision wheel does not fit their torch.

spandrel imports torchvision, and transformers (and diffusers through it) import it whenever it is installed. The PyPI torchvision wheel is
built against the CUDA torch: beside the CPU torch wheel (this project's CI and development machines) its compiled
ops fail to load, and torchvision 0.28's import then fails registering a fake kernel for `torchvision::nms`, which
makes every transformers model class unimportable. Declaring that op's schema first lets the import go through;
torchvision's ops stay unavailable, and nothing here needs them. On a GPU host with a matching torchvision this is
a no-op. (The upscale backend carries the same workaround for spandrel.)
"""

from __future__ import annotations

import importlib
import sys
import threading

import torch

_lock = threading.Lock()
_library: torch.library.Library | None = None  # kept alive: the declared schemas live as long as this object


def ensure_torchvision_importable() -> None:
    """Import torchvision once, declaring its missing ops if its compiled part does not load."""
    global _library
    with _lock:
        try:
            import torchvision  # noqa: F401
            return
        except ImportError:
            return  # not installed: transformers does not try to use it
        except RuntimeError as err:
            if "torchvision::" not in str(err):
                raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]  # the failed import left half-initialised modules behind
        _library = torch.library.Library("torchvision", "FRAGMENT")
        for op in ("nms", "qnms"):
            try:
                _library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            except RuntimeError:
                pass  # declared already
        importlib.import_module("torchvision")
