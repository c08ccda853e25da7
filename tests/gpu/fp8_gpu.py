"""What the FP8 GPU tests share: they need torch, Triton and a CUDA GPU with FP8 tensor cores (Ada or Hopper)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")
NEEDS_FP8_GPU = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9),
        reason="needs a CUDA GPU with FP8 tensor cores",
    ),
]


def relative_error(got, expected) -> float:
    return float((got.float() - expected.float()).norm() / expected.float().norm())
