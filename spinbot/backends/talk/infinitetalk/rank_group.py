"""Starting a group of rank processes on one host: a free TCP port on 127.0.0.1 for the rendezvous, one process
per rank through torch.multiprocessing (spawn: CUDA cannot be forked), NCCL on GPUs and gloo on the CPU."""

from __future__ import annotations

import socket
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

# A collective waits this long for every rank (default 10 minutes): after a new model, rank 0 waits in its first
# broadcast while the followers load the 14B checkpoint from disk.
COLLECTIVE_TIMEOUT = timedelta(minutes=30)


def free_port() -> int:
    """A port nothing listens on now (the OS picks it); the rendezvous binds it moments later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_rank(rank: int, world: int, port: int, device: torch.device) -> None:
    """Join the group: NCCL for CUDA devices (the rank's own GPU made current first), gloo for the CPU."""
    if device.type == "cuda":
        if device.index is None:  # NCCL binds to an indexed device
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(
        backend,
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=COLLECTIVE_TIMEOUT,
        **kwargs,
    )


def _cpu_entry(rank: int, world: int, port: int, fn: Callable[..., None], args: tuple) -> None:
    torch.set_num_threads(1)  # the ranks share the host's cores; more threads each only contend
    init_rank(rank, world, port, torch.device("cpu"))
    try:
        fn(rank, *args)
    finally:
        dist.destroy_process_group()


def launch_cpu_ranks(fn: Callable[..., None], world: int, *args: Any) -> None:
    """Run fn(rank, *args) in `world` gloo rank processes and wait for all (a failing rank fails the call)."""
    mp.spawn(_cpu_entry, args=(world, free_port(), fn, args), nprocs=world, join=True)
