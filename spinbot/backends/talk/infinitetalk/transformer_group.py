"""The worker's transformer group: one job's InfiniteTalk transformer on several devices, one process per device.

Rank 0 is the worker process: it runs the whole pipeline (encoders, sampler, VAE) as on one device, and its
transformer is a ParallelTransformer, which hands every `conditions` and forward call to the other ranks before
running its own share (sequence_parallel.SequenceParallel). Ranks 1..N-1 are processes started here that only run
transformer shares: `follow` loops on the calls rank 0 sends.

Calls travel in two parts: a small header (the operation, shapes, scalars) through a multiprocessing queue per
follower, then the tensors by torch.distributed broadcast. A follower idles on its queue between jobs, where
a collective would time out (NCCL and gloo give up after 10 minutes by default).
"""

from __future__ import annotations

import itertools
import os
import queue
from dataclasses import dataclass, replace
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from spinbot.backends.talk.infinitetalk.loading import Precision, load_transformer
from spinbot.backends.talk.infinitetalk.model import Conditions, InfiniteTalkModel
from spinbot.backends.talk.infinitetalk.rank_group import free_port, init_rank
from spinbot.backends.talk.infinitetalk.sequence_parallel import SequenceParallel, check_heads

PARENT_CHECK_SECONDS = 5.0  # an idle follower looks this often whether the worker still lives
KEPT_CONDITIONS = 16  # a window makes 1 to 3 (one per guidance pass); a follower keeps the latest few


@dataclass(frozen=True)
class LoadSpec:
    """What a follower needs to load the same transformer as rank 0 (on its own device)."""

    files: dict[str, Path]
    precision: Precision
    lora_strength: float
    compile_mode: str | None = None  # None: not compiled; "default" or a torch.compile mode


@dataclass
class GroupConditions(Conditions):
    key: int = 0  # the followers' copy of these conditions


class TransformerGroup:
    """Rank 0's side: starts the followers, sends them each call."""

    def __init__(self, devices: list[torch.device]):
        self.devices = devices
        port, context = free_port(), mp.get_context("spawn")  # spawn: CUDA cannot be used in a forked process
        self.inboxes = [context.Queue() for _ in devices[1:]]
        self.processes: list[BaseProcess] = [
            context.Process(target=follow, args=(rank, len(devices), port, device, inbox, os.getpid()), daemon=True)
            for rank, (device, inbox) in enumerate(zip(devices[1:], self.inboxes), start=1)
        ]
        for process in self.processes:
            process.start()
        init_rank(0, len(devices), port, devices[0])
        self.keys = itertools.count()
        self.loaded: tuple[int, LoadSpec] | None = None
        self.parallel: SequenceParallel | None = None

    @property
    def world(self) -> int:
        return len(self.devices)

    def describe(self) -> dict[str, Any]:
        gpus = sum(device.type == "cuda" for device in self.devices)
        return {"gpus": gpus, "ranks": self.world, "sequence_parallel": "ulysses"}

    def send(self, op: str, tensors: list[torch.Tensor] | None = None, **values: Any) -> None:
        self.check_followers()
        tensors = tensors or []
        header = {"op": op, "tensors": [(tuple(t.shape), t.dtype) for t in tensors], **values}
        for inbox in self.inboxes:
            inbox.put(header)
        for tensor in tensors:
            dist.broadcast(tensor.to(self.devices[0]).contiguous(), src=0)

    def check_followers(self) -> None:
        """A follower that died (an error, out of memory, killed) would leave rank 0 waiting in the next collective:
        say so instead, in one line."""
        for rank, process in enumerate(self.processes, start=1):
            if not process.is_alive():
                raise RuntimeError(
                    f"transformer group: rank {rank} ({self.devices[rank]}) exited with code {process.exitcode}; "
                    "restart the worker"
                )

    def transformer(self, model: InfiniteTalkModel, spec: LoadSpec) -> ParallelTransformer:
        """`model` (rank 0's, loaded from `spec`) run over the group; the followers load theirs when it changed."""
        if self.loaded is None or self.loaded[0] != id(model) or self.loaded[1] != spec:
            check_heads(model.config.num_heads, self.world)  # here, before a follower could fail on it
            self.send("load", spec=spec)
            self.parallel = SequenceParallel(model)
            self.loaded = (id(model), spec)
        assert self.parallel is not None
        return ParallelTransformer(self, self.parallel)

    def close(self) -> None:
        for inbox, process in zip(self.inboxes, self.processes):
            if process.is_alive():
                inbox.put({"op": "stop", "tensors": []})
        for process in self.processes:
            process.join(timeout=60)
            if process.is_alive():
                process.terminate()
        dist.destroy_process_group()


class ParallelTransformer:
    """Stands in for InfiniteTalkModel in the pipeline (conditions, token_grid, the forward call, the attributes
    it reads); every call runs on all ranks of the group."""

    def __init__(self, group: TransformerGroup, parallel: SequenceParallel):
        self.group, self.parallel, self.model = group, parallel, parallel.model
        self.config, self.patch_embedding = self.model.config, self.model.patch_embedding

    def token_grid(self, latent_shape: tuple[int, ...] | torch.Size) -> tuple[int, int, int]:
        return self.model.token_grid(latent_shape)

    def typed_blocks(self) -> list:
        return self.model.typed_blocks()

    def conditions(
        self, context: torch.Tensor, clip_fea: torch.Tensor, audio: torch.Tensor, grid: tuple[int, int, int]
    ) -> GroupConditions:
        key = next(self.group.keys)
        self.group.send("conditions", [context, clip_fea, audio], grid=grid, key=key)
        local = self.parallel.conditions(context, clip_fea, audio, grid)
        return GroupConditions(local.grid, local.rope, local.blocks, key)

    def __call__(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor | None,
        clip_fea: torch.Tensor | None,
        y: torch.Tensor,
        audio: torch.Tensor | None,
        audio_scale: float = 1.0,
        conditions: Conditions | None = None,
    ) -> torch.Tensor:
        if not isinstance(conditions, GroupConditions):
            raise ValueError("a parallel transformer takes the conditions its own conditions() made")
        self.group.send("forward", [x, t, y], key=conditions.key, audio_scale=float(audio_scale))
        return self.parallel(x, t, y, conditions, audio_scale)


# ---- ranks 1..N-1 -----------------------------------------------------------------------------------------------


class Follower:
    def __init__(self, device: torch.device):
        self.device = device
        self.parallel: SequenceParallel | None = None
        self.conditions: dict[int, Conditions] = {}

    def load(self, spec: LoadSpec) -> None:
        self.parallel, self.conditions = None, {}
        model, _ = load_transformer(spec.files, replace(spec.precision, device=self.device), spec.lora_strength)
        if spec.compile_mode is not None:
            model.compile_blocks(None if spec.compile_mode == "default" else spec.compile_mode)
        self.parallel = SequenceParallel(model)

    def handle(self, header: dict[str, Any]) -> None:
        tensors = [torch.empty(shape, dtype=dtype, device=self.device) for shape, dtype in header["tensors"]]
        for tensor in tensors:
            dist.broadcast(tensor, src=0)
        op = header["op"]
        if op == "load":
            self.load(header["spec"])
            return
        assert self.parallel is not None, "a call before the transformer was loaded"
        if op == "conditions":
            context, clip_fea, audio = tensors
            self.conditions[header["key"]] = self.parallel.conditions(context, clip_fea, audio, header["grid"])
            for old in sorted(self.conditions)[:-KEPT_CONDITIONS]:
                del self.conditions[old]
        elif op == "forward":
            x, t, y = tensors
            self.parallel(x, t, y, self.conditions[header["key"]], header["audio_scale"])


def follow(rank: int, world: int, port: int, device: torch.device, inbox: Any, parent: int) -> None:
    """A follower process: join the group, then run rank 0's calls until it says stop (or is gone)."""
    if device.type == "cpu":
        torch.set_num_threads(1)  # CPU ranks (tests) share the host's cores
    init_rank(rank, world, port, device)
    follower = Follower(device)
    try:
        with torch.no_grad():
            while (header := next_call(inbox, parent))["op"] != "stop":
                follower.handle(header)
    finally:
        dist.destroy_process_group()


def next_call(inbox: Any, parent: int) -> dict[str, Any]:
    """The next header; a stop when the worker died without saying so (a daemon process outlives a killed parent)."""
    while True:
        try:
            return cast("dict[str, Any]", inbox.get(timeout=PARENT_CHECK_SECONDS))
        except queue.Empty:
            if os.getppid() != parent:
                return {"op": "stop"}


# ---- the worker's group -----------------------------------------------------------------------------------------

_ACTIVE: TransformerGroup | None = None


def active_group() -> TransformerGroup | None:
    return _ACTIVE


def start_group(devices: list[torch.device]) -> TransformerGroup:
    global _ACTIVE
    if _ACTIVE is not None:
        raise RuntimeError("a transformer group is already running in this process")
    _ACTIVE = TransformerGroup(devices)
    return _ACTIVE


def stop_group() -> None:
    global _ACTIVE
    if _ACTIVE is not None:
        group, _ACTIVE = _ACTIVE, None
        group.close()
