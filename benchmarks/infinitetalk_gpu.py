"""InfiniteTalk (Wan2.1-I2V-14B + the InfiniteTalk audio adapter) on one GPU: seconds per denoising step and per
window, peak VRAM, the FLOP floor, and the official model code's forward on the same shapes, in the same run.

(Past 400 lines: the official code's harness, its stand-ins and our forward are timed on the same shapes in one
run, so both sides and the comparison live in the one script the device command runs.)

Run on the GPU machine, from the repository root (about 8 minutes on an H100):
    python benchmarks/infinitetalk_gpu.py --official third_party/InfiniteTalk --out benchmarks/results/infinitetalk_gpu.json
    python benchmarks/infinitetalk_gpu.py --smoke        (plumbing check on the CPU at tiny size, writes nothing)
`--official` is a checkout of MeiGen-AI/InfiniteTalk (never committed: carried to the device in an ignored folder).
The official code needs diffusers (for ModelMixin), and imports xfuser and xformers at module level; without them the
harness registers stand-ins (`official_stubs`): xfuser's sequence-parallel queries answer "one rank", xformers'
`memory_efficient_attention` is PyTorch SDPA (the official code itself falls back to SDPA for its main attention
when flash-attn is absent, as on the device).

Model: the full-size 14B architecture with random weights (no files): dim 5120, 40 blocks, 40 heads, FFN 13824, and
the audio adapter; bf16 matmul weights, norms / modulations / timestep MLPs / head in float32 (as loaded by
transformer_checkpoint.py). The official WanModel is built on the meta device and given the same tensors (`assign=True`, no copy;
its float32 parameters as bf16 copies, as the official pipeline's `to_param_dtype_fp32only` casts them).

Measured per size (480p = 832x480, 720p = 1280x720, 81 frames = 21 latent frames):
- forward: one transformer forward (batch 1), ours eager and compiled (`torch.compile` of each block), the official;
- batched: cond + no-audio passes as one batch of 2 (the two-pass audio guidance);
- step: seconds per denoising step for the seed defaults (6 steps, text and audio guidance 1: one pass), two-pass
  audio guidance (lightx2v LoRA recipe) and the official three-pass default (text 5, audio 4);
- window (480p and 720p): the backend's real `render()` for one 81-frame window with a full-size Wan 2.1 VAE
  (random weights): sampler steps, VAE decode, colour transfer, plus a second window at 480p (motion frames
  VAE-encoded);
- floor: FLOPs of one forward (every matmul and attention product) over the measured bf16 matmul rate.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import math
import sys
import time
import traceback
import types
import warnings
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from machine import machine  # noqa: E402
from stand_ins import importable, infinitetalk_official, stand_in  # noqa: E402

from spinbot.backends.talk.infinitetalk.model import (  # noqa: E402
    CLIP_DIM,
    WAV2VEC_DIM,
    WAV2VEC_LAYERS,
    InfiniteTalkConfig,
    InfiniteTalkModel,
    LayerNorm,
    RMSNorm,
)

COMMAND = "python benchmarks/infinitetalk_gpu.py --official third_party/InfiniteTalk --out benchmarks/results/infinitetalk_gpu.json"
SIZES = {"480p": (832, 480), "720p": (1280, 720)}
FRAMES = 81
PROMPT_TOKENS = 120  # a typical prompt's UMT5 length; the model pads to 512 rows either way
TARGET_FLOOR_RATIO = 1.5


# ---- timing -----------------------------------------------------------------------------------------------------


def timed(fn, repeats: int, warmup: int = 1) -> dict[str, float]:
    """Wall seconds of fn() on the GPU (synchronised), after warm-up calls."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return {"mean_s": round(sum(times) / len(times), 4), "min_s": round(min(times), 4), "runs": len(times)}


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_gib() -> float:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else 0.0


def reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def matmul_rate(device: torch.device, tokens: int, cfg: InfiniteTalkConfig) -> dict[str, float]:
    """bf16 TFLOP/s of the DiT's own matmul shapes ([tokens, dim] x [dim, dim] and x [dim, ffn]) and 8192^3."""
    rates = {}
    shapes = {
        "tokens_x_dim_x_dim": (tokens, cfg.dim, cfg.dim),
        "tokens_x_dim_x_ffn": (tokens, cfg.dim, cfg.ffn_dim),
        "8192_cubed": (8192, 8192, 8192),
    }
    for name, (m, k, n) in shapes.items():
        a = torch.randn(m, k, device=device, dtype=torch.bfloat16)
        b = torch.randn(k, n, device=device, dtype=torch.bfloat16)
        t = timed(functools.partial(torch.matmul, a, b), repeats=10, warmup=3)["min_s"]
        rates[name] = round(2 * m * k * n / t / 1e12, 1)
        del a, b
    return rates


# ---- FLOPs ------------------------------------------------------------------------------------------------------


def forward_flops(
    cfg: InfiniteTalkConfig, grid: tuple[int, int, int], text_len: int = 512, image_len: int = 257
) -> dict[str, float]:
    """Multiply-add FLOPs (2 per MAC) of one forward, batch 1: every matmul and both attention products."""
    f, h, w = grid
    tokens, d, ffn = f * h * w, cfg.dim, cfg.ffn_dim
    audio_tokens = cfg.context_tokens
    linear = 0
    linear += 4 * 2 * tokens * d * d  # self-attention q, k, v, o
    linear += 2 * 2 * tokens * d * d + 4 * 2 * (text_len + image_len) * d * d  # cross: q, o; k, v, k_img, v_img
    linear += 2 * 2 * tokens * d * d + 2 * 2 * f * audio_tokens * cfg.output_dim * d  # audio: q, proj; kv
    linear += 2 * 2 * tokens * d * ffn  # FFN
    attention = 2 * 2 * tokens * tokens * d  # self: q k^T and p v over all heads
    attention += 2 * 2 * tokens * (text_len + image_len) * d + 2 * 2 * tokens * audio_tokens * d
    per_block = linear + attention
    patch_in = 2 * tokens * cfg.in_dim * math.prod(cfg.patch_size) * d
    head = 2 * tokens * d * math.prod(cfg.patch_size) * cfg.out_dim
    total = cfg.num_layers * per_block + patch_in + head
    return {
        "total": float(total),
        "attention": float(cfg.num_layers * attention),
        "linear": float(cfg.num_layers * linear),
    }


# ---- the model with random weights --------------------------------------------------------------------------------


def random_model(cfg: InfiniteTalkConfig, device: torch.device, dtype: torch.dtype) -> InfiniteTalkModel:
    """The model with random weights, built on the meta device and materialised on `device` (no CPU copy)."""
    with torch.device("meta"):
        model = InfiniteTalkModel(cfg)
    keep_fp32 = model.fp32_param_names()
    model.to_empty(device=device)
    gen = torch.Generator(device).manual_seed(0)
    norms = {name for name, module in model.named_modules() if isinstance(module, (RMSNorm, LayerNorm))}
    with torch.no_grad():
        for name, param in model.named_parameters():
            module_name = name.rsplit(".", 1)[0]
            if module_name in norms:
                param.fill_(1.0 if name.endswith("weight") else 0.0)
            elif name.endswith("modulation"):
                param.normal_(0.0, cfg.dim**-0.5, generator=gen)
            elif name.endswith("bias"):
                param.zero_()
            else:
                fan_in = param[0].numel()
                param.normal_(0.0, fan_in**-0.5, generator=gen)
        for name, param in model.named_parameters():
            if name not in keep_fp32:
                param.data = param.data.to(dtype)
    return model.eval().requires_grad_(False)


def inputs(cfg: InfiniteTalkConfig, size: tuple[int, int], batch: int, device: torch.device) -> dict:
    width, height = size
    latent_frames = 1 + (FRAMES - 1) // 4
    h, w = height // 8, width // 8
    gen = torch.Generator(device).manual_seed(1)

    def rand(*shape):
        return torch.randn(*shape, generator=gen, device=device)

    return {
        "x": rand(batch, cfg.out_dim, latent_frames, h, w),
        "t": torch.full((batch,), 900.0, device=device),
        "context": rand(batch, PROMPT_TOKENS, cfg.text_dim) * 0.1,
        "clip_fea": rand(batch, 257, CLIP_DIM),
        "y": rand(batch, cfg.in_dim - cfg.out_dim, latent_frames, h, w),
        "audio": rand(batch, FRAMES, cfg.audio_window, WAV2VEC_LAYERS, WAV2VEC_DIM),
    }


# ---- the official model -----------------------------------------------------------------------------------------


def official_stubs() -> list[str]:
    """Register stand-ins for the official code's import-time dependencies that are absent here."""
    import diffusers.models.modeling_utils  # noqa: F401  (probes for xformers at import: before any stand-in)

    added = infinitetalk_official()
    for name in ("imageio", "soundfile", "torchvision", "skimage", "skimage.color"):
        if not importable(name):  # used by the official utils' video / colour helpers, not by the forward
            stand_in(name)
            added.append(f"{name} (unused by the forward)")
    return added


def load_official_class(checkout: Path):
    """wan.modules.multitalk_model.WanModel from a checkout, without the package's __init__ (which imports the
    whole pipeline: T5, CLIP, VAE, xfuser's distributed setup)."""
    for name, sub in (("wan", "wan"), ("wan.modules", "wan/modules"), ("wan.utils", "wan/utils")):
        package = types.ModuleType(name)
        package.__path__ = [str(checkout / sub)]
        sys.modules[name] = package
    module = importlib.import_module("wan.modules.multitalk_model")
    # The official blocks call flash_attention(), which asserts that flash-attn is installed (it is not on the
    # device, and PyPI has no wheel of it); the official attention() is the same call with its own fallback to
    # PyTorch SDPA (whose flash kernel is FlashAttention-2). Its padding mask is unused: seq_len is the token count.
    if not torch.cuda.is_available():  # --smoke: its reference-map helper frees CUDA memory, which needs CUDA
        importlib.import_module("wan.utils.multitalk_utils").torch_gc = lambda: None
    module.flash_attention = as_flash_attention(importlib.import_module("wan.modules.attention").attention)
    return module.WanModel


def as_flash_attention(fallback):
    """The official SDPA fallback with flash_attention()'s contract: output in q's dtype (it computes in bf16 either
    way), and without the fallback's per-call warning ('Padding mask is disabled ...')."""

    def call(q, k, v, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fallback(q, k, v, **kwargs).to(q.dtype)

    return call


def official_model(cls, cfg: InfiniteTalkConfig, ours: InfiniteTalkModel, dtype: torch.dtype):
    kwargs = {
        k: getattr(cfg, k)
        for k in (
            "model_type",
            "patch_size",
            "text_len",
            "in_dim",
            "dim",
            "ffn_dim",
            "freq_dim",
            "text_dim",
            "out_dim",
            "num_heads",
            "num_layers",
            "window_size",
            "qk_norm",
            "cross_attn_norm",
            "eps",
            "audio_window",
            "intermediate_dim",
            "output_dim",
            "context_tokens",
            "vae_scale",
            "norm_input_visual",
            "norm_output_audio",
        )
    }
    with torch.device("meta"):
        model = cls(weight_init=False, **kwargs)
    # the same tensors; the official pipeline runs every parameter in bf16 (to_param_dtype_fp32only)
    state = {k: (v if v.dtype == dtype else v.to(dtype)) for k, v in ours.state_dict().items()}
    model.load_state_dict(state, assign=True, strict=True)
    model.init_freqs()  # a plain attribute computed at construction: rebuild it off the meta device
    model.disable_teacache()  # as the official pipeline does without --use_teacache
    return model.eval().requires_grad_(False)


def official_forward(model, batch: dict, ref_masks: torch.Tensor):
    """The official pipeline's call (`generate_infinitetalk`): lists per sample, seq_len = the token count."""
    x, y = batch["x"], batch["y"]
    f, h, w = x.shape[2], x.shape[3] // 2, x.shape[4] // 2
    return model(
        [x[0].to(torch.bfloat16)],
        t=batch["t"][:1],
        context=[batch["context"][0].to(torch.bfloat16)],
        seq_len=f * h * w,
        clip_fea=batch["clip_fea"][:1].to(torch.bfloat16),
        y=y[:1].to(torch.bfloat16),
        audio=batch["audio"][:1].to(torch.bfloat16),
        ref_target_masks=ref_masks,
    )


# ---- one window through the backend -----------------------------------------------------------------------------


def random_vae(device: torch.device, dtype: torch.dtype, **config):
    from diffusers import AutoencoderKLWan

    from spinbot.backends.talk.infinitetalk.vae import WanVAE

    with torch.device(device):
        autoencoder = AutoencoderKLWan(**config)  # the defaults are Wan 2.1's VAE (base_dim 96, z_dim 16)
    return WanVAE(autoencoder.to(dtype)).to(device).eval().requires_grad_(False)


def make_window_state(
    model: InfiniteTalkModel, vae, size: tuple[int, int], windows: int, device: torch.device, params=None
):
    """A TalkState for the first `windows` windows of a long speech (seed-default params unless given, random
    portrait, text, CLIP features and audio, fixed seeds) and the window plan: render()'s input without encoders."""
    import numpy as np

    from spinbot.backends.talk.infinitetalk import pipeline
    from spinbot.backends.talk.infinitetalk.loading import Models
    from spinbot.tasks.windows import plan_windows

    width, height = size
    params = params or seed_default_params()
    settings = pipeline.settings_from(params, seed=290381)
    frames_total = 1 + (params.frame_window_size - params.motion_frame) * windows + params.motion_frame
    models = Models(model, vae, None, None, None, None, {})
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    with torch.inference_mode():
        portrait = torch.from_numpy(image).to(device).permute(2, 0, 1)[None].float() / 127.5 - 1.0
        y = pipeline.image_condition(models, portrait, settings.generated)
    gen = torch.Generator(device).manual_seed(2)
    state = pipeline.TalkState(
        settings,
        models,
        portrait,
        pipeline.reference_stats((portrait[0].permute(1, 2, 0) + 1.0) / 2.0),
        {True: torch.randn(PROMPT_TOKENS, model.config.text_dim, generator=gen, device=device) * 0.1},
        torch.randn(1, 257, CLIP_DIM, generator=gen, device=device),
        torch.randn(frames_total, WAV2VEC_LAYERS, WAV2VEC_DIM, generator=gen, device=device),
        y,
        generator=torch.Generator("cpu").manual_seed(settings.seed),
    )
    plan = plan_windows(frames_total, params.frame_window_size, params.motion_frame)[:windows]
    return state, plan, params


def window_run(
    model: InfiniteTalkModel, vae, size: tuple[int, int], windows: int, device: torch.device, params=None
) -> dict:
    """The backend's render() for the first `windows` windows of a long speech, seed-default params unless given."""
    from spinbot.backends.talk.infinitetalk import pipeline

    state, plan, params = make_window_state(model, vae, size, windows, device, params)
    reset_peak()
    per_window = []
    for window in plan:
        steps_before = len(state.step_seconds)
        started = time.perf_counter()
        out = list(pipeline.render(state, window))
        sync()
        per_window.append(
            {
                "index": window.index,
                "seconds": round(time.perf_counter() - started, 2),
                "frames_out": len(out),
                "step_seconds": [round(s, 3) for s in state.step_seconds[steps_before:]],
            }
        )
    return {
        "params": {
            "sampling_scheduler": params.sampling_scheduler,
            "sampling_steps": params.sampling_steps,
            "sampling_cfg": params.sampling_cfg,
            "audio_cfg_scale": params.audio_cfg_scale,
            "frame_window_size": params.frame_window_size,
            "motion_frame": params.motion_frame,
            "source": getattr(params, "source", "InfiniteTalkParams()"),
        },
        "windows": per_window,
        "peak_vram_gib": peak_gib(),
    }


def seed_default_params():
    """InfiniteTalkParams() where the task module imports; on a machine without its media stack (PyAV, boto3), the
    same sampler defaults copied from the seed's table, marked as such in the results."""
    try:
        from spinbot.tasks.talk import InfiniteTalkParams

        return InfiniteTalkParams()
    except ImportError as error:
        print(f"spinbot.tasks.talk not importable here ({error}): the seed's defaults", flush=True)
        return types.SimpleNamespace(
            source="seed table (spinbot.tasks.talk not importable)",
            sampling_scheduler="dpm++_sde",
            sampling_steps=6,
            sampling_cfg=1.0,
            audio_cfg_scale=1.0,
            audio_scale=1.6,
            frame_window_size=81,
            motion_frame=25,
            sampling_shift=11.0,
            color_correction=1.0,
        )


# ---- main -------------------------------------------------------------------------------------------------------


def bench_size(label: str, model, official, cfg, device, args, vae, out: dict) -> None:
    size = SIZES[label]
    res = out["sizes"].setdefault(label, {"size": f"{size[0]}x{size[1]}", "frames": FRAMES})
    one = inputs(cfg, size, 1, device)
    grid = (one["x"].shape[2], one["x"].shape[3] // 2, one["x"].shape[4] // 2)
    res["tokens"] = math.prod(grid)
    flops = forward_flops(cfg, grid)
    res["forward_tflop"] = round(flops["total"] / 1e12, 1)
    res["attention_share"] = round(flops["attention"] / flops["total"], 3)
    rate = out["matmul_tflops"]["best"]
    res["floor_forward_s"] = round(flops["total"] / (rate * 1e12), 3)
    repeats = 2

    def record(name, fn, reps=repeats):
        reset_peak()
        try:
            with torch.inference_mode():
                res[name] = timed(fn, reps)
            res[name]["peak_vram_gib"] = peak_gib()
        except torch.cuda.OutOfMemoryError as error:
            res[name] = {"error": f"out of memory: {str(error).splitlines()[0]}"}
        except Exception as error:  # noqa: BLE001 - a benchmark reports what failed and goes on
            res[name] = {"error": f"{type(error).__name__}: {error}"}
            traceback.print_exc()
        print(label, name, res[name], flush=True)
        flush(out, args)

    record("ours_eager", lambda: model(**one))
    if official is not None:
        _, h, w = grid
        masks = torch.ones(3, h * 2, w * 2, device=device)  # the official single-speaker call: 3 masks
        record("official", lambda: official_forward(official, one, masks))
        with torch.inference_mode():
            a, b = model(**one), official_forward(official, one, masks)
            res["ours_vs_official_rel_err"] = float((a - b).norm() / b.norm())
    if label == "480p":
        two = inputs(cfg, size, 2, device)
        record("ours_eager_batch2", lambda: model(**two))
    if args.compile:
        model.compile_blocks()  # once; a later size compiles its own shapes in the warm-up below
        started = time.perf_counter()
        with torch.inference_mode():
            model(**one)
        sync()
        res["compile_warmup_s"] = round(time.perf_counter() - started, 1)
        record("ours_compiled", lambda: model(**one))
    best = min(
        v["mean_s"]
        for k, v in res.items()
        if k.startswith("ours_") and "batch2" not in k and isinstance(v, dict) and "mean_s" in v
    )
    res["ours_best_forward_s"] = best
    res["ours_vs_floor"] = round(best / res["floor_forward_s"], 2)
    if "official" in res and "mean_s" in res["official"]:
        res["speedup_vs_official"] = round(res["official"]["mean_s"] / best, 2)
    pair = min((v["mean_s"] for k, v in res.items() if "batch2" in k and "mean_s" in v), default=2 * best)
    res["step_s"] = {
        "seed_defaults_1_pass": best,
        "audio_guidance_2_passes": round(min(pair, 2 * best), 4),
        "official_default_3_passes": round(3 * best, 4),
    }
    if args.windows and vae is not None:
        reset_peak()
        try:
            res["window"] = window_run(model, vae, size, 2 if label == "480p" else 1, device)
        except Exception as error:  # noqa: BLE001 - recorded in the results, the run goes on
            res["window"] = {"error": f"{type(error).__name__}: {error}"}
            traceback.print_exc()
        print(label, "window", res["window"], flush=True)
    flush(out, args)


def fp8_run(model: InfiniteTalkModel, cfg: InfiniteTalkConfig, device: torch.device, args, out: dict) -> None:
    """The blocks' linears in e4m3: forward time (compiled) and relative error against the bf16 forward."""
    from spinbot.backends.fp8 import INFINITETALK_LINEARS, use_fp8

    labels = args.sizes.split(",")
    batches = {label: inputs(cfg, SIZES[label], 1, device) for label in labels}
    with torch.inference_mode():
        reference = {label: model(**batches[label]).cpu() for label in labels}
    out["fp8"] = {
        "layers": use_fp8(model.blocks, INFINITETALK_LINEARS),
        "weights_gib": round(
            sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]) / 2**30, 2
        ),
    }
    torch.cuda.empty_cache()
    for label in labels:
        res = out["fp8"].setdefault(label, {})
        reset_peak()
        try:
            with torch.inference_mode():
                got = model(**batches[label]).cpu()
                res["rel_err_vs_bf16"] = float((got - reference[label]).norm() / reference[label].norm())
                res["forward"] = timed(functools.partial(model, **batches[label]), 2)
            res["peak_vram_gib"] = peak_gib()
            bf16 = out["sizes"][label].get("ours_best_forward_s")
            if bf16:
                res["speedup_vs_bf16"] = round(bf16 / res["forward"]["mean_s"], 2)
        except Exception as error:  # noqa: BLE001 - recorded in the results, the run goes on
            res["error"] = f"{type(error).__name__}: {error}"
            traceback.print_exc()
        print(label, "fp8", res, flush=True)
        flush(out, args)


def flush(out: dict, args) -> None:
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


def smoke(official_checkout: Path | None) -> None:
    """Tiny sizes on the CPU in float32: the harness's code paths, and ours against the official forward."""
    cfg = InfiniteTalkConfig(
        dim=64,
        ffn_dim=128,
        num_heads=4,
        num_layers=2,
        text_dim=32,
        freq_dim=32,
        intermediate_dim=16,
        output_dim=32,
        context_tokens=4,
    )
    device = torch.device("cpu")
    model = random_model(cfg, device, torch.float32)
    batch = {k: v[..., :4, :6] if k in ("x", "y") else v for k, v in inputs(cfg, (64, 48), 1, device).items()}
    with torch.inference_mode():
        ours = model(**batch)
    print("smoke: forward", tuple(ours.shape), "TFLOP", forward_flops(cfg, (21, 2, 3))["total"] / 1e12)
    if official_checkout is not None:
        print("smoke: stand-ins", official_stubs())
        official = official_model(load_official_class(official_checkout), cfg, model, torch.float32)
        masks = torch.ones(3, 4, 6)
        with torch.inference_mode():
            theirs = official(
                [batch["x"][0]],
                t=batch["t"],
                context=[batch["context"][0]],
                seq_len=21 * 2 * 3,
                clip_fea=batch["clip_fea"],
                y=batch["y"],
                audio=batch["audio"],
                ref_target_masks=masks,
            )
        print("smoke: ours vs official, float32 relative error", float((ours - theirs).norm() / theirs.norm()))
    from spinbot.backends.fp8 import INFINITETALK_LINEARS, use_fp8

    with torch.inference_mode():
        swapped = use_fp8(model.blocks, INFINITETALK_LINEARS)
        fp8 = model(**batch).float()
    print("smoke: fp8 layers", swapped, "relative error", float((fp8 - ours).norm() / ours.norm()))
    vae = random_vae(device, torch.float32, base_dim=8)
    print("smoke: windows", window_run(model, vae, (64, 48), 2, device))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, help="a checkout of MeiGen-AI/InfiniteTalk")
    parser.add_argument("--sizes", default="480p,720p")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--no-windows", dest="windows", action="store_false")
    parser.add_argument(
        "--fp8",
        action="store_true",
        help="after the sizes: the blocks' linears in e4m3 (spinbot/backends/fp8.py), "
        "time and error against the bf16 output, per size",
    )
    parser.add_argument("--out", help="results JSON (written after every measurement)")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        return smoke(args.official)
    device, dtype = torch.device("cuda"), torch.bfloat16
    cfg = InfiniteTalkConfig()
    out = {
        "benchmark": "InfiniteTalk transformer (Wan2.1-I2V-14B + audio adapter), random weights, bf16",
        "command": COMMAND,
        "date": date.today().isoformat(),
        "machine": machine(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(),
        "target": f"step within {TARGET_FLOOR_RATIO}x of the floor at 480p, faster than the official code, "
        "720p fits in 80 GB",
        "sizes": {},
    }
    out["matmul_tflops"] = matmul_rate(device, 32760, cfg)
    out["matmul_tflops"]["best"] = max(out["matmul_tflops"].values())
    started = time.perf_counter()
    model = random_model(cfg, device, dtype)
    sync()
    out["params_billion"] = round(sum(p.numel() for p in model.parameters()) / 1e9, 2)
    out["weights_gib"] = round(sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30, 2)
    out["build_s"] = round(time.perf_counter() - started, 1)
    official = None
    if args.official:
        try:
            out["official_stubs"] = official_stubs()
            official = official_model(load_official_class(args.official), cfg, model, dtype)
            out["official_code"] = str(args.official)
        except Exception as error:  # noqa: BLE001 - recorded in the results, the run goes on
            out["official_error"] = f"{type(error).__name__}: {error}"
            traceback.print_exc()
    vae = None
    if args.windows:
        try:
            vae = random_vae(device, torch.float32)  # as the backend runs it (loading.Precision.vae)
        except Exception as error:  # noqa: BLE001 - recorded in the results, the run goes on
            out["vae_error"] = f"{type(error).__name__}: {error}"
            traceback.print_exc()
    print(json.dumps({k: v for k, v in out.items() if k != "sizes"}), flush=True)
    for label in args.sizes.split(","):
        bench_size(label, model, official, cfg, device, args, vae, out)
    if args.fp8:
        fp8_run(model, cfg, device, args, out)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
