"""Rank processes for the sequence-parallel tests: gloo on 127.0.0.1, started by torch.multiprocessing (spawn).

The functions run in the child processes, so they live here (importable by name) rather than in a test module."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors import safe_open

from spinbot.backends.talk.infinitetalk.model import InfiniteTalkConfig
from spinbot.backends.talk.infinitetalk.rank_group import free_port, init_rank
from spinbot.backends.talk.infinitetalk.sequence_parallel import SequenceParallel
from spinbot.backends.talk.infinitetalk.transformer_checkpoint import load_model


def load_reference(path: Path) -> dict[str, Any]:
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    return {
        "config": InfiniteTalkConfig.from_dict(json.loads(metadata["config"])),
        "inputs": {key[3:]: value for key, value in tensors.items() if key.startswith("in.")},
        "out": tensors["out.x"],
    }


def cropped(inputs: dict[str, torch.Tensor], rows: int, columns: int) -> dict[str, torch.Tensor]:
    """The reference inputs on a smaller latent (an odd token count: the ranks' slices get padding)."""
    return {**inputs, "x": inputs["x"][..., :rows, :columns], "y": inputs["y"][..., :rows, :columns]}


def parallel_forward(rank: int, path: str, out: str, crop: tuple[int, int] | None, traced: bool) -> None:
    """Every rank: the reference model's forward, sequence-parallel; rank 0 saves the prediction. `traced`: each
    block through torch.compile as one graph (fullgraph: a graph break is an error; aot_eager: Dynamo and AOT
    tracing without Inductor's C++ build, so the CPU test stays seconds)."""
    ref = load_reference(Path(path))
    i = cropped(ref["inputs"], *crop) if crop else ref["inputs"]
    model = load_model([Path(path)], ref["config"], dtype=torch.float32, prefix="weights.")
    parallel = SequenceParallel(model)
    if traced:
        for block in model.blocks:
            block.compile(backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        grid = model.token_grid(i["x"][None].shape)
        conditions = parallel.conditions(i["context"][None], i["clip_fea"], i["audio"], grid)
        prediction = parallel(i["x"][None], i["t"], i["y"][None], conditions)
    if rank == 0:
        torch.save(prediction, out)


def run_parallel_forward(
    path: Path, out: Path, world: int, crop: tuple[int, int] | None = None, traced: bool = False
) -> torch.Tensor:
    launch_cpu_ranks(parallel_forward, world, str(path), str(out), crop, traced)
    return torch.load(out)


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
