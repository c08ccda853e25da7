"""Import torchvision where the native backends need it imported first (spandrel, transformers, diffusers).

Until the gpu extra pinned matched builds, the PyPI torchvision (a CUDA build) sat beside a CPU torch, its compiled
ops failed to load and its import had to be rescued by declaring the missing `torchvision::nms` schema. With torch
2.14.1 and torchvision 0.29.1 (both PyPI's CUDA 13 builds, which run on the CPU too) the import simply works, so
this is now a plain import; the callers keep calling it, so an environment that pairs mismatched builds again fails
here, at one place, with torchvision's own error.
"""

from __future__ import annotations


def ensure_torchvision_importable() -> None:
    """Import torchvision if it is installed (transformers imports it whenever it is)."""
    try:
        import torchvision  # noqa: F401
    except ImportError:
        pass  # not installed: transformers does not try to use it
