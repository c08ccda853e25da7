"""cuDNN's FP8 self-attention alone, at the 14B model's 480p and 720p shapes, with whichever cuDNN this process loaded
(issue 16: is a newer cuDNN's Hopper kernel faster? The device image's torch 2.11 ships cuDNN 9.19; the torch this
project pins, 2.14.1, ships 9.24; PyPI's newest is 9.28).

Run it once as is (torch's bundled cuDNN) and once with another cuDNN's libraries first on the loader's path; each
run appends one row to --out:
  python3 benchmarks/cudnn_fp8_attention_gpu.py --out $OUT/cudnn_fp8_attention_gpu.json
  L=/tmp/cudnn/nvidia/cudnn/lib; LD_LIBRARY_PATH=$L LD_PRELOAD=$L/libcudnn.so.9:$L/libcudnn_graph.so.9 \
    python3 benchmarks/cudnn_fp8_attention_gpu.py --cudnn-prefix /tmp/cudnn --out $OUT/cudnn_fp8_attention_gpu.json
(only libcudnn, libcudnn_graph and libcudnn_engines_runtime_compiled are needed for this graph: about 56 MB as
tar.xz). LD_PRELOAD gives torch the other cuDNN; --cudnn-prefix makes cudnn-frontend, which opens
`<site-packages>/nvidia/cudnn/lib/libcudnn.so.9` by path, open the same one. A "sustained" time is 40 calls back to
back, as in one step of the model, so a power-limited GPU shows it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import sysconfig
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from machine import machine  # noqa: E402
from upscale_gpu import gpu_ms  # noqa: E402

from spinbot.backends.attention import cudnn_fp8  # noqa: E402

SHAPES = {"480p": 21 * 30 * 52, "720p": 21 * 45 * 80}
HEADS, DIM, LAYERS = 40, 128, 40


def measure(tokens: int, device: torch.device) -> dict:
    gen = torch.Generator(device).manual_seed(3)
    q, k, v = (torch.randn(1, tokens, HEADS, DIM, generator=gen, device=device, dtype=torch.bfloat16) for _ in "qkv")
    with torch.inference_mode():
        got = cudnn_fp8.cudnn_fp8_attention(q, k, v)  # builds and times every plan once
        heads4 = [t[:, :, :4].transpose(1, 2).float() for t in (q, k, v)]
        ref = torch.nn.functional.scaled_dot_product_attention(*heads4).transpose(1, 2)
        err = float((got[:, :, :4].float() - ref).norm() / ref.norm())
        x = cudnn_fp8.quantize(q, k, v, cudnn_fp8.TOKEN_MULTIPLE)

        def kernel():
            return cudnn_fp8.run_cudnn(x.q, x.k, x.v, x.descale_q, x.descale_k, x.descale_v, x.scale_o, x.tokens)

        single = [gpu_ms(kernel, 1) for _ in range(5)]
        sustained = [gpu_ms(kernel, LAYERS) for _ in range(3)]
        # the same tensors head-major ([B, heads, L, D] in memory): does the layout change the kernel's time?
        hq, hk, hv = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (x.q, x.k, x.v))

        def head_major():
            return cudnn_fp8.run_cudnn(hq, hk, hv, x.descale_q, x.descale_k, x.descale_v, x.scale_o, x.tokens)

        plan_times = each_plan_sustained(x)
        same = bool(torch.equal(head_major().view(torch.uint8), kernel().view(torch.uint8)))
        sustained_head_major = [gpu_ms(head_major, LAYERS) for _ in range(3)]
    flops = 4.0 * tokens * tokens * HEADS * DIM
    best = min(sustained)
    return {
        "tokens": tokens,
        "rel_err_vs_float32": round(err, 5),
        "single_ms_median": round(statistics.median(single), 2),
        "sustained_ms_per_call": [round(t, 2) for t in sustained],
        "sustained_tflops": round(flops / best / 1e9, 1),
        "sustained_ms_per_call_head_major": [round(t, 2) for t in sustained_head_major],
        "head_major_output_equal": same,
        "each_plan_sustained_ms_on_random_inputs": plan_times,
        "plans": {
            str(key): value
            for key, value in cudnn_fp8.PLAN_TIMES.items()
            if key[1] in (tokens, tokens + (-tokens) % 128)
        },
    }


def each_plan_sustained(x: cudnn_fp8.Quantized) -> dict:
    """Every plan cuDNN offers for this shape, timed over LAYERS calls on these (random) inputs: the backend picks
    its plan on zeros, where the GPU draws less power, so the order on real data could differ."""
    plan = cudnn_fp8._plan(
        tuple(x.q.shape), tuple(x.k.shape), (x.q.stride(), x.k.stride(), x.v.stride()), (x.tokens, x.tokens), 0
    )
    times = {}
    for index in range(plan.graph.get_execution_plan_count()):
        try:
            plan.graph.build_plan_at_index(index)
            trial = dataclasses.replace(
                plan, index=index, workspace_bytes=plan.graph.get_workspace_size_plan_at_index(index)
            )
            args = (x.q, x.k, x.v, x.descale_q, x.descale_k, x.descale_v, x.scale_o)
            times[index] = round(gpu_ms(lambda trial=trial, args=args: cudnn_fp8._execute(trial, *args), LAYERS), 2)
        except Exception as error:  # noqa: BLE001 (a plan that does not build is reported, not fatal)
            times[index] = f"{type(error).__name__}: {str(error)[:120]}"
    return {"chosen_on_zeros": plan.index, "ms_per_call": times}


def import_cudnn_frontend(prefix: str | None):
    """cudnn-frontend, bound to the libcudnn under `prefix` (its nvidia/cudnn/lib) instead of site-packages'."""
    if prefix is None:
        import cudnn
    else:
        real = sysconfig.get_path
        sysconfig.get_path = lambda name, *a, **k: prefix if name == "purelib" else real(name, *a, **k)
        try:
            import cudnn
        finally:
            sysconfig.get_path = real
    return cudnn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="480p,720p")
    parser.add_argument("--cudnn-prefix", help="a folder holding nvidia/cudnn/lib of another cuDNN (see above)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    cudnn = import_cudnn_frontend(args.cudnn_prefix)
    device = torch.device("cuda")
    row = {
        "cudnn_version_torch": torch.backends.cudnn.version(),
        "cudnn_version_frontend": cudnn.backend_version(),
        "cudnn_frontend": cudnn.__version__,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(),
        "machine": machine(),
        "ld_preload": os.environ.get("LD_PRELOAD", ""),
        "sizes": {},
    }
    for label in args.sizes.split(","):
        row["sizes"][label] = measure(SHAPES[label], device)
        print(label, json.dumps(row["sizes"][label]), flush=True)
    rows = json.loads(args.out.read_text())["rows"] if args.out.exists() else []
    args.out.write_text(json.dumps({"command": " ".join(sys.argv), "rows": [*rows, row]}, indent=1) + "\n")


if __name__ == "__main__":
    main()
