"""Process-wide CUDA settings the native backends share, applied once before the first native backend is made.

SPINBOT_GPU_MEMORY_FRACTION caps this process's share of every visible CUDA device (PyTorch's caching allocator
then raises out-of-memory past it): a worker that shares its card, or a run that proves a job fits a smaller card
(0.56 of an H200's 141 GB is an 80 GB card's 79 GiB).
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)
_applied = False
_lock = threading.Lock()


def apply_process_limits(fraction: float | None) -> None:
    """Cap each CUDA device at `fraction` of its memory; a no-op without torch, without CUDA or when unset."""
    global _applied
    with _lock:
        if _applied or fraction is None:
            return
        _applied = True
        try:
            import torch
        except ImportError:
            return
        if not torch.cuda.is_available():
            return
        for index in range(torch.cuda.device_count()):
            torch.cuda.set_per_process_memory_fraction(fraction, index)
            total = torch.cuda.get_device_properties(index).total_memory
            log.info(
                "gpu memory capped",
                extra={"device": index, "fraction": fraction, "cap_bytes": int(total * fraction), "total_bytes": total},
            )
