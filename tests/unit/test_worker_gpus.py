"""`spinbot worker --gpus` (SPINBOT_WORKER_GPUS): refusals in one line before anything starts, and the group the
worker starts (CPU ranks through SPINBOT_WORKER_CPU_RANKS, the same code path without GPUs)."""

from __future__ import annotations

import pytest

from spinbot.errors import SettingsError
from spinbot.settings import get_settings
from spinbot.worker import gpu_group
from spinbot.worker.gpu_group import group_devices, parse_gpus
from tests.conftest import require_module
from tests.unit.test_cli import run_cli


@pytest.mark.parametrize(
    "value, expected",
    [
        ("abc", "--gpus: 'abc' is not a GPU index (0, 1, 2, ...)"),
        ("0,-1", "--gpus: '-1' is not a GPU index (0, 1, 2, ...)"),
        ("0,1,1", "--gpus names GPU 1 more than once"),
        ("", "--gpus takes GPU indices separated by commas, e.g. 0,1,2,3; got ''"),
        ("0,,1", "--gpus takes GPU indices separated by commas, e.g. 0,1,2,3; got '0,,1'"),
    ],
)
def test_bad_gpus_are_refused_in_one_line(spinbot_env, value, expected) -> None:
    code, lines = run_cli("worker", "--gpus", value)
    assert code != 0 and lines == [f"error: {expected}"]


def test_more_gpus_than_visible_are_refused(spinbot_env, monkeypatch) -> None:
    monkeypatch.setattr(gpu_group, "visible_gpus", lambda: 2)
    code, lines = run_cli("worker", "--gpus", "0,2")
    assert code != 0 and lines == ["error: --gpus names GPU 2, but only 2 are visible (0 to 1)"]


def test_a_gpu_count_that_does_not_divide_the_heads_is_refused(spinbot_env, monkeypatch) -> None:
    monkeypatch.setattr(gpu_group, "visible_gpus", lambda: 8)
    code, lines = run_cli("worker", "--gpus", "0,1,2")
    assert code != 0 and lines == [
        "error: --gpus: 3 GPUs do not divide InfiniteTalk's 40 attention heads (each GPU takes whole heads: use 1, "
        "2, 4, 5 or 8)"
    ]


def test_a_machine_without_gpus_refuses(spinbot_env, monkeypatch) -> None:
    monkeypatch.setattr(gpu_group, "visible_gpus", lambda: 0)
    code, lines = run_cli("worker", "--gpus", "0,1")
    assert code != 0 and lines == ["error: --gpus needs CUDA GPUs and this machine has none visible (PyTorch sees 0)"]


def test_gpus_and_cpu_ranks_exclude_each_other(spinbot_env, use_settings) -> None:
    use_settings(worker_gpus="0,1", worker_cpu_ranks=2)
    with pytest.raises(SettingsError, match="not both"):
        group_devices(get_settings())


def test_valid_gpus_become_cuda_devices(spinbot_env, use_settings, monkeypatch) -> None:
    torch = require_module("torch")
    monkeypatch.setattr(gpu_group, "visible_gpus", lambda: 8)
    use_settings(worker_gpus="3, 1")
    assert group_devices(get_settings()) == [torch.device("cuda", 3), torch.device("cuda", 1)]
    assert parse_gpus("0,1,2,3") == [0, 1, 2, 3]
    use_settings(worker_gpus="")
    assert group_devices(get_settings()) is None  # no option: one device, no group


def test_the_worker_starts_and_stops_its_group(spinbot_env, use_settings, monkeypatch) -> None:
    """run_worker with two CPU ranks: jobs see the group (the backend reports it in the node output, see
    test_infinitetalk_group), and it is gone when the worker stops."""
    require_module("torch")
    from spinbot.backends.talk.infinitetalk.transformer_group import active_group
    from spinbot.worker import main

    seen = []

    class Service:
        def __init__(self, settings, queues) -> None:
            pass

        async def serve(self) -> None:
            group = active_group()
            seen.append(group.describe() if group else None)

    monkeypatch.setattr(main, "WorkerService", Service)
    use_settings(worker_cpu_ranks=2)
    main.run_worker(["cpu"], get_settings())
    assert seen == [{"gpus": 0, "ranks": 2, "sequence_parallel": "ulysses"}]
    assert active_group() is None
