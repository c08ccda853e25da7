"""The worker's GPU group: `spinbot worker --gpus 0,1,2,3` (or SPINBOT_WORKER_GPUS) runs the native InfiniteTalk
transformer of every job on all those GPUs, one process per GPU (spinbot.backends.talk.infinitetalk.
transformer_group: this process is rank 0 on the first GPU listed and starts the others).

SPINBOT_WORKER_CPU_RANKS=N does the same with N gloo ranks on the CPU, for tests: no GPU, same code path."""

from __future__ import annotations

from typing import TYPE_CHECKING

from spinbot.errors import SettingsError
from spinbot.settings import Settings

if TYPE_CHECKING:
    import torch


INFINITETALK_HEADS = 40  # Wan2.1-I2V-14B's (InfiniteTalkConfig.num_heads; model.py needs torch to import)


def parse_gpus(text: str) -> list[int]:
    """'0,1,2,3' -> [0, 1, 2, 3]; anything else is a one-line SettingsError."""
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or not all(items):
        raise SettingsError(f"--gpus takes GPU indices separated by commas, e.g. 0,1,2,3; got {text!r}")
    for item in items:
        if not item.isdigit():
            raise SettingsError(f"--gpus: {item!r} is not a GPU index (0, 1, 2, ...)")
    gpus = [int(item) for item in items]
    twice = sorted({gpu for gpu in gpus if gpus.count(gpu) > 1})
    if twice:
        raise SettingsError(f"--gpus names GPU {twice[0]} more than once")
    return gpus


def visible_gpus() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count()


def group_devices(settings: Settings) -> list[torch.device] | None:
    """The devices of the worker's group, or None for no group (checked before any job is taken)."""
    if settings.worker_gpus and settings.worker_cpu_ranks:
        raise SettingsError("set --gpus (SPINBOT_WORKER_GPUS) or SPINBOT_WORKER_CPU_RANKS, not both")
    if not settings.worker_gpus and not settings.worker_cpu_ranks:
        return None
    try:
        import torch
    except ImportError as err:  # the CPU install (`make demo`): no gpu extra
        raise SettingsError(
            f"--gpus (SPINBOT_WORKER_GPUS, SPINBOT_WORKER_CPU_RANKS) needs the gpu extra (pip install -e '.[gpu]'): "
            f"{err}"
        ) from None

    if settings.worker_cpu_ranks:
        return [torch.device("cpu")] * settings.worker_cpu_ranks
    gpus, visible = parse_gpus(settings.worker_gpus), visible_gpus()
    if visible == 0:
        raise SettingsError("--gpus needs CUDA GPUs and this machine has none visible (PyTorch sees 0)")
    beyond = [gpu for gpu in gpus if gpu >= visible]
    if beyond:
        raise SettingsError(f"--gpus names GPU {beyond[0]}, but only {visible} are visible (0 to {visible - 1})")
    if INFINITETALK_HEADS % len(gpus):
        raise SettingsError(
            f"--gpus: {len(gpus)} GPUs do not divide InfiniteTalk's {INFINITETALK_HEADS} attention heads "
            "(each GPU takes whole heads: use 1, 2, 4, 5 or 8)"
        )
    return [torch.device("cuda", gpu) for gpu in gpus]


def start_worker_group(devices: list[torch.device]) -> None:
    from spinbot.backends.talk.infinitetalk.transformer_group import start_group

    start_group(devices)


def stop_worker_group() -> None:
    from spinbot.backends.talk.infinitetalk.transformer_group import stop_group

    stop_group()
