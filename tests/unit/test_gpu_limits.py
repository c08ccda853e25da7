"""SPINBOT_GPU_MEMORY_FRACTION: validated by the settings, applied once per process, a no-op without CUDA."""

import pytest
from pydantic import ValidationError

from spinbot.backends import gpu
from spinbot.settings import Settings
from tests.conftest import require_module


@pytest.mark.parametrize("value", ["0", "1.5", "-0.1"])
def test_fraction_outside_0_1_is_refused(monkeypatch, value):
    monkeypatch.setenv("SPINBOT_GPU_MEMORY_FRACTION", value)
    with pytest.raises(ValidationError, match="gpu_memory_fraction"):
        Settings()


def test_cap_is_applied_once_per_device(monkeypatch):
    torch = require_module("torch")
    calls = []
    monkeypatch.setattr(gpu, "_applied", False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, i: calls.append((f, i)))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: type("P", (), {"total_memory": 80 << 30}))
    gpu.apply_process_limits(0.56)
    gpu.apply_process_limits(0.9)  # a later backend in the same process does not change the cap
    assert calls == [(0.56, 0), (0.56, 1)]


def test_unset_fraction_leaves_cuda_alone(monkeypatch):
    torch = require_module("torch")
    monkeypatch.setattr(gpu, "_applied", False)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda *a: pytest.fail("no cap was asked for"))
    gpu.apply_process_limits(None)
