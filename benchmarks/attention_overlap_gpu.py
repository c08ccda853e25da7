"""Can a block's per-token work hide behind cuDNN's FP8 self-attention on a second CUDA stream? (issue 16, 720p)

At 720p the self-attention (125-133 ms of a 175-185 ms block) runs at the GPU's power limit (docs/infinitetalk-notes.md
Step 4i), and everything after it in a block (output projection, cross-attentions, FFN) and the next block's
projections work token by token. So if the queries are split in two, the second half's attention could run while
the first half's per-token work runs beside it on another stream. Whether that saves time depends on how the GPU
shares its multiprocessors and its power between the two, which only a measurement tells. This measures, per
"block" (the mean over --blocks back to back, as in a step):
- the attention over all queries, and as two calls over two halves of the queries (the same keys);
- memory-bound work: LayerNorm + modulation + e4m3 quantization of [tokens, 5120] (one compiled kernel, as Inductor
  makes before each FP8 linear), --mem-calls times on half the tokens;
- FP8 matmuls: half the tokens through four 5120x5120 projections and the 5120 -> 13824 -> 5120 FFN;
- the halves' attention followed by that work on one stream, and the same with the work on a second stream
  started once the first half's attention is done (with the second stream at the default and at high priority).

Device command (torch and cudnn-frontend as benchmarks/infinitetalk_speed_gpu.py --help-wheels says):
  python3 benchmarks/attention_overlap_gpu.py --out $OUT/attention_overlap_gpu.json
Here: `python benchmarks/attention_overlap_gpu.py --smoke --out /tmp/overlap.json` runs every schedule at toy size on
the CPU (one stream, cuDNN's formats emulated), to check the code, not to time it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from machine import machine  # noqa: E402

from spinbot.backends.attention import cudnn_fp8  # noqa: E402

E4M3 = torch.float8_e4m3fn


@dataclass(frozen=True)
class Shape:
    tokens: int  # real tokens (21 latent frames x the patch grid)
    heads: int
    head_dim: int
    ffn: int

    @property
    def dim(self) -> int:
        return self.heads * self.head_dim


SHAPES = {"720p": Shape(21 * 45 * 80, 40, 128, 13824), "480p": Shape(21 * 30 * 52, 40, 128, 13824)}
SMOKE = Shape(300, 2, 64, 512)


class Work:
    """The inputs and the three kinds of work of one block at `shape`, on `device`."""

    def __init__(self, shape: Shape, device: torch.device, multiple: int):
        gen = torch.Generator(device).manual_seed(5)

        def randn(*size):
            return torch.randn(*size, generator=gen, device=device, dtype=torch.bfloat16)

        self.shape = shape
        qkv = [randn(1, shape.tokens, shape.heads, shape.head_dim) for _ in range(3)]
        self.x = cudnn_fp8.quantize(*qkv, multiple)
        padded = self.x.q.shape[1]
        # the first half's query rows: a multiple of `multiple`, so each half is a whole number of the kernel's tiles
        self.split = (padded // 2 + multiple - 1) // multiple * multiple
        half = self.split
        self.h = randn(half, shape.dim)
        self.modulation = randn(2, shape.dim) * 0.1
        self.h8 = self.h.to(E4M3)
        # weights at a real layer's scale (products of about unit size), column-major as _scaled_mm wants them
        self.square = [(randn(shape.dim, shape.dim) * 0.02).to(E4M3).t() for _ in range(4)]
        self.up = (randn(shape.ffn, shape.dim) * 0.02).to(E4M3).t()
        self.down = (randn(shape.dim, shape.ffn) * 0.01).to(E4M3).t()
        self.one = torch.ones((), device=device)
        self.normalize = torch.compile(_norm_modulate_quantize, dynamic=False) if device.type == "cuda" else None

    def attend(self, part: str) -> torch.Tensor:
        x = self.x
        q = {"all": x.q, "first": x.q[:, : self.split], "second": x.q[:, self.split :]}[part]
        real = {"all": x.tokens, "first": min(self.split, x.tokens), "second": x.tokens - self.split}[part]
        if q.is_cuda:
            return cudnn_fp8.run_cudnn(
                q, x.k, x.v, x.descale_q, x.descale_k, x.descale_v, x.scale_o, x.tokens, q_tokens=real
            )
        return cudnn_fp8.emulate(q, x.k, x.v, x.descale_q, x.descale_k, x.descale_v, x.scale_o, x.tokens)

    def memory_bound(self, calls: int) -> None:
        fn = self.normalize or _norm_modulate_quantize
        for _ in range(calls):
            fn(self.h, self.modulation)

    def matmuls(self) -> None:
        mm = _scaled_mm if self.h.is_cuda else _reference_mm
        for weight in self.square:
            mm(self.h8, weight, self.one)
        hidden = mm(self.h8, self.up, self.one)
        mm(hidden.to(E4M3), self.down, self.one)


def _norm_modulate_quantize(h: torch.Tensor, modulation: torch.Tensor) -> torch.Tensor:
    y = F.layer_norm(h.float(), h.shape[-1:]) * (1 + modulation[0].float()) + modulation[1].float()
    scale = y.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) / 448.0
    return (y / scale).to(E4M3)


def _scaled_mm(a: torch.Tensor, b: torch.Tensor, one: torch.Tensor) -> torch.Tensor:
    return torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16, use_fast_accum=True)


def _reference_mm(a: torch.Tensor, b: torch.Tensor, one: torch.Tensor) -> torch.Tensor:
    return (a.float() @ b.float()).to(torch.bfloat16)


class Schedules:
    """Each schedule is one block's work, as a function; `side` is the second stream (None on the CPU)."""

    def __init__(self, work: Work, mem_calls: int, side: torch.cuda.Stream | None):
        self.work, self.mem_calls, self.side = work, mem_calls, side

    def table(self) -> dict:
        w, n = self.work, self.mem_calls
        return {
            "attention_all": lambda: w.attend("all"),
            "attention_halves": lambda: (w.attend("first"), w.attend("second")),
            "memory_bound": lambda: w.memory_bound(n),
            "matmuls": w.matmuls,
            "halves_then_work_one_stream": lambda: (w.attend("first"), w.attend("second"), self._work()),
            "halves_with_work_beside": lambda: self._beside(self._work),
            "halves_with_memory_bound_beside": lambda: self._beside(lambda: w.memory_bound(n)),
            "halves_with_matmuls_beside": lambda: self._beside(w.matmuls),
        }

    def _work(self) -> None:
        self.work.memory_bound(self.mem_calls)
        self.work.matmuls()

    def _beside(self, fn) -> None:
        """The first half's attention, then the second half's on this stream while `fn` runs on the side stream."""
        self.work.attend("first")
        if self.side is None:
            self.work.attend("second")
            fn()
            return
        main = torch.cuda.current_stream()
        self.side.wait_stream(main)
        with torch.cuda.stream(self.side):
            fn()
        self.work.attend("second")
        main.wait_stream(self.side)


def per_block_ms(fn, blocks: int, repeats: int) -> list[float]:
    """Milliseconds per call of `fn` over `blocks` calls back to back, `repeats` times (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(blocks):
                fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / blocks)
        else:
            began = time.perf_counter()
            for _ in range(blocks):
                fn()
            times.append((time.perf_counter() - began) * 1000 / blocks)
    return [round(t, 3) for t in times]


def measure(shape: Shape, device: torch.device, args) -> dict:
    multiple = cudnn_fp8.TOKEN_MULTIPLE if device.type == "cuda" else 1
    work = Work(shape, device, multiple)
    with torch.inference_mode():
        check = _halves_equal_whole(work)
        rows: dict[str, dict] = {}
        priorities = ("default", "high") if device.type == "cuda" else ("none",)
        for priority in priorities:
            side = None
            if device.type == "cuda":
                side = torch.cuda.Stream(device, priority=-1 if priority == "high" else 0)
            for name, fn in Schedules(work, args.mem_calls, side).table().items():
                if priority == "high" and "beside" not in name:
                    continue
                times = per_block_ms(fn, args.blocks, args.repeats)
                key = name if priority != "high" else f"{name} (side stream high priority)"
                rows[key] = {"ms_per_block": times, "median": round(statistics.median(times), 3)}
                print(shape, key, rows[key], flush=True)
    return {"tokens": shape.tokens, "split": work.split, "halves_vs_whole_max_abs_diff": check, "schedules": rows}


def _halves_equal_whole(work: Work) -> float:
    """The two halves' outputs against the whole attention's (e4m3 values; the same numbers but for the kernel's
    tile order): the halves must be a faithful split, or the timing compares different work."""
    whole = work.attend("all").float()
    halves = torch.cat([work.attend("first"), work.attend("second")], dim=1).float()
    rows = work.x.tokens
    return round(float((whole[:, :rows] - halves[:, :rows]).abs().max()), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="720p")
    parser.add_argument("--blocks", type=int, default=20, help="blocks back to back per timing (a step has 40)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mem-calls", type=int, default=8, help="memory-bound kernels per block on half the tokens")
    parser.add_argument("--smoke", action="store_true", help="toy size on the CPU")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    device = torch.device("cpu" if args.smoke else "cuda")
    if args.smoke:
        args.blocks, args.repeats, args.mem_calls = 1, 1, 1
    shapes = {"smoke": SMOKE} if args.smoke else {label: SHAPES[label] for label in args.sizes.split(",")}
    result = {
        "command": " ".join(sys.argv),
        "machine": machine(),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "sizes": {label: measure(shape, device, args) for label, shape in shapes.items()},
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
