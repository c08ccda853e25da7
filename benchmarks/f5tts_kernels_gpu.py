"""Which kernels serve F5-TTS's batches fastest on the GPU (issue 6): attention over padded or packed chunks, and
the ConvPositionEmbedding's grouped convolution.

Device command (from the repository root, no wheels needed):
    PYTHONUNBUFFERED=1 python3 benchmarks/f5tts_kernels_gpu.py --out $OUT/f5tts_kernels_gpu.json
Then copy the file to benchmarks/results/f5tts_kernels_gpu.json.

The shapes are those of the f5tts_gpu benchmark's one batch: 4 chunks of 1,355 to 1,884 frames (the 9.96 s
reference plus each chunk), doubled by classifier-free guidance to 8 rows padded to 1,884 frames; 16 heads of 64,
float16. Each variant computes the attention of every row over its own frames only (padding excluded) and is
checked against a float32 reference on the real frames before it is timed. "packed" variants hold only the real
frames, back to back ([frames, heads, head_dim], as a projection makes them), with one sequence per row. Time per
call (one DiT block's attention), median of 50 after 10 warm-ups (convolutions: of 30), and the share of one job
(22 blocks x 32 steps).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from machine import machine  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "f5tts_kernels_gpu.json"
COMMAND = "PYTHONUNBUFFERED=1 python3 benchmarks/f5tts_kernels_gpu.py --out $OUT/f5tts_kernels_gpu.json"
LENGTHS = [1355, 1631, 1727, 1884]
HEADS, HEAD_DIM = 16, 64
CALLS_PER_JOB = 22 * 32


def main() -> None:
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    dev = torch.device("cuda")
    lengths = LENGTHS * 2  # [cond rows, uncond rows]
    rows, frames = len(lengths), max(lengths)
    torch.manual_seed(0)
    q, k, v = (torch.randn(rows, HEADS, frames, HEAD_DIM, device=dev, dtype=torch.float16) for _ in range(3))
    mask = torch.arange(frames, device=dev)[None] < torch.tensor(lengths, device=dev)[:, None]
    bias = torch.zeros(rows, 1, 1, frames, dtype=torch.float16, device=dev).masked_fill(
        ~mask[:, None, None], float("-inf")
    )

    def per_sample(backend):
        def run():
            out = torch.zeros_like(q)
            with sdpa_kernel(backend):
                for i, n in enumerate(lengths):
                    out[i : i + 1, :, :n] = F.scaled_dot_product_attention(
                        q[i : i + 1, :, :n], k[i : i + 1, :, :n], v[i : i + 1, :, :n]
                    )
            return out

        return run

    def batched_bias(backend):
        def run():
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)

        return run

    def varlen_flash():
        # the rows packed back to back; each row's padding is a sequence of its own (its output is discarded)
        bounds = []
        for i, n in enumerate(lengths):
            bounds += [i * frames + n, (i + 1) * frames]
        cu = torch.tensor([0] + bounds, device=dev, dtype=torch.int32).unique_consecutive()

        # packed as the projections make them ([rows x frames, heads, head_dim]: no transposes in a real block)
        packed = [t.transpose(1, 2).reshape(rows * frames, HEADS, HEAD_DIM) for t in (q, k, v)]

        def run():
            out = torch.ops.aten._flash_attention_forward(*packed, cu, cu, frames, frames, 0.0, False, False)[0]
            return out.view(rows, frames, HEADS, HEAD_DIM).transpose(1, 2)

        return run

    def flex():
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        lens = torch.tensor(lengths, device=dev)

        def keep(b, h, qi, ki):
            return (qi < lens[b]) & (ki < lens[b])

        block_mask = create_block_mask(keep, rows, None, frames, frames, device=dev)
        compiled = torch.compile(flex_attention, dynamic=False)

        def run():
            return compiled(q, k, v, block_mask=block_mask)

        return run

    def fa4(flash2):
        """The packed rows through FlashAttention 4's varlen forward (flash-attn-4, CuTe DSL kernels)."""
        from flash_attn.cute.interface import flash_attn_varlen_func

        flat, cu = flash2.flat, flash2.cu

        def run():
            out = flash_attn_varlen_func(
                *flat, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=frames, max_seqlen_k=frames
            )
            return out[0] if isinstance(out, tuple) else out

        run.unpack = flash2.unpack
        return run

    def packed(kind):
        starts = [i * frames for i in range(rows)]
        index = torch.cat([torch.arange(s, s + n, device=dev) for s, n in zip(starts, lengths)])
        cu = torch.tensor([0] + list(itertools.accumulate(lengths)), device=dev, dtype=torch.int32)
        flat = [t.transpose(1, 2).reshape(rows * frames, HEADS, HEAD_DIM)[index] for t in (q, k, v)]

        def unpack(out):
            full = torch.zeros(rows * frames, HEADS, HEAD_DIM, device=dev, dtype=out.dtype)
            full[index] = out
            return full.view(rows, frames, HEADS, HEAD_DIM).transpose(1, 2)

        def run():
            if kind == "flash":
                out = torch.ops.aten._flash_attention_forward(*flat, cu, cu, frames, frames, 0.0, False, False)[0]
            else:
                out = torch.ops.aten._cudnn_attention_forward(*flat, None, cu, cu, frames, frames, False)[0]
            return out

        run.unpack, run.flat, run.cu = unpack, flat, cu
        return run

    variants = {
        "packed_varlen_flash": packed("flash"),
        "packed_varlen_cudnn": packed("cudnn"),
        "per_sample_flash": per_sample(SDPBackend.FLASH_ATTENTION),
        "per_sample_cudnn": per_sample(SDPBackend.CUDNN_ATTENTION),
        "per_sample_efficient": per_sample(SDPBackend.EFFICIENT_ATTENTION),
        "batched_bias_cudnn": batched_bias(SDPBackend.CUDNN_ATTENTION),
        "batched_bias_efficient": batched_bias(SDPBackend.EFFICIENT_ATTENTION),
        "varlen_flash": varlen_flash(),
        "flex_block_mask": flex(),
    }
    truth = torch.zeros(rows, HEADS, frames, HEAD_DIM, device=dev)
    for i, n in enumerate(lengths):
        truth[i, :, :n] = F.scaled_dot_product_attention(q[i, :, :n].float(), k[i, :, :n].float(), v[i, :, :n].float())
    flops = sum(4 * n * n * HEAD_DIM * HEADS for n in lengths)
    results: dict = {
        "benchmark": "f5tts_kernels_gpu",
        "date": date.today().isoformat(),
        "command": COMMAND,
        "machine": machine(),
        "torch": torch.__version__,
        "lengths": lengths,
        "heads": HEADS,
        "head_dim": HEAD_DIM,
        "dtype": "float16",
        "useful_tflop_per_call": round(flops / 1e12, 4),
        "variants": {},
    }
    try:
        variants["packed_varlen_fa4"] = fa4(variants["packed_varlen_flash"])
    except ImportError as exc:
        print("no FlashAttention 4:", exc)
    for name, run in variants.items():
        try:
            out = run()
            out = run.unpack(out) if hasattr(run, "unpack") else out
            err = max(float((out[i, :, :n].float() - truth[i, :, :n]).abs().max()) for i, n in enumerate(lengths))
            ms = median_ms(run, timed=50)
            results["variants"][name] = {
                "ms_per_call": round(ms, 4),
                "max_abs_error": round(err, 5),
                "useful_tflops": round(flops / ms / 1e9, 1),
                "seconds_per_job": round(ms * CALLS_PER_JOB / 1e3, 4),
            }
        except Exception as exc:  # noqa: BLE001 - a kernel that does not take these inputs is a finding, not a stop
            results["variants"][name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        print(name, results["variants"][name], flush=True)
    results["in_graph"] = compiled_varlen_check(dev)
    print("in_graph", results["in_graph"], flush=True)
    results["conv"] = conv_variants(dev, rows, frames)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


def median_ms(fn, timed: int, warmup: int = 10) -> float:
    """Median CUDA-event milliseconds of `timed` calls of fn() after `warmup` calls."""
    import torch

    times = []
    for j in range(warmup + timed):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        if j >= warmup:
            times.append(start.elapsed_time(end))
    return statistics.median(times)


def compiled_varlen_check(dev) -> dict:
    """Does the varlen flash call compile into one graph (fullgraph=True) with its offsets made on the GPU?"""
    import torch

    def attend(q, k, v, lengths):
        cu = torch.nn.functional.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))
        return (
            torch.ops.aten._flash_attention_forward(q, k, v, cu, cu, q.shape[0], q.shape[0], 0.0, False, False)[0] * 2.0
        )

    try:
        fn = torch.compile(attend, fullgraph=True, dynamic=True)
        for total in (3000, 3100):
            q = torch.randn(total, HEADS, HEAD_DIM, device=dev, dtype=torch.float16)
            lengths = torch.tensor([total // 2, total - total // 2], device=dev)
            out = fn(q, q, q, lengths)
        ref = torch.nn.functional.scaled_dot_product_attention(*(q[None, : total // 2].transpose(1, 2),) * 3)
        err = float((out[: total // 2] - 2.0 * ref[0].transpose(0, 1)).abs().max())
        return {"fullgraph": True, "max_abs_error": round(err, 5)}
    except Exception as exc:  # noqa: BLE001
        return {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}


def conv_variants(dev, rows: int, frames: int) -> dict:
    """ConvPositionEmbedding's Conv1d(1024, 1024, 31, groups=16, padding=15), float16, on one CFG half:
    [chunks, 1024, frames]."""
    import torch

    conv = torch.nn.Conv1d(1024, 1024, 31, groups=16, padding=15).to(dev, torch.float16)
    x = torch.randn(rows // 2, frames, 1024, device=dev, dtype=torch.float16)
    weight4 = conv.weight[:, :, None, :]

    def as_package():  # the package's layout: [b, n, d] -> permute -> conv1d -> permute back
        return conv(x.permute(0, 2, 1)).permute(0, 2, 1)

    def channels_last():  # the same conv as a 2-D one in NHWC memory: no layout transposes for cuDNN
        x4 = x.permute(0, 2, 1)[:, :, None, :]  # [b, d, 1, n] whose memory is already b, n, d (channels last)
        out = torch.nn.functional.conv2d(x4, weight4, conv.bias, padding=(0, 15), groups=16)
        return out[:, :, 0, :].permute(0, 2, 1)

    compiled = torch.compile(as_package)
    sys.path.insert(0, str(ROOT))
    from spinbot.backends.tts.f5.grouped_conv import grouped_conv_mish, tap_major_weight

    keep = torch.ones(x.shape[:2], dtype=torch.bool, device=dev)
    tap_major = tap_major_weight(conv)

    def triton_kernel():  # grouped_conv.py without the Mish (compared with the bare convolution here)
        return grouped_conv_mish(x, tap_major, conv.bias, keep, mish=False)

    truth = torch.nn.functional.conv1d(
        x.permute(0, 2, 1).float(), conv.weight.float(), conv.bias.float(), padding=15, groups=16
    ).permute(0, 2, 1)
    out: dict = {}
    for name, fn, bench in (
        ("package_layout", as_package, False),
        ("package_layout_cudnn_benchmark", as_package, True),
        ("channels_last_2d", channels_last, False),
        ("channels_last_2d_cudnn_benchmark", channels_last, True),
        ("inductor", compiled, True),
        ("spinbot_triton_kernel", triton_kernel, False),
    ):
        torch.backends.cudnn.benchmark = bench
        try:
            err = float((fn().float() - truth).abs().max())
            ms = median_ms(fn, timed=30)
            out[name] = {
                "ms_per_call": round(ms, 4),
                "max_abs_error": round(err, 4),
                "seconds_per_job": round(ms * 4 * 32 / 1e3, 4),
            }
        except Exception as exc:  # noqa: BLE001
            out[name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        print("conv", name, out[name], flush=True)
    torch.backends.cudnn.benchmark = False
    out["note"] = "seconds_per_job: 4 such convolutions a step (2 layers, cond and uncond embeddings) x 32 steps"
    return out


if __name__ == "__main__":
    main()
