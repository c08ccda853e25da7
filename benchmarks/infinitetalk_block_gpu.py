"""One InfiniteTalk DiT block (14B shapes, random weights) at 480p / 720p token counts: where a step's time goes
outside self-attention, and what compiler and kernel options change it.

A step is 40 such blocks, so block time x 40 is most of a step (the embeddings and head add about 1%). Each variant
compiles the block again and reports its time (CUDA events, median of --repeats), its kernels grouped by kind
(torch.profiler), and its output's relative error against the first variant's.

Device command, from the repository root (the wheels as benchmarks/infinitetalk_speed_gpu.py --help-wheels says):
  python3 benchmarks/infinitetalk_block_gpu.py --sizes 720p --variants base,coordinate,fast-accum --out $OUT/block.json
Here: `python benchmarks/infinitetalk_block_gpu.py --smoke` runs every variant at toy size on the CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from infinitetalk_gpu import SIZES, inputs, random_model, sync  # noqa: E402
from machine import machine  # noqa: E402

from spinbot.backends.attention import select_attention  # noqa: E402
from spinbot.backends.fp8 import INFINITETALK_LINEARS, FP8FeedForward, FP8Linear, use_fp8  # noqa: E402
from spinbot.backends.talk.infinitetalk.model import InfiniteTalkConfig  # noqa: E402

# variant -> what it changes against "base" (FP8 linears + cuDNN FP8 attention, torch.compile's default mode)
VARIANTS = {
    "base": {},
    "coordinate": {"inductor": {"coordinate_descent_tuning": True}},
    "fast-accum": {"fast_accum": True},
    "unfused-gelu": {"unfused_gelu": True},  # the FFN as before FP8FeedForward: GELU and quantization compiled
    "coordinate+fast-accum": {"inductor": {"coordinate_descent_tuning": True}, "fast_accum": True},
    "multi-kernel": {"inductor": {"triton.multi_kernel": 1}},
    "max-autotune": {"mode": "max-autotune-no-cudagraphs"},
}
# profiler kernel names -> kind (first match wins)
KINDS = (
    ("sdpa_fp8/self-attention", ("f8_knob", "fprop_wgmma_f8")),
    ("sdpa_bf16/cross-attention", ("sdpa", "flash", "fmha")),
    ("fp8 gemm", ("nvjet", "qqtst", "cutlass", "gemm", "scaled_mm_kernel", "triton_tem")),
)


def kind_of(kernel: str) -> str:
    for kind, marks in KINDS:
        if any(mark in kernel for mark in marks):
            return kind
    return "other (norms, quantization, RoPE, elementwise)"


def build(device: torch.device, smoke: bool):
    cfg = InfiniteTalkConfig(num_layers=1)
    if smoke:
        cfg = replace(cfg, dim=256, ffn_dim=512, num_heads=2, text_dim=64)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = random_model(cfg, device, dtype)
    use_fp8(model.blocks, INFINITETALK_LINEARS)
    model.use_attention(select_attention("cudnn-fp8", device))
    return model


def block_call(model, size: tuple[int, int], device: torch.device):
    """A function running the block once on fixed inputs at `size` (tokens, timestep, conditions as a step has)."""
    one = inputs(model.config, size, 1, device)
    with torch.inference_mode():
        tokens = model.patch_embedding(torch.cat([one["x"], one["y"]], dim=1).to(model.patch_embedding.weight.dtype))
        grid = tuple(tokens.shape[2:])
        tokens = tokens.flatten(2).transpose(1, 2).contiguous()
        conditions = model.conditions(one["context"], one["clip_fea"], one["audio"], grid)
        t = torch.full((1,), 900.0, device=device)
        from spinbot.backends.talk.infinitetalk.model import run_fp32, sinusoidal_embedding

        e = run_fp32(model.time_embedding, sinusoidal_embedding(model.config.freq_dim, t))
        e0 = run_fp32(model.time_projection, e).unflatten(1, (6, model.config.dim))
        gain = torch.ones((), device=device)
    block = model.blocks[0]

    def call():
        with torch.inference_mode():
            return block(tokens, e0, conditions.rope, conditions.blocks[0], gain)

    return call, tokens.shape[1]


def event_ms(fn, repeats: int) -> list[float]:
    if not torch.cuda.is_available():
        started = time.perf_counter()
        fn()
        return [(time.perf_counter() - started) * 1e3]
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        sync()
        times.append(start.elapsed_time(end))
    return times


def kernel_table(fn) -> dict:
    """Kernel time by kind and the 30 largest kernels, for one call."""
    if not torch.cuda.is_available():
        return {}
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        sync()
    events = [e for e in prof.key_averages() if getattr(e, "device_time_total", 0) > 0]
    by_kind: dict[str, float] = defaultdict(float)
    for e in events:
        by_kind[kind_of(e.key)] += e.device_time_total / 1e3
    top = sorted(events, key=lambda e: e.device_time_total, reverse=True)[:30]
    return {
        "by_kind_ms": {k: round(v, 2) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
        "top_ms": {f"{e.key[:100]} x{e.count}": round(e.device_time_total / 1e3, 3) for e in top},
    }


def apply(model, variant: dict):
    import torch._inductor.config as inductor

    torch._dynamo.reset()
    for key, value in variant.get("inductor", {}).items():
        target, attr = (inductor.triton, key.split(".", 1)[1]) if key.startswith("triton.") else (inductor, key)
        setattr(target, attr, value)
    block = model.blocks[0]
    for layer in block.modules():
        if isinstance(layer, FP8Linear):
            layer.fast_accum = variant.get("fast_accum", False)
    block.ffn = (nn.Sequential if variant.get("unfused_gelu") else FP8FeedForward)(*block.ffn)
    model.blocks[0]._compiled_call_impl = None  # nn.Module.compile's slot: compile again under the new options
    model.blocks[0].compile(dynamic=False, mode=variant.get("mode"))


def undo(variant: dict) -> None:
    import torch._inductor.config as inductor

    for key in variant.get("inductor", {}):
        target, attr = (inductor.triton, key.split(".", 1)[1]) if key.startswith("triton.") else (inductor, key)
        setattr(target, attr, type(getattr(target, attr))())  # the defaults here are False / 0


def measure(call, reference: torch.Tensor | None, repeats: int) -> dict:
    """One variant: its first (compiling) call, its error against the first variant's output, its median time and
    kernels; "output" holds this variant's output for the next ones to compare with."""
    started = time.perf_counter()
    got = call().float()
    sync()
    entry: dict = {"first_call_s": round(time.perf_counter() - started, 1)}
    base = got if reference is None else reference
    entry["rel_err_vs_first"] = round(float((got - base).norm() / base.norm()), 5)
    call()
    entry["block_ms"] = round(statistics.median(event_ms(call, repeats)), 2)
    entry["x40_s"] = round(entry["block_ms"] * 40 / 1e3, 3)
    entry.update(kernel_table(call))
    entry["output"] = got
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="720p", help="comma-separated of 480p, 720p")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated of {','.join(VARIANTS)}")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/infinitetalk_block_gpu.json")
    parser.add_argument("--smoke", action="store_true", help="toy size on the CPU, nothing written")
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant {unknown[0]!r}; use some of {', '.join(VARIANTS)}")
    device = torch.device("cpu" if args.smoke else "cuda")
    out: dict = {"command": "python3 " + " ".join(sys.argv), "machine": machine(), "sizes": {}}
    model = build(device, args.smoke)
    for label in args.sizes.split(","):
        size = (64, 48) if args.smoke else SIZES[label]
        call, tokens = block_call(model, size, device)
        res = out["sizes"].setdefault(label, {"tokens": tokens, "variants": {}})
        reference = None
        for variant_name in variants:
            variant = VARIANTS[variant_name]
            apply(model, variant)
            try:
                entry = measure(call, reference, 1 if args.smoke else args.repeats)
                reference = entry.pop("output") if reference is None else reference
            except Exception as error:  # noqa: BLE001 - a variant the GPU or cuDNN refuses is recorded, the rest run
                entry = {"error": f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"}
            undo(variant)
            entry.pop("output", None)
            res["variants"][variant_name] = entry
            print(label, variant_name, json.dumps(entry, indent=1), flush=True)
    if not args.smoke:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
