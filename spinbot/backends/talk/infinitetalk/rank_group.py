"""Starting a group of rank processes on one host: a free TCP port on 127.0.0.1 for the rendezvous, one process
per rank through torch.multiprocessing (spawn: CUDA cannot be forked), NCCL on GPUs and gloo on the CPU."""

from __future__ import annotations

import socket
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

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
