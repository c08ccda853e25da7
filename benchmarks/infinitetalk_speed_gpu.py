"""InfiniteTalk's speed options on one GPU (issue 16), each option's error beside its speed: 8-bit self-attention
(SPINBOT_TALK_ATTENTION), FP8 linears (SPINBOT_TALK_FP8) and both, the VAE per window, torch.compile modes, the
first window's recompiles, 720p. 14B architecture with random weights built on the GPU, 81 frames, seed defaults
(dpm++_sde, 6 steps, one pass a step).

(Past 400 lines: one device run builds the 14B model once and every part measures it, so the parts, their
shared timing helpers and the summary live in the one script the device command runs.)

Device commands, from the repository root (the wheels the device lacks travel in .whl, see --help-wheels; each run
builds the model again and stops starting new parts once its time budget, --budget-s, is spent):
  run 1: python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site && PYTHONUNBUFFERED=1 python3 benchmarks/infinitetalk_speed_gpu.py --parts kernels,vae,matrix --out $OUT/infinitetalk_speed_gpu.json
  run 2: (the same with) --parts errors,720p,modes --out $OUT/infinitetalk_speed_gpu_2.json
Copy the JSON files to benchmarks/results/. `--official third_party/InfiniteTalk` (carried) adds the official forward
to the matrix. Here: `python benchmarks/infinitetalk_speed_gpu.py --smoke` runs every part at toy size on the CPU.

Parts:
- kernels: self-attention alone at 480p / 720p shapes (40 heads x 128): cuDNN and flash SDPA, our 8-bit Triton
  kernel (INT8 and FP8 Q K^T, every autotuner configuration timed), the quantization's own cost, cuDNN's FP8
  attention (padded and ragged, its plans); error against a float32 reference on Gaussian q, k, v and on "offset"
  inputs (per-channel key offsets and channel gains before RoPE, as trained DiTs have); bf16 and FP8 matmul rates at
  the DiT's shapes (the FLOP floors).
- vae: decode of one 81-frame window and encode of its 25 motion frames: float32, bfloat16, channels-last, compiled
  norms (WanVAE.speed_up), time and error against float32; the Lab colour transfer; the decode's top kernels.
- matrix (480p): for bf16 / FP8 linears (fp8fast: with fast accumulation) x SDPA / INT8 / FP8 / cuDNN FP8 attention:
  the compiled forward (compile time, step time, error against the bf16 + SDPA forward at t = 900, peak memory)
  and, for four of them, the backend's render() of a whole window (steps, VAE, colour) with torch's recompile log
  captured; the FLOP floor; optional official code.
- errors (416x240, eager): the forward's error against bf16 + SDPA at the 6 timesteps of the seed's sampler, and
  the decoded window's error, for every configuration, on random weights and on "structured" weights (see
  structured_weights: heavy tails and outlier channels modelled on what is reported for trained DiTs; not the
  real checkpoint's values, which are not at hand).
- 720p: one step for bf16 + SDPA and the candidate (FP8 linears + cuDNN FP8 attention), or for each of --configs,
  and one window of the candidate.
- modes: the candidate compiled with mode="reduce-overhead" (CUDA graphs) and "max-autotune-no-cudagraphs".

One file of about 880 lines: a benchmark harness whose parts share the model, its FP8 copies and the results.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import time
import traceback
from contextlib import contextmanager
from datetime import date
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from infinitetalk_gpu import (  # noqa: E402
    SIZES,
    forward_flops,
    inputs,
    make_window_state,
    matmul_rate,
    peak_gib,
    random_model,
    random_vae,
    reset_peak,
    seed_default_params,
    sync,
    timed,
    window_run,
)
from machine import machine  # noqa: E402

from spinbot.backends.attention import select_attention  # noqa: E402
from spinbot.backends.fp8 import INFINITETALK_LINEARS, FP8FeedForward, FP8Linear  # noqa: E402
from spinbot.backends.talk.infinitetalk.model import (  # noqa: E402
    InfiniteTalkConfig,
    InfiniteTalkModel,
    LayerNorm,
    RMSNorm,
    apply_rope,
    rope_tables,
)

PARTS = ("kernels", "vae", "matrix", "errors", "720p", "modes")
# (linears, attention); the first is every error's reference, the second the candidate for the defaults
CONFIGS = [
    ("bf16", "sdpa"),
    ("fp8fast", "cudnn-fp8"),  # FP8 linears with the matmul's fast accumulation (what SPINBOT_TALK_FP8 runs)
    ("fp8", "cudnn-fp8"),  # FP8 linears accumulating exactly
    ("bf16", "int8"),
    ("bf16", "cudnn-fp8"),
    ("fp8", "int8"),
    ("fp8", "sdpa"),
    ("bf16", "fp8"),
    ("fp8", "fp8"),
]
WINDOWED = [CONFIGS[i] for i in (0, 1, 3, 4)]
CANDIDATE = CONFIGS[1]
ERROR_SIZE = (416, 240)
WHEELS = "diffusers==0.42.1 importlib_metadata==10.2.0 soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 soxr==1.1.0"
SMOKE_SIZE = (64, 48)


class Scale:
    """The run's sizes: the real ones, or toy ones for --smoke (CPU, 9-frame windows)."""

    def __init__(self, smoke: bool):
        self.smoke = smoke
        self.latent_frames = 3 if smoke else 21
        self.params = window_params(9, 5) if smoke else None  # None: the seed's defaults (81 frames, 25 motion)

    def size(self, label: str) -> tuple[int, int]:
        return SMOKE_SIZE if self.smoke else SIZES[label]

    def inputs(self, cfg: InfiniteTalkConfig, label_or_size, device: torch.device) -> dict:
        size = self.size(label_or_size) if isinstance(label_or_size, str) else label_or_size
        batch = inputs(cfg, size, 1, device)
        if self.smoke:  # 3 latent frames (9 video frames)
            batch = {k: v[:, :, :3] if k in ("x", "y") else v[:, :9] if k == "audio" else v for k, v in batch.items()}
        return batch


def window_params(frames: int, motion: int):
    import types

    params = seed_default_params()
    fields = {
        k: getattr(params, k)
        for k in (
            "sampling_scheduler",
            "sampling_steps",
            "sampling_cfg",
            "audio_cfg_scale",
            "audio_scale",
            "sampling_shift",
            "color_correction",
        )
    }
    return types.SimpleNamespace(**fields, frame_window_size=frames, motion_frame=motion, source="smoke")


def name(config: tuple[str, str]) -> str:
    return f"{config[0]}+{config[1]}"


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    got, expected = got.float().cpu(), expected.float().cpu()
    return float((got - expected).norm() / expected.norm())


class Budget:
    """Seconds left for this run; a part that would not fit is skipped and said so in the results."""

    def __init__(self, seconds: float, out: dict):
        self.end, self.out = time.perf_counter() + seconds, out

    def left(self) -> float:
        return self.end - time.perf_counter()

    def allows(self, cost: float, what: str) -> bool:
        if self.left() >= cost:
            return True
        self.out.setdefault("skipped", []).append(f"{what}: needs about {cost:.0f} s, {self.left():.0f} s left")
        print("skipped:", self.out["skipped"][-1], flush=True)
        return False


@contextmanager
def guarded(out: dict, key: str):
    """Run a measurement; an exception is recorded under `key` (one line) and the run goes on."""
    try:
        yield
    except Exception as error:  # noqa: BLE001 (a benchmark reports what failed and goes on)
        out[key] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:400]
        traceback.print_exc()


def cuda_ms(fn, repeats: int = 5, warmup: int = 1) -> float:
    """Median milliseconds of fn() between CUDA events (wall clock on the CPU)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop))
        else:
            began = time.perf_counter()
            fn()
            times.append((time.perf_counter() - began) * 1e3)
    return round(statistics.median(times), 3)


@contextmanager
def recompiles():
    """torch's recompile log (TORCH_LOGS=recompiles) captured: yields the list the messages are added to."""
    found: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if message.startswith("Recompiling"):
                found.append(message.splitlines()[0] + " | " + " ".join(message.splitlines()[1:3]).strip())

    torch._logging.set_logs(recompiles=True)
    handler = Catch()
    logging.getLogger("torch._dynamo").addHandler(handler)
    try:
        yield found
    finally:
        logging.getLogger("torch._dynamo").removeHandler(handler)
        torch._logging.set_logs()


# ---- the model's options --------------------------------------------------------------------------------------------


class Linears:
    """The blocks' big linears and their FP8 copies, swapped in place (both stay resident: 35 + 14 GiB at 14B); with
    FP8 each block's FFN runs as FP8FeedForward (the fused GELU quantization), as use_fp8 sets it up."""

    def __init__(self, model: InfiniteTalkModel):
        self.slots = []
        self.blocks = list(model.blocks)
        self.ffns = [block.ffn for block in self.blocks]  # the original Sequential(Linear, GELU, Linear)
        for block in model.blocks:
            for path in INFINITETALK_LINEARS:
                parent_path, _, attr = path.rpartition(".")
                parent = block.get_submodule(parent_path)
                self.slots.append([parent, attr, getattr(parent, attr), None])
        self.requantize()

    def requantize(self) -> None:
        for slot in self.slots:
            slot[3] = FP8Linear(slot[2])

    def use(self, fp8: bool, fast_accum: bool = False) -> None:
        for slot in self.slots:
            slot[3].fast_accum = fast_accum
        for block, ffn in zip(self.blocks, self.ffns):
            block.ffn = ffn
        for parent, attr, linear, quantized in self.slots:
            setattr(parent, attr, quantized if fp8 else linear)
        if fp8:
            for block, ffn in zip(self.blocks, self.ffns):
                block.ffn = FP8FeedForward(*ffn)

    def fp8_gib(self) -> float:
        return round(sum(s[3].weight.numel() for s in self.slots) / 2**30, 2)


def configure(model: InfiniteTalkModel, linears: Linears, config: tuple[str, str], device: torch.device) -> None:
    torch._dynamo.reset()  # a new graph per configuration; the old ones freed, no recompile limit reached
    linears.use(config[0].startswith("fp8"), fast_accum=config[0] == "fp8fast")
    model.use_attention(select_attention(config[1], device))


def structured_weights(model: InfiniteTalkModel, seed: int = 5) -> dict:
    """Weights with the statistics that change 8-bit error, instead of i.i.d. Gaussians. Not the real checkpoint's
    values (not at hand): per-tensor std is the official init's (xavier for every linear, Wan's init_weights), with
    the structure reported for trained DiTs layered on top. Returns the recipe, recorded with the results."""
    gen = torch.Generator(model.patch_embedding.weight.device).manual_seed(seed)
    norms = {n for n, m in model.named_modules() if isinstance(m, (RMSNorm, LayerNorm))}

    def normal(p: torch.Tensor, std: float) -> torch.Tensor:
        return torch.randn(p.shape, generator=gen, device=p.device) * std

    with torch.no_grad():
        for param_name, p in model.named_parameters():
            module = param_name.rsplit(".", 1)[0]
            if module in norms and param_name.endswith("weight"):
                qk = any(s in module for s in ("norm_q", "norm_k"))
                value = torch.exp(normal(p, 0.5)) if qk else 1.0 + normal(p, 0.2)
            elif module in norms:
                value = normal(p, 0.1)
            elif param_name.endswith("modulation"):
                value = normal(p, 0.5)
            elif param_name.endswith("bias"):
                std = 1.0 if module.endswith("self_attn.k") else 0.5 if module.endswith("self_attn.v") else 0.05
                value = normal(p, std)
                if param_name == "patch_embedding.bias":  # a few massive residual channels
                    value[:4] = 30.0
            else:  # a Gaussian scale mixture: excess kurtosis about 5, std of xavier init
                fan_in, fan_out = p[0].numel(), p.shape[0]
                scale = torch.exp(0.5 * normal(p, 1.0)) / math.exp(0.25)
                value = normal(p, math.sqrt(2.0 / (fan_in + fan_out))) * scale
            p.copy_(value.to(p.dtype))
    return {
        "linear_weights": "N(0, xavier std) x exp(N(0,1)/2) / e^0.25 (excess kurtosis ~5)",
        "qk_rms_norm_gains": "exp(N(0, 0.5))",
        "layer_norm_gains": "1 + N(0, 0.2)",
        "norm_biases": "N(0, 0.1)",
        "modulation": "N(0, 0.5)",
        "self_attn.k bias": "N(0, 1) (per-channel key offsets)",
        "self_attn.v bias": "N(0, 0.5)",
        "other biases": "N(0, 0.05)",
        "patch_embedding.bias": "4 channels at 30 (massive residual activations)",
    }


# ---- parts ----------------------------------------------------------------------------------------------------------


def attention_inputs(
    tokens: int, grid: tuple[int, int, int], kind: str, device: torch.device, heads: int = 40, dim: int = 128
):
    """q, k, v [1, L, heads, dim] bfloat16 after RoPE: Gaussian, or with per-channel gains and key offsets."""
    gen = torch.Generator(device).manual_seed(11)
    q, k, v = (torch.randn(1, tokens, heads, dim, generator=gen, device=device) for _ in range(3))
    if kind == "offsets":
        gains = torch.exp(torch.randn(heads, dim, generator=gen, device=device) * 0.5)
        q, k = q * gains, (k + 2.0 * torch.randn(heads, dim, generator=gen, device=device)) * gains
        v = v + torch.randn(heads, dim, generator=gen, device=device)
    rope = rope_tables(dim, grid, device)
    return apply_rope(q, rope).bfloat16(), apply_rope(k, rope).bfloat16(), v.bfloat16()


def kernels_part(out: dict, budget: Budget, device: torch.device, labels: list[str], scale: Scale) -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from spinbot.backends.attention import cudnn_fp8, eight_bit
    from spinbot.backends.attention.sdpa import sdpa_attention

    res = out.setdefault("kernels", {})
    variants = {
        "sdpa_cudnn": (sdpa_attention, [SDPBackend.CUDNN_ATTENTION]),
        "sdpa_flash": (sdpa_attention, [SDPBackend.FLASH_ATTENTION]),
        "int8": (eight_bit.int8_attention, None),
        "fp8": (eight_bit.fp8_attention, None),
        "cudnn_fp8": (cudnn_fp8.cudnn_fp8_attention, None),
    }
    for label in labels:
        if not budget.allows(60, f"kernels {label}"):
            continue
        width, height = scale.size(label)
        grid = (scale.latent_frames, height // 16, width // 16)
        tokens, heads = math.prod(grid), 2 if scale.smoke else 40
        row = res.setdefault(label, {"tokens": tokens, "heads": heads})
        for kind in ("gaussian", "offsets"):
            q, k, v = attention_inputs(tokens, grid, kind, device, heads)
            with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]):
                reference = sdpa_attention(q[:, :, :4].float(), k[:, :, :4].float(), v[:, :, :4].float())
            for variant, (fn, backends) in variants.items():
                entry = row.setdefault(variant, {})
                with guarded(entry, "error"), torch.inference_mode():
                    time_attention(entry, kind, partial(call_attention, fn, backends, q, k, v), reference)
            if kind == "gaussian" and device.type == "cuda":
                with guarded(row["cudnn_fp8"], "kernel_error"), torch.inference_mode():
                    time_cudnn_fp8(row["cudnn_fp8"], q, k, v)
                for qk_format in ("int8", "fp8"):
                    with guarded(row[qk_format], "configs_error"), torch.inference_mode():
                        time_kernel_configs(row[qk_format], q, k, v, qk_format, reference)
            del q, k, v
        if device.type == "cuda":
            torch.cuda.empty_cache()
        print("kernels", label, json.dumps(row), flush=True)
    if device.type == "cuda" and budget.allows(15, "fp8 matmul rate"):
        out["fp8_matmul_tflops"] = fp8_rate(device, out["tokens_480p"], InfiniteTalkConfig())


def call_attention(fn, backends, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    if backends is None:
        return fn(q, k, v)
    from torch.nn.attention import sdpa_kernel

    with sdpa_kernel(backends):
        return fn(q, k, v)


def time_attention(entry: dict, kind: str, call, reference: torch.Tensor) -> None:
    """Error of the first 4 heads against float32; time and TFLOP/s on the Gaussian inputs (the first call autotunes
    the 8-bit kernel)."""
    got = call()
    entry[f"rel_err_{kind}"] = relative_error(got[:, :, :4], reference)
    if kind == "gaussian":
        batch, tokens, heads, dim = got.shape
        entry["ms"] = cuda_ms(call)
        entry["tflops"] = round(4.0 * batch * tokens * tokens * heads * dim / entry["ms"] / 1e9, 1)


def time_kernel_configs(
    entry: dict, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, qk_format: str, reference: torch.Tensor
) -> None:
    """The 8-bit kernel alone (tuned, then every configuration the autotuner may pick: its time and its error on the
    first 4 heads against float32) and the quantization."""
    from spinbot.backends.attention import eight_bit
    from spinbot.backends.attention import eight_bit_kernel as kernels

    x = eight_bit.quantize(q, k, v, qk_format)
    entry["quantize_ms_eager"] = cuda_ms(partial(eight_bit.quantize, q, k, v, qk_format))
    entry["kernel_ms_tuned"] = cuda_ms(partial(eight_bit.launch, x))  # Hopper: the pinned configuration
    entry["chosen_config"] = kernel_choice()
    entry["configs_ms"], entry["configs_rel_err"] = {}, {}
    for config in kernels.GPU_CONFIGS:
        kw = config.all_kwargs()
        key = "m{BLOCK_M}n{BLOCK_N}w{num_warps}s{num_stages}".format(**kw)
        try:
            entry["configs_ms"][key] = cuda_ms(partial(eight_bit.launch, x, config=kw), 3)
            got = eight_bit.launch(x, q.dtype, config=kw)
            entry["configs_rel_err"][key] = round(relative_error(got[:, :, :4], reference), 5)
        except Exception as error:  # noqa: BLE001 (a configuration that fails here is reported, not fatal)
            entry["configs_ms"][key] = f"{type(error).__name__}: {str(error)[:120]}"


def time_cudnn_fp8(entry: dict, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """cuDNN's FP8 attention alone on tokens padded to its TOKEN_MULTIPLE (masked) and on the ragged length, its
    quantization, the whole function compiled, and the plans cuDNN offered (time on zero inputs, the chosen one)."""
    from spinbot.backends.attention import cudnn_fp8

    for key, multiple in (("kernel_ms_padded", cudnn_fp8.TOKEN_MULTIPLE), ("kernel_ms_ragged", 1)):
        x = cudnn_fp8.quantize(q, k, v, multiple)
        args = (x.q, x.k, x.v, x.descale_q, x.descale_k, x.descale_v, x.scale_o, x.tokens)
        entry[key] = cuda_ms(partial(cudnn_fp8.run_cudnn, *args))
    entry["quantize_ms_eager"] = cuda_ms(partial(cudnn_fp8.quantize, q, k, v, cudnn_fp8.TOKEN_MULTIPLE))
    entry["total_ms_compiled"] = cuda_ms(partial(torch.compile(cudnn_fp8.cudnn_fp8_attention), q, k, v))
    entry["plans"] = {str(shape): times for shape, times in cudnn_fp8.PLAN_TIMES.items()}
    entry["chosen_config"] = kernel_choice("cudnn-fp8")


def fp8_rate(device: torch.device, tokens: int, cfg: InfiniteTalkConfig) -> dict:
    """e4m3 TFLOP/s (torch._scaled_mm, row-wise scales, bf16 out) at the DiT's shapes: the FP8 floor's rate."""
    rates = {}
    for label, (m, k, n) in {
        "tokens_x_dim_x_dim": (tokens, cfg.dim, cfg.dim),
        "tokens_x_dim_x_ffn": (tokens, cfg.dim, cfg.ffn_dim),
    }.items():
        a = torch.randn(m, k, device=device).to(torch.float8_e4m3fn)
        b = torch.randn(n, k, device=device).to(torch.float8_e4m3fn)
        sa, sb = torch.ones(m, 1, device=device), torch.ones(1, n, device=device)
        ms = cuda_ms(partial(torch._scaled_mm, a, b.T, scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16), 10, 3)
        rates[label] = round(2 * m * k * n / ms / 1e9, 1)
    rates["best"] = max(rates.values())
    return rates


def vae_part(out: dict, budget: Budget, device: torch.device, scale: Scale) -> None:
    from spinbot.backends.talk.infinitetalk.color import match_colors, reference_stats

    res = out.setdefault("vae", {})
    width, height = scale.size("480p")
    base = {"base_dim": 8} if scale.smoke else {}
    gen = torch.Generator(device).manual_seed(4)
    latent = torch.randn(1, 16, scale.latent_frames, height // 8, width // 8, generator=gen, device=device)
    motion_frames = 5 if scale.smoke else 25
    motion = torch.rand(1, 3, motion_frames, height, width, generator=gen, device=device) * 2 - 1
    torch.manual_seed(0)
    reference_vae = random_vae(device, torch.float32, **base)
    state = reference_vae.state_dict()
    variants = {
        "float32": (torch.float32, False, False),
        "bf16": (torch.bfloat16, False, False),
        "bf16_channels_last": (torch.bfloat16, True, False),
        "bf16_channels_last_compiled_norms": (torch.bfloat16, True, True),
    }
    expected = {}
    for variant, (dtype, channels_last, compiled) in variants.items():
        if not budget.allows(45 if compiled else 20, f"vae {variant}"):
            continue
        entry = res.setdefault(variant, {})
        with guarded(entry, "error"), torch.inference_mode():
            vae = reference_vae if dtype == torch.float32 else random_vae(device, dtype, **base)
            vae.load_state_dict(state)
            vae.speed_up(channels_last=channels_last, compile_norms=compiled) if (channels_last or compiled) else None
            reset_peak()
            started = time.perf_counter()
            decoded, encoded = vae.decode(latent), vae.encode(motion)
            sync()
            entry["first_call_s"] = round(time.perf_counter() - started, 2)  # compiles here
            entry["decode_s"] = timed(partial(vae.decode, latent), 2, 0)["min_s"]
            entry["encode_motion_s"] = timed(partial(vae.encode, motion), 2, 0)["min_s"]
            entry["peak_vram_gib"] = peak_gib()
            if variant == "float32":
                expected = {"decode": decoded.cpu(), "encode": encoded.cpu()}
            else:
                entry["decode_rel_err_vs_float32"] = relative_error(decoded, expected["decode"])
                entry["encode_rel_err_vs_float32"] = relative_error(encoded, expected["encode"])
            if compiled:
                frames = (decoded[0].permute(1, 2, 3, 0) + 1.0) / 2.0
                stats = reference_stats(frames[0])
                res["color_transfer_s"] = timed(partial(match_colors, frames, stats), 2, 1)["min_s"]
                res["top_kernels_decode"] = top_kernels(partial(vae.decode, latent))
            del vae
        print("vae", variant, entry, flush=True)


def top_kernels(fn, count: int = 8) -> list[str]:
    """The `count` kernels with the most CUDA time in one call of fn (torch.profiler)."""
    if not torch.cuda.is_available():
        return []
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        sync()
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, "device_time_total", 0), reverse=True)
    total = sum(getattr(e, "device_time_total", 0) for e in events) / 1e3
    return [f"all kernels: {total:.1f} ms"] + [
        f"{e.key[:90]}: {getattr(e, 'device_time_total', 0) / 1e3:.1f} ms x{e.count}" for e in events[:count]
    ]


def matrix_part(
    out: dict, budget: Budget, model, linears: Linears, vae, device: torch.device, official, scale: Scale, configs: list
) -> None:
    cfg = model.config
    size = scale.size("480p")
    res = out.setdefault("matrix", {"size": f"{size[0]}x{size[1]}", "configs": {}})
    one = scale.inputs(cfg, size, device)
    flops = forward_flops(cfg, model.token_grid(one["x"].shape))
    res["forward_tflop"] = round(flops["total"] / 1e12, 1)
    res["attention_share"] = round(flops["attention"] / flops["total"], 3)
    bf16_rate, fp8 = out["matmul_tflops"]["best"], out.get("fp8_matmul_tflops", {}).get("best")
    res["floor_bf16_s"] = round(flops["total"] / (bf16_rate * 1e12), 3)
    if fp8:
        res["floor_fp8_s"] = round(flops["total"] / (fp8 * 1e12), 3)
    model.compile_blocks()
    reference = None
    for config in configs:
        windowed = config in WINDOWED
        if not budget.allows(60 if windowed else 30, f"matrix {name(config)}"):
            continue
        entry = res["configs"].setdefault(name(config), {})
        with guarded(entry, "error"):
            configure(model, linears, config, device)
            reset_peak()
            started = time.perf_counter()
            with torch.inference_mode():
                got = model(**one).cpu()
            entry["first_call_s"] = round(time.perf_counter() - started, 1)  # compiles (and autotunes) here
            reference = got if reference is None else reference
            entry["rel_err_vs_bf16_sdpa_t900"] = relative_error(got, reference)
            with torch.inference_mode():
                entry["step"] = timed(lambda: model(**one), 2, 0)
            entry["peak_vram_gib"] = peak_gib()
            entry["attention_config"] = kernel_choice(config[1])
            if config == CANDIDATE:  # where the candidate's step goes
                with torch.inference_mode():
                    entry["top_kernels_step"] = top_kernels(lambda: model(**one), 16)
            if windowed and vae is not None:
                with recompiles() as found:
                    entry["window"] = window_run(
                        model, vae, size, 2 if config == CANDIDATE else 1, device, scale.params
                    )
                entry["window"]["recompiles_transformer"] = [m for m in found if "infinitetalk/model.py" in m]
                entry["window"]["recompiles_other"] = [m for m in found if "infinitetalk/model.py" not in m]
                for window in entry["window"]["windows"]:
                    window["outside_steps_s"] = round(window["seconds"] - sum(window["step_seconds"]), 2)
        print("matrix", name(config), json.dumps(entry), flush=True)
        flush(out)
        if config == CONFIGS[0] and official is not None:
            official_run(res, model, official, one, device)
    fastest = min((e["step"]["mean_s"] for e in res["configs"].values() if "step" in e), default=None)
    if fastest:
        res["fastest_step_vs_floor_bf16"] = round(fastest / res["floor_bf16_s"], 2)


def kernel_choice(attention: str = "int8") -> str | None:
    """What runs `attention` on this GPU: for our 8-bit kernel Hopper's pinned configuration or the autotuner's
    choice (for the last shape it tuned), for cudnn-fp8 the cuDNN library's version; on the CPU (--smoke) the
    float32 emulation."""
    if attention == "sdpa":
        return None
    if not torch.cuda.is_available():
        return "CPU emulation"
    if attention == "cudnn-fp8":
        return f"cuDNN {torch.backends.cudnn.version()} sdpa_fp8"
    from spinbot.backends.attention import eight_bit_kernel as kernels

    pinned = kernels.pinned_config(torch.cuda.get_device_capability())
    return f"pinned {pinned}" if pinned else str(kernels.tuned_kernel.best_config)


def official_run(res: dict, model, official, one: dict, device: torch.device) -> None:
    from infinitetalk_gpu import official_forward

    entry = res.setdefault("official", {})
    with guarded(entry, "error"), torch.inference_mode():
        grid = model.token_grid(one["x"].shape)
        masks = torch.ones(3, grid[1] * 2, grid[2] * 2, device=device)
        entry.update(timed(lambda: official_forward(official, one, masks), 2))
        entry["rel_err_vs_ours"] = relative_error(official_forward(official, one, masks), model(**one))
    print("official", entry, flush=True)


def errors_part(
    out: dict, budget: Budget, model, linears: Linears, vae, device: torch.device, scale: Scale, configs: list
) -> None:
    from spinbot.backends.talk.infinitetalk import pipeline
    from spinbot.backends.talk.infinitetalk.sampler import FlowSampler

    size = SMOKE_SIZE if scale.smoke else ERROR_SIZE
    res = out.setdefault("errors", {"size": f"{size[0]}x{size[1]}", "mode": "eager"})
    params = seed_default_params()
    sampler = FlowSampler(params.sampling_scheduler, params.sampling_steps, float(params.sampling_shift))
    timesteps = [round(t, 1) for t in sampler.timesteps]
    res["timesteps"] = timesteps
    for weights in ("random", "structured"):
        if not budget.allows(90, f"errors on {weights} weights"):
            continue
        block = res.setdefault(weights, {})
        if weights == "structured":
            linears.use(False)  # the bf16 layers in place: they get the new weights, their FP8 copies are made again
            res["structured_recipe"] = structured_weights(model)
            linears.requantize()
        one = scale.inputs(model.config, size, device)
        expected: dict = {}
        for config in configs:
            entry = block.setdefault(name(config), {})
            with guarded(entry, "error"), torch.inference_mode(), torch.compiler.set_stance("force_eager"):
                configure(model, linears, config, device)
                outputs = {t: model(**(one | {"t": torch.full((1,), t, device=device)})).cpu() for t in timesteps}
                state, plan, _ = make_window_state(model, vae, size, 1, device, scale.params)
                decoded = vae.decode(pipeline.sample_window(state, plan[0], None)).cpu()
                if not expected:
                    expected = {"outputs": outputs, "decoded": decoded}
                    entry["output_rms"] = {t: round(float(o.pow(2).mean().sqrt()), 4) for t, o in outputs.items()}
                else:
                    entry["rel_err_by_timestep"] = {
                        t: round(relative_error(o, expected["outputs"][t]), 5) for t, o in outputs.items()
                    }
                    entry["decoded_rel_err"] = round(relative_error(decoded, expected["decoded"]), 5)
                    mse = float((decoded - expected["decoded"]).pow(2).mean())
                    entry["decoded_psnr_db"] = round(10 * math.log10(4.0 / max(mse, 1e-12)), 2)  # range [-1, 1]
            print("errors", weights, name(config), json.dumps(entry), flush=True)
        flush(out)


def size720_part(
    out: dict,
    budget: Budget,
    model,
    linears: Linears,
    vae,
    device: torch.device,
    scale: Scale,
    configs: list,
    runs: int = 1,
) -> None:
    """`runs` steps of bf16 + SDPA and of each configuration in `configs` (its error against the first), and one
    window of the candidate when it is among them."""
    size = scale.size("720p")
    res = out.setdefault("720p", {"size": f"{size[0]}x{size[1]}"})
    one = scale.inputs(model.config, size, device)
    flops = forward_flops(model.config, model.token_grid(one["x"].shape))
    res["floor_bf16_s"] = round(flops["total"] / (out["matmul_tflops"]["best"] * 1e12), 3)
    model.compile_blocks()
    reference = None
    for config in [CONFIGS[0], *(c for c in configs if c != CONFIGS[0])]:
        if not budget.allows(75, f"720p {name(config)}"):
            continue
        entry = res.setdefault(name(config), {})
        with guarded(entry, "error"):
            configure(model, linears, config, device)
            reset_peak()
            started = time.perf_counter()
            with torch.inference_mode():
                got = model(**one).cpu()
            entry["first_call_s"] = round(time.perf_counter() - started, 1)
            reference = got if reference is None else reference
            entry["rel_err_vs_bf16_sdpa_t900"] = relative_error(got, reference)
            with torch.inference_mode():
                entry["step"] = timed(lambda: model(**one), runs, 0)
            entry["peak_vram_gib"] = peak_gib()
        print("720p", name(config), json.dumps(entry), flush=True)
    if vae is not None and CANDIDATE in configs and budget.allows(90, "720p window"):
        entry = res.setdefault(f"{name(CANDIDATE)}_window", {})
        with guarded(entry, "error"):
            configure(model, linears, CANDIDATE, device)
            entry.update(window_run(model, vae, size, 1, device, scale.params))
            entry["resident_not_used_gib"] = out.get("weights_gib")  # the bf16 linears this config does not use
        print("720p window", json.dumps(entry), flush=True)


def modes_part(out: dict, budget: Budget, model, linears: Linears, device: torch.device, scale: Scale) -> None:
    res = out.setdefault("modes", {"config": name(CANDIDATE)})
    one = scale.inputs(model.config, "480p", device)
    for mode, cost in (("default", 40), ("reduce-overhead", 60), ("max-autotune-no-cudagraphs", 240)):
        if not budget.allows(cost, f"compile mode {mode}"):
            continue
        entry = res.setdefault(mode, {})
        with guarded(entry, "error"):
            configure(model, linears, CANDIDATE, device)
            model.compile_blocks(None if mode == "default" else mode)
            started = time.perf_counter()
            with torch.inference_mode():
                for _ in range(2 if mode == "reduce-overhead" else 1):  # CUDA graphs: warm-up, then recording
                    model(**one)
                sync()
                entry["first_calls_s"] = round(time.perf_counter() - started, 1)
                entry["step"] = timed(lambda: model(**one), 3, 0)
        print("mode", mode, json.dumps(entry), flush=True)
        flush(out)


# ---- main ------------------------------------------------------------------------------------------------------------


OUT_PATH: list[Path] = []


def flush(out: dict) -> None:
    for path in OUT_PATH:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2, default=str) + "\n")


def summary(out: dict) -> str:
    lines = ["", "== summary (seconds; errors relative to bf16 + SDPA) =="]
    matrix = out.get("matrix", {})
    if matrix:
        lines.append(
            f"480p floor: bf16 {matrix.get('floor_bf16_s')} s, all-FP8 {matrix.get('floor_fp8_s')} s; "
            f"official {matrix.get('official', {}).get('mean_s')} s"
        )
        lines.append(
            f"{'config':<12}{'step':>8}{'window':>9}{'2nd win':>9}{'first':>8}{'err t900':>10}{'GiB':>7}"
            f"{'recompiles':>11}"
        )
        for key, e in matrix["configs"].items():
            windows = e.get("window", {}).get("windows", [])
            win = [f"{w['seconds']:.1f}" for w in windows] + ["-", "-"]
            lines.append(
                f"{key:<12}{e.get('step', {}).get('mean_s', e.get('error', '-'))!s:>8}{win[0]:>9}"
                f"{win[1]:>9}{e.get('first_call_s', '-')!s:>8}"
                f"{e.get('rel_err_vs_bf16_sdpa_t900', float('nan')):>10.4f}{e.get('peak_vram_gib', '-')!s:>7}"
                f"{len(e['window'].get('recompiles_transformer', [])) if 'window' in e else '-'!s:>11}"
            )
    for label, row in out.get("kernels", {}).items():
        for key in ("sdpa_cudnn", "sdpa_flash", "int8", "fp8", "cudnn_fp8"):
            e = row.get(key, {})
            lines.append(
                f"attention {label} {key:<11} {e.get('ms', '-')!s:>8} ms {e.get('tflops', '-')!s:>7} TFLOP/s"
                f"  err {e.get('rel_err_gaussian', float('nan')):.4f} / offsets "
                f"{e.get('rel_err_offsets', float('nan')):.4f}"
                f"  kernel {e.get('kernel_ms_tuned', e.get('kernel_ms_padded', '-'))} ms"
                f"  quantize {e.get('quantize_ms_eager', '-')} ms  {e.get('chosen_config', '')}"
            )
    for key, e in out.get("vae", {}).items():
        if isinstance(e, dict):
            lines.append(
                f"vae {key:<34} decode {e.get('decode_s', '-')} s  encode {e.get('encode_motion_s', '-')} s"
                f"  err {e.get('decode_rel_err_vs_float32', '-')}"
            )
    for weights in ("random", "structured"):
        for key, e in out.get("errors", {}).get(weights, {}).items():
            if "rel_err_by_timestep" in e:
                worst = max(e["rel_err_by_timestep"].values())
                lines.append(
                    f"error {weights:<10} {key:<12} forward max {worst:.4f}"
                    f"  decoded {e['decoded_rel_err']:.4f} ({e['decoded_psnr_db']} dB)"
                )
    for key, e in out.get("720p", {}).items():
        if isinstance(e, dict) and "step" in e:
            lines.append(
                f"720p {key:<12} step {e['step']['mean_s']} s  err {e['rel_err_vs_bf16_sdpa_t900']:.4f}  "
                f"{e['peak_vram_gib']} GiB"
            )
    for key, e in out.get("modes", {}).items():
        if isinstance(e, dict):
            lines.append(
                f"mode {key:<28} step {e.get('step', {}).get('mean_s', e.get('error'))}"
                f"  first calls {e.get('first_calls_s')} s"
            )
    lines += [f"skipped: {s}" for s in out.get("skipped", [])]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="kernels,vae,matrix", help=f"comma-separated, of {','.join(PARTS)}")
    parser.add_argument("--budget-s", type=float, default=500.0, help="stop starting parts after this many seconds")
    parser.add_argument("--kernel-sizes", default="480p,720p")
    parser.add_argument(
        "--configs",
        help="matrix / errors configurations, e.g. bf16+sdpa,fp8+int8 (default: all; "
        "the first is the errors' reference)",
    )
    parser.add_argument("--official", type=Path, help="a checkout of MeiGen-AI/InfiniteTalk (matrix part)")
    parser.add_argument(
        "--vae-dtype",
        choices=("bfloat16", "float32"),
        default="bfloat16",
        help="the windows' VAE (SPINBOT_TALK_VAE_DTYPE; the backend's default is float32)",
    )
    parser.add_argument("--step-runs", type=int, default=1, help="timed steps per configuration at 720p")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/infinitetalk_speed_gpu.json")
    parser.add_argument("--smoke", action="store_true", help="every part at toy size on the CPU, nothing written")
    parser.add_argument("--help-wheels", action="store_true", help="the wheels the device lacks")
    args = parser.parse_args()
    if args.help_wheels:
        return print(f"carry in .whl: {WHEELS}")
    parts = args.parts.split(",") if not args.smoke else list(PARTS)
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise SystemExit(f"unknown part {unknown[0]!r}: use {','.join(PARTS)}")
    smoke = args.smoke
    chosen = args.configs or ("bf16+sdpa,fp8+cudnn-fp8,bf16+int8" if smoke else ",".join(name(c) for c in CONFIGS))
    configs = [tuple(c.split("+")) for c in chosen.split(",")]
    if any(c not in CONFIGS for c in configs):
        raise SystemExit(f"unknown configuration in {chosen!r}: use {','.join(name(c) for c in CONFIGS)}")
    if smoke:  # no compiler run on the CPU: compiled modules run as written
        torch.compiler.set_stance("force_eager")
    device = torch.device("cpu" if smoke else "cuda")
    scale = Scale(smoke)
    OUT_PATH[:] = [] if smoke else [args.out]
    out = {
        "benchmark": "InfiniteTalk speed options (issue 16), 14B random weights",
        "command": "python3 benchmarks/infinitetalk_speed_gpu.py " + " ".join(sys.argv[1:]),
        "parts": parts,
        "date": date.today().isoformat(),
        "machine": machine(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name() if not smoke else "cpu",
        "configs": [name(c) for c in CONFIGS],
        "candidate": name(CANDIDATE),
    }
    budget = Budget(args.budget_s if not smoke else 1e9, out)
    limit = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
    setattr(torch._dynamo.config, limit, 64)
    try:
        import triton

        out["triton"] = triton.__version__
    except ImportError:
        out["triton"] = None
    cfg = (
        InfiniteTalkConfig()
        if not smoke
        else InfiniteTalkConfig(
            dim=256,
            ffn_dim=512,
            num_heads=2,
            num_layers=2,
            text_dim=32,
            freq_dim=32,
            intermediate_dim=16,
            output_dim=32,
            context_tokens=4,
        )
    )
    out["tokens_480p"] = 21 * 30 * 52
    out["matmul_tflops"] = (
        matmul_rate(device, out["tokens_480p"] if not smoke else 256, cfg) if not smoke else {"best": 1.0}
    )
    out["matmul_tflops"]["best"] = max(out["matmul_tflops"].values())
    if "kernels" in parts:
        kernels_part(out, budget, device, args.kernel_sizes.split(",") if not smoke else ["480p"], scale)
        flush(out)
    if not set(parts) & {"vae", "matrix", "errors", "720p", "modes"}:
        return print(summary(out))
    vae = None
    if "vae" in parts:
        vae_part(out, budget, device, scale)
        flush(out)
    if set(parts) & {"matrix", "errors", "720p"}:
        torch.manual_seed(0)
        vae_dtype = getattr(torch, args.vae_dtype) if not smoke else torch.float32
        out["vae_dtype"] = str(vae_dtype).removeprefix("torch.")
        vae = random_vae(device, vae_dtype, **({"base_dim": 8} if smoke else {}))
        vae.speed_up(channels_last=not smoke, compile_norms=not smoke)  # what the backend does on CUDA
        started = time.perf_counter()
        with torch.inference_mode():  # compiles its norms once, before any window is timed
            size = scale.size("480p")
            vae.decode(torch.zeros(1, 16, scale.latent_frames, size[1] // 8, size[0] // 8, device=device))
            vae.encode(torch.zeros(1, 3, 5 if smoke else 25, size[1], size[0], device=device))
        sync()
        out["vae_warmup_s"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    model = random_model(cfg, device, torch.bfloat16 if not smoke else torch.float32)
    linears = Linears(model)
    sync()
    out["build_s"] = round(time.perf_counter() - started, 1)
    out["weights_gib"] = round(sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30, 2)
    out["fp8_copies_gib"] = linears.fp8_gib()
    official = None
    if args.official and "matrix" in parts:
        from infinitetalk_gpu import load_official_class, official_model, official_stubs

        with guarded(out, "official_error"):
            out["official_stubs"] = official_stubs()
            official = official_model(load_official_class(args.official), cfg, model, torch.bfloat16)
    if "matrix" in parts:
        matrix_part(out, budget, model, linears, vae, device, official, scale, configs)
        flush(out)
    if "errors" in parts:  # after the timings: it rewrites the weights
        errors_part(out, budget, model, linears, vae, device, scale, configs)
        flush(out)
    if "720p" in parts:
        size720_part(
            out, budget, model, linears, vae, device, scale, configs if args.configs else [CANDIDATE], args.step_runs
        )
        flush(out)
    if "modes" in parts:
        modes_part(out, budget, model, linears, device, scale)
        flush(out)
    print(json.dumps(out, indent=1, default=str)[-3000:] if smoke else "")
    print(summary(out))


if __name__ == "__main__":
    main()
