"""Sequence-parallel InfiniteTalk (Wan2.1-I2V-14B + audio adapter, random weights): seconds per step and per
window on 1, 2, 4, 8 GPUs, and the one-rank check that the sequence-parallel path costs what today's does.

One rank, one GPU (today's path vs the sequence-parallel one at world size 1, same model, 480p, 10 of 40 blocks):
    python benchmarks/infinitetalk_multigpu.py --one-rank --layers 10
Several GPUs (one process per GPU, NCCL; writes benchmarks/results/infinitetalk_multigpu.json):
    python benchmarks/infinitetalk_multigpu.py --ranks 1,2,4,8
CPU plumbing check (tiny model, gloo; writes nothing unless --out):
    python benchmarks/infinitetalk_multigpu.py --device cpu --tiny --one-rank
    python benchmarks/infinitetalk_multigpu.py --device cpu --tiny --ranks 1,2

Imports only torch and, from spinbot, the model, sequence_parallel and rank_group modules (no fastapi, langgraph,
sqlalchemy or av): the GPU machine's Python needs torch alone (numpy, safetensors, pydantic are not used here).

Shapes: 81 frames = 21 latent frames; 480p = 832x480 -> a 21 x 30 x 52 token grid (32760 tokens), 720p = 1280x720
-> 21 x 45 x 80 (75600). A step is one forward (the seed defaults: text and audio guidance 1, one pass); a window
is `--steps` steps of the transformer alone (no VAE, no encoders). Blocks are timed with `--layers` of the 40 and
the step time for 40 is scaled from them (the blocks are identical; embeddings and head are a small constant).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from infinitetalk_gpu import SIZES, inputs, random_model  # noqa: E402  (the one-GPU benchmark's model, inputs)
from machine import machine  # noqa: E402

from spinbot.backends.talk.infinitetalk.model import (  # noqa: E402
    InfiniteTalkConfig,
    InfiniteTalkModel,
)
from spinbot.backends.talk.infinitetalk.rank_group import free_port, init_rank  # noqa: E402
from spinbot.backends.talk.infinitetalk.sequence_parallel import SequenceParallel  # noqa: E402

TINY = InfiniteTalkConfig(dim=128, num_heads=8, ffn_dim=256, freq_dim=32, text_dim=64, text_len=128)  # 120 prompt rows
TINY_SIZES = {"tiny": (96, 64)}
FULL_LAYERS = 40
RESULT = ROOT / "benchmarks" / "results" / "infinitetalk_multigpu.json"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Any, device: torch.device, repeats: int, warmup: int = 1) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return {"mean_s": round(sum(times) / len(times), 4), "min_s": round(min(times), 4), "runs": len(times)}


def setup(args: argparse.Namespace, device: torch.device) -> tuple[InfiniteTalkModel, dict[str, tuple[int, int]]]:
    cfg = TINY if args.tiny else InfiniteTalkConfig()
    cfg = InfiniteTalkConfig(**{**cfg.__dict__, "num_layers": args.layers})
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = random_model(cfg, device, dtype)
    if args.compile:
        model.compile_blocks()
    return model, TINY_SIZES if args.tiny else {name: SIZES[name] for name in args.sizes.split(",")}


def step_times(measured: dict[str, float], layers: int, steps: int) -> dict[str, float]:
    """A full 40-block step scaled from the measured forward, and a window of `steps` steps."""
    step = measured["mean_s"] * FULL_LAYERS / layers
    return {"forward_s": measured["mean_s"], "step_s_40_layers": round(step, 4), "window_s": round(step * steps, 3)}


# ---- one rank: today's path against the sequence-parallel one ---------------------------------------------------


def one_rank(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    init_rank(0, 1, free_port(), device)
    try:
        model, sizes = setup(args, device)
        out: dict[str, Any] = {}
        for label, size in sizes.items():
            out[label] = compare_paths(model, size, device, args)
            print(label, json.dumps(out[label]), flush=True)
        return out
    finally:
        dist.destroy_process_group()


def compare_paths(
    model: InfiniteTalkModel, size: tuple[int, int], device: torch.device, args: argparse.Namespace
) -> dict[str, Any]:
    """Today's model call, then the same model through SequenceParallel at world size 1 (which installs its kernels
    into the model until released)."""
    i = inputs(model.config, size, 1, device)
    grid = model.token_grid(i["x"].shape)
    with torch.no_grad():
        cond = model.conditions(i["context"], i["clip_fea"], i["audio"], grid)
        today_out = model(i["x"], i["t"], None, None, i["y"], None, conditions=cond)
        today = timed(lambda: model(i["x"], i["t"], None, None, i["y"], None, conditions=cond), device, args.repeats)
        parallel = SequenceParallel(model)
        sp_cond = parallel.conditions(i["context"], i["clip_fea"], i["audio"], grid)
        sp_out = parallel(i["x"], i["t"], i["y"], sp_cond)
        sp = timed(lambda: parallel(i["x"], i["t"], i["y"], sp_cond), device, args.repeats)
        parallel.release()  # the next size's "today" is the model's own path again
    error = float((sp_out.double() - today_out.double()).norm() / today_out.double().norm())
    return {
        "tokens": grid[0] * grid[1] * grid[2],
        "today": step_times(today, args.layers, args.steps),
        "sequence_parallel_1_rank": step_times(sp, args.layers, args.steps),
        "ratio_sp_over_today": round(sp["mean_s"] / today["mean_s"], 4),
        "relative_difference": error,
    }


# ---- N ranks ----------------------------------------------------------------------------------------------------


def rank_main(rank: int, world: int, port: int, args: argparse.Namespace, out_path: str) -> None:
    device = torch.device("cuda", rank) if args.device == "cuda" else torch.device("cpu")
    if device.type == "cpu":
        torch.set_num_threads(1)
    init_rank(rank, world, port, device)
    try:
        model, sizes = setup(args, device)
        parallel = SequenceParallel(model)
        results = {label: measure_size(parallel, size, device, args) for label, size in sizes.items()}
        if rank == 0:
            Path(out_path).write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


def measure_size(
    parallel: SequenceParallel, size: tuple[int, int], device: torch.device, args: argparse.Namespace
) -> dict[str, Any]:
    i = inputs(parallel.model.config, size, 1, device)
    grid = parallel.model.token_grid(i["x"].shape)
    with torch.no_grad():
        cond = parallel.conditions(i["context"], i["clip_fea"], i["audio"], grid)
        measured = timed(lambda: parallel(i["x"], i["t"], i["y"], cond), device, args.repeats)
    result: dict[str, Any] = {"tokens": grid[0] * grid[1] * grid[2], **step_times(measured, args.layers, args.steps)}
    if device.type == "cuda":
        result["peak_gib_rank0"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return result


def many_ranks(args: argparse.Namespace) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    for world in [int(n) for n in args.ranks.split(",")]:
        if args.device == "cuda" and world > torch.cuda.device_count():
            runs[str(world)] = {"skipped": f"{torch.cuda.device_count()} GPUs visible"}
            continue
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            mp.spawn(rank_main, args=(world, free_port(), args, f.name), nprocs=world, join=True)
            runs[str(world)] = json.loads(Path(f.name).read_text())
        print(world, json.dumps(runs[str(world)]), flush=True)
    return {"ranks": runs, "scaling_efficiency": efficiency(runs)}


def efficiency(runs: dict[str, Any]) -> dict[str, dict[str, float]]:
    """t(1) / (N * t(N)) per size: 1.0 is perfect scaling."""
    one = runs.get("1", {})
    table: dict[str, dict[str, float]] = {}
    for world, result in runs.items():
        for label, r in result.items():
            if isinstance(r, dict) and label in one:
                table.setdefault(label, {})[world] = round(one[label]["forward_s"] / (int(world) * r["forward_s"]), 3)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--one-rank", action="store_true", help="today's path vs sequence parallel at world size 1")
    parser.add_argument("--ranks", default="1,2,4,8", help="world sizes to measure (one process per GPU)")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--layers", type=int, default=10, help="blocks built and timed (of 40)")
    parser.add_argument("--sizes", default="480p,720p")
    parser.add_argument("--steps", type=int, default=6, help="steps a window (seed default 6)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="torch.compile each block (as the backend on CUDA)")
    parser.add_argument("--tiny", action="store_true", help="a tiny model and shape (CPU plumbing check)")
    parser.add_argument("--out", type=Path, help=f"write the JSON here (default for --ranks on CUDA: {RESULT})")
    args = parser.parse_args()
    if args.one_rank:
        args.sizes = "480p" if args.sizes == parser.get_default("sizes") else args.sizes
    result = {
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "machine": machine(),
        "torch": torch.__version__,
        "layers": args.layers,
        "compiled": args.compile,
        **(one_rank(args) if args.one_rank else many_ranks(args)),
    }
    out = args.out or (RESULT if args.device == "cuda" and not args.one_rank and not args.tiny else None)
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        out.write_text(text + "\n")


if __name__ == "__main__":
    main()
