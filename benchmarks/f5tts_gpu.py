"""Benchmark the native f5_to_tts backend on a CUDA GPU against the f5-tts package's own F5TTS.infer.

(Past 400 lines: the package's F5TTS.infer and our path are timed on the same models in one run, so both
harnesses, the model writer and the comparison live in the one script the device command runs.)

Device command (from the repository root; the .whl-f5 folder must travel with it: carry [".whl-f5"]):
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl-f5/*.whl && (python3 -c "import scipy" 2>/dev/null || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl-scipy/*.whl) && export PYTHONPATH=/tmp/site && PYTHONUNBUFFERED=1 python3 benchmarks/f5tts_gpu.py --out $OUT/f5tts_gpu.json
Then copy $OUT/f5tts_gpu.json to benchmarks/results/f5tts_gpu.json. FlashAttention 4 (the fa4 extra) is too big
for one call's carry (76 MB as .tar.xz): the committed result carried it in two calls on one warm machine, the
first copying .fa4/fa4.tar.xz.part00 to /tmp/fa4/, the second (carry [".fa4/fa4.tar.xz.part01", ".whl-f5"])
unpacking `cat /tmp/fa4/fa4.tar.xz.part00 .fa4/fa4.tar.xz.part01 | xz -d | tar x -C /tmp/fa4site` and adding
/tmp/fa4site and /tmp/fa4site/nvidia_cutlass_dsl/dsl_packages to PYTHONPATH before the command above. The tarball
holds the fa4 extra's wheels for py3.12 unpacked (flash-attn-4, nvidia-cutlass-dsl and its libs-base, -core and
-cu12, quack-kernels, apache-tvm-ffi, torch-c-dlpack-ext, cuda-bindings); split with `split -b 38M -d`.
`--profile` adds a torch.profiler table of one call of our path. Here: `python benchmarks/f5tts_gpu.py --smoke`
checks the plumbing on the CPU with a tiny model (writes nothing). .whl-f5 holds py3.12 wheels of what the device
lacks (f5-tts, vocos, x_transformers and its deps, torchdiffeq, ema_pytorch, pypinyin, rjieba, pydub, hydra-core,
omegaconf, antlr4, soundfile + cffi, soxr, pydantic(-settings), torch-einops-utils, ...) and the Beckett sample
(beckett.wav); .whl-scipy holds scipy (34 MB), installed only where the device has none (it has one).

Target (issue 6): real-time factor (synthesis wall seconds / seconds of speech) under 0.02 for about 30 s of speech
at nfe_step=32, and not slower than the package's own path, timed in the same run on the same inputs.

The models are the real-size F5TTS_v1_Base (DiT 1024 x 22, the package's own yaml) and Vocos mel-24khz
architectures with random weights, written in the official formats (EMA safetensors with `ema_model.` keys, Vocos
config.yaml + pytorch_model.bin) into a temporary SPINBOT_MODELS_DIR. Random weights make noise instead of speech,
but the work is the same: durations come from the texts and the reference, not from the weights.

What is timed (the median of 5 calls after a warm-up call on the same inputs, one model set resident at a time):
- ours: NativeF5Backend.prepare + speak_script (chunks batched and packed without padding, float16, blocks compiled);
- ours_flash2: the same with torch's FlashAttention 2 (ours takes FlashAttention 4 where flash-attn-4 is there);
- ours_fp8: the same with the blocks' linears in e4m3 (spinbot.backends.fp8; CUDA only);
- ours_eager: the same without torch.compile;
- ours_sequential: the same with one chunk per forward pass (the batching's share of the speed);
- package: f5_tts.api.F5TTS(model="F5TTS_v1_Base", ckpt_file, vocab_file, vocoder_local_path, device="cuda").infer
  (float16, one thread per chunk), seed fixed, no files written.
Peak VRAM is torch.cuda.max_memory_allocated over each timed call (weights included).

Stand-ins (only here, recorded in the result's `stand_ins`): where the device lacks them, modules that f5-tts imports
at import time but that no inference path calls get an empty stand-in: wandb, datasets (the trainer and its
dataset), cached_path (the hub download, skipped with ckpt_file given), matplotlib (save_spectrogram) and librosa
(its mel filter serves only the BigVGAN vocoder). torchaudio.load needs torchcodec and FFmpeg since torchaudio 2.9:
where it fails, the package path reads the reference WAV with soundfile instead (same tensor layout).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
import types
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from machine import machine  # noqa: E402
from stand_ins import importable, stand_in  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "f5tts_gpu.json"
COMMAND = "python3 benchmarks/f5tts_gpu.py --out $OUT/f5tts_gpu.json (device command in the docstring)"
TARGET_RTF = 0.02
NFE_STEP = 32
SEED = 290381
REF_TEXT = "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better."
# About 30 s of speech in the Beckett voice (about 7.4 characters per second).
TEXT = (
    "Every expert was once a beginner, and every beginner fails more often than not. Failure is not the "
    "opposite of learning; it is part of it. Each mistake shows you something the book could not, so try "
    "again, and fail a little better each time."
)
SMOKE_TEXT = "Every expert was once a beginner. Try again."
VOCOS_REAL = {"dim": 512, "intermediate_dim": 1536, "num_layers": 8}
VOCOS_TINY = {"dim": 32, "intermediate_dim": 64, "num_layers": 1}
REQUIRED = [
    "torch",
    "torchaudio",
    "numpy",
    "scipy",
    "yaml",
    "safetensors",
    "einops",
    "x_transformers",
    "einx",
    "torchdiffeq",
    "ema_pytorch",
    "pypinyin",
    "rjieba",
    "pydub",
    "hydra",
    "omegaconf",
    "vocos",
    "encodec",
    "cffi",
    "soundfile",
    "soxr",
    "pydantic",
    "pydantic_settings",
    "transformers",
    "accelerate",
    "huggingface_hub",
    "tqdm",
    "f5_tts",
]
STAND_INS = {  # module -> attributes the import-time code touches
    "wandb": {},
    "datasets": {"Dataset": type("Dataset", (), {}), "load_from_disk": None},
    "cached_path": {"cached_path": None},
    "librosa": {},
    "matplotlib": {"use": lambda *a, **k: None},
}


# ---- environment ----------------------------------------------------------------------------------------------------


def install_stand_ins() -> list[str]:
    """Empty modules for the import-time-only dependencies that are missing (see the docstring). The libraries
    that probe for optional packages (transformers, accelerate) are imported first, so that they see the machine
    as it is, not the stand-ins; each stand-in also gets a module spec, which such probes read."""
    import importlib

    for probe in ("transformers", "accelerate"):
        importlib.import_module(probe)
    used = [name for name in STAND_INS if not importable(name)]
    for name in used:
        stand_in(name, **STAND_INS[name])
    if "librosa" in used:
        stand_in("librosa.filters", mel=_unavailable("librosa.filters.mel (BigVGAN only)"))
    if "matplotlib" in used:
        stand_in("matplotlib.pylab")
    return used


def _unavailable(what: str):
    def call(*args, **kwargs):
        raise RuntimeError(f"{what} is a benchmark stand-in and was called")

    return call


def preflight() -> None:
    """Import everything up front and name whatever is missing, in one list."""
    import importlib

    missing = []
    for name in REQUIRED:
        try:
            importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 - a broken import is as fatal as a missing one
            missing.append(f"{name} ({type(err).__name__}: {err})")
    if missing:
        print("PREFLIGHT FAILED, cannot import:\n  " + "\n  ".join(missing), flush=True)
        sys.exit(2)


def patch_torchaudio_load() -> bool:
    """soundfile for torchaudio.load where torchaudio cannot load a WAV (no torchcodec / FFmpeg)."""
    import numpy as np
    import soundfile as sf
    import torch
    import torchaudio

    try:
        torchaudio.load(str(voice_path()))
        return False
    except Exception:  # noqa: BLE001 - ImportError, RuntimeError: any failure means the package cannot read it

        def load(path, *args, **kwargs):
            data, sr = sf.read(str(path), dtype="float32", always_2d=True)
            return torch.from_numpy(np.ascontiguousarray(data.T)), sr

        torchaudio.load = load
        return True


def voice_path() -> Path:
    try:
        from spinbot.samples import voice_path as packaged

        if packaged().is_file():
            return packaged()
    except Exception:  # noqa: BLE001 - useful-moonshine-onnx is not on the device: the carried copy
        pass
    return ROOT / ".whl-f5" / "beckett.wav"


# ---- models in the official formats ---------------------------------------------------------------------------------


def write_models(models: Path, tiny: bool) -> dict[str, Path]:
    """A random F5TTS_v1_Base (or a tiny one) and a random Vocos, as SPINBOT_MODELS_DIR/F5-TTS expects them."""
    from importlib.resources import files

    import torch
    import yaml
    from f5_tts.model import CFM, DiT
    from f5_tts.model.utils import get_tokenizer
    from safetensors.torch import save_file

    folder = models / "F5-TTS" / "F5TTS_v1_Base"
    folder.mkdir(parents=True)
    shutil.copy(str(files("f5_tts").joinpath("infer/examples/vocab.txt")), folder / "vocab.txt")
    config = yaml.safe_load(Path(str(files("f5_tts").joinpath("configs/F5TTS_v1_Base.yaml"))).read_text())["model"]
    if tiny:
        from spinbot.models.synth.tts import TINY_ARCH

        config["arch"] = TINY_ARCH
        (folder / "config.yaml").write_text(yaml.safe_dump({"model": config}))
    vocab_map, vocab_size = get_tokenizer(str(folder / "vocab.txt"), "custom")
    mel = config["mel_spec"]
    torch.manual_seed(0)
    cfm = CFM(
        transformer=DiT(**config["arch"], text_num_embeds=vocab_size, mel_dim=mel["n_mel_channels"]),
        mel_spec_kwargs=dict(mel),
        vocab_char_map=vocab_map,
    )
    with torch.no_grad():
        for p in cfm.parameters():
            p.normal_(0.0, 0.02)  # the zero-initialised layers too: every path does real work
    checkpoint = folder / "model_1250000.safetensors"
    save_file({f"ema_model.{k}": v.contiguous() for k, v in cfm.state_dict().items()}, str(checkpoint))
    params = sum(p.numel() for p in cfm.parameters())
    vocoder = write_vocoder(models / "F5-TTS" / "vocos-mel-24khz", VOCOS_TINY if tiny else VOCOS_REAL)
    return {
        "checkpoint": checkpoint,
        "vocab": folder / "vocab.txt",
        "vocoder": vocoder,
        "params": params,
        "config": folder / "config.yaml" if tiny else None,
    }


def write_vocoder(folder: Path, sizes: dict[str, int]) -> Path:
    import torch
    import yaml
    from vocos import Vocos

    folder.mkdir(parents=True)
    config = {
        "feature_extractor": {
            "class_path": "vocos.feature_extractors.MelSpectrogramFeatures",
            "init_args": {"sample_rate": 24000, "n_fft": 1024, "hop_length": 256, "n_mels": 100, "padding": "center"},
        },
        "backbone": {"class_path": "vocos.models.VocosBackbone", "init_args": {"input_channels": 100, **sizes}},
        "head": {
            "class_path": "vocos.heads.ISTFTHead",
            "init_args": {"dim": sizes["dim"], "n_fft": 1024, "hop_length": 256, "padding": "same"},
        },
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    torch.manual_seed(1)
    torch.save(Vocos.from_hparams(str(folder / "config.yaml")).state_dict(), folder / "pytorch_model.bin")
    return folder


# ---- the timed paths ------------------------------------------------------------------------------------------------


REPEATS = 5  # timed calls after the warm-up; the median is the figure


def timed(device: str, call) -> tuple[float, float, object, list[float]]:
    """Median wall seconds of REPEATS calls of call() after a warm-up call, peak MiB over them, the last result,
    and every call's seconds."""
    import statistics

    import torch

    call()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        result = call()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else 0.0
    return statistics.median(times), peak, result, times


def packed_error(models, device: str) -> dict:
    """The packed blocks (compiled) against the package's own DiT.forward (its mask switched on) on one padded
    CFG batch of the benchmark's shapes: the relative error over the real frames, in the model's dtype."""
    import torch

    from spinbot.backends.tts.f5.packed import known_lengths

    dit = models.cfm.transformer
    lengths = [1355, 1631, 1727, 1884] if device == "cuda" else [40, 31]
    frames, mel = max(lengths), models.mel["n_mel_channels"]
    generator = torch.Generator().manual_seed(3)
    x, cond = (torch.randn(len(lengths), frames, mel, generator=generator).to(device, models.dtype) for _ in "xc")
    text = torch.randint(0, 100, (len(lengths), 300), generator=generator).to(device)
    mask = torch.arange(frames, device=device)[None] < torch.tensor(lengths, device=device)[:, None]
    args = {
        "x": x,
        "cond": cond,
        "text": text,
        "time": torch.tensor(0.4, device=device, dtype=models.dtype),
        "mask": mask,
        "cfg_infer": True,
    }
    with torch.inference_mode():
        expected = dit.forward.package_forward(**args)
        with known_lengths(dit, lengths):
            got = dit(**args)
    valid = torch.cat([mask, mask])
    diff = (got[valid].float() - expected[valid].float()).norm() / expected[valid].float().norm()
    return {"lengths": lengths, "relative_error": float(f"{float(diff):.3g}")}


def run_ours(
    device: str,
    text: str,
    nfe: int,
    batch_frames: int | None,
    compile: bool = True,
    fp8: bool = False,
    attention: str = "auto",
) -> dict:
    import torch

    from spinbot.backends.tts.base import Reference
    from spinbot.backends.tts.f5 import backend as f5
    from spinbot.media.audio import load_audio
    from spinbot.settings import reset_settings
    from spinbot.tasks.tts import TextToSpeechParams
    from spinbot.worker.model_cache import get_model_cache

    if batch_frames is not None:
        f5.BATCH_FRAMES[device] = batch_frames
    os.environ.update(SPINBOT_TTS_COMPILE=str(compile), SPINBOT_TTS_FP8=str(fp8), SPINBOT_TTS_ATTENTION=attention)
    reset_settings()
    audio, sr = load_audio(voice_path())
    params = TextToSpeechParams(device=device, nfe_step=nfe, seed=SEED)
    native = f5.NativeF5Backend()

    def call():
        voice = native.prepare(Reference(audio, sr, REF_TEXT), params)
        return native.speak_script(text, voice, params, lambda f, m: None)

    started = time.perf_counter()
    seconds, peak, spoken, times = timed(device, call)
    first_call = time.perf_counter() - started - sum(times)  # the warm-up call: loading and compiling
    extra = {"each_call_seconds": [round(t, 4) for t in times]}
    from spinbot.backends.tts.f5.loading import Speedups, load_models
    from spinbot.settings import get_settings

    models = load_models(
        params.model,
        get_settings().models_dir,
        torch.device(device),
        Speedups(compile=compile, fp8=fp8, attention=attention),
    )
    extra["attention_kernel"] = models.cfm.transformer.forward.kernel
    if not fp8:
        extra["packed_vs_package_forward"] = packed_error(models, device)
    if PROFILE:
        extra["profile"] = profile(device, call)
    get_model_cache().clear()
    if device == "cuda":
        torch.cuda.empty_cache()
    speech = len(spoken.audio) / f5.SAMPLE_RATE
    return {
        "seconds": round(seconds, 4),
        "speech_seconds": round(speech, 3),
        "rtf": round(seconds / speech, 5),
        "peak_vram_mib": round(peak, 1),
        "first_call_seconds": round(first_call, 1),
        "batch_frames": f5.BATCH_FRAMES[device],
        "compile": compile and device == "cuda",
        "fp8": fp8 and device == "cuda",
        "chunks": spoken.chunks,
        **extra,
    }


PROFILE = False  # --profile


def profile(device: str, call) -> dict:
    """Where one call's time goes: the CUDA kernels' total against the wall time, and the top kernels."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    started = time.perf_counter()
    with torch_profile(activities=activities) as prof:
        call()
        if device == "cuda":
            torch.cuda.synchronize()
    wall = time.perf_counter() - started
    events = prof.key_averages()
    kernel_us = sum(e.self_device_time_total for e in events if e.device_type.name == "CUDA")
    table = events.table(
        sort_by="self_cuda_time_total" if device == "cuda" else "self_cpu_time_total",
        row_limit=25,
        max_name_column_width=70,
    )
    print(table, flush=True)
    return {"wall_s_profiled": round(wall, 3), "cuda_kernel_s": round(kernel_us / 1e6, 3), "top": table}


def f5_batch_frames(device: str) -> int:
    from spinbot.backends.tts.f5 import backend as f5

    return f5.BATCH_FRAMES.get(device, f5.BATCH_FRAMES["cpu"])


def run_package(device: str, text: str, nfe: int, files: dict) -> dict:
    import torch
    from f5_tts.api import F5TTS

    if files.get("config"):  # --smoke: F5TTS reads only the package's yaml; give it the tiny architecture
        import f5_tts.api
        from omegaconf import OmegaConf

        tiny = OmegaConf.load(str(files["config"]))
        f5_tts.api.OmegaConf = types.SimpleNamespace(load=lambda path: tiny)

    tts = F5TTS(
        model="F5TTS_v1_Base",
        ckpt_file=str(files["checkpoint"]),
        vocab_file=str(files["vocab"]),
        vocoder_local_path=str(files["vocoder"]),
        device=device,
    )
    quiet = {"show_info": lambda *a, **k: None, "progress": None}

    call = functools.partial(tts.infer, str(voice_path()), REF_TEXT, text, nfe_step=nfe, seed=SEED, **quiet)
    seconds, peak, (wave, sr, _), times = timed(device, call)
    speech = len(wave) / sr
    del call, tts
    if device == "cuda":
        torch.cuda.empty_cache()
    return {
        "seconds": round(seconds, 4),
        "speech_seconds": round(speech, 3),
        "rtf": round(seconds / speech, 5),
        "peak_vram_mib": round(peak, 1),
        "dtype": "float16 (the package's choice on CUDA)",
        "each_call_seconds": [round(t, 4) for t in times],
    }


ONLY: set[str] | None = None  # --only


def run_step(results: dict, name: str, fn, *args) -> None:
    """One path; a failure is recorded and printed, and the other paths still run."""
    if ONLY is not None and name not in ONLY:
        return
    print(f"--- {name}", flush=True)
    try:
        results[name] = fn(*args)
        print(json.dumps({k: v for k, v in results[name].items() if k != "chunks"}), flush=True)
    except Exception as err:  # noqa: BLE001
        traceback.print_exc()
        results[name] = {"error": f"{type(err).__name__}: {str(err)[:400]}"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true", help="tiny models on the CPU, nothing written")
    parser.add_argument("--out", type=Path, default=None, help=f"result file (default {RESULTS})")
    parser.add_argument("--only", default=None, help="comma-separated paths to time (default: all)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="only our batched path: 3 more timed calls and a torch.profiler table of one",
    )
    args = parser.parse_args()
    global ONLY
    ONLY = set(args.only.split(",")) if args.only else None
    stand_ins = install_stand_ins()
    from spinbot.backends.tts.f5.loading import import_f5_model

    import_f5_model()  # first: beside flash-attn-4, a plain `import f5_tts.model` fails (see import_f5_model)
    preflight()
    import torch

    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA GPU: run on the device, or use --smoke")
    text, nfe = (SMOKE_TEXT, 2) if args.smoke else (TEXT, NFE_STEP)
    workdir = Path(tempfile.mkdtemp(prefix="f5bench-"))
    os.environ.update(
        SPINBOT_MODELS_DIR=str(workdir / "models"),
        SPINBOT_DATA_DIR=str(workdir / "data"),
        SPINBOT_MODEL_CACHE_BYTES=str(8 * 2**30),
    )
    results: dict = {
        "benchmark": "f5tts_gpu",
        "date": date.today().isoformat(),
        "command": COMMAND,
        "machine": machine(),
        "torch": torch.__version__,
        "smoke": args.smoke,
        "stand_ins": stand_ins,
        "nfe_step": nfe,
        "text_chars": len(text),
        "target_rtf": TARGET_RTF,
    }
    try:
        results["torchaudio_load_replaced"] = patch_torchaudio_load()
        files = write_models(workdir / "models", tiny=args.smoke)
        results["model_params"] = files.pop("params")
        default_frames = f5_batch_frames(device)
        if args.profile:
            global PROFILE
            PROFILE = True
            run_step(results, "ours", run_ours, device, text, nfe, default_frames)
            print(json.dumps(results["ours"], indent=1)[:3000])
            return
        run_step(results, "ours", run_ours, device, text, nfe, default_frames)
        run_step(results, "ours_flash2", run_ours, device, text, nfe, default_frames, True, False, "flash2")
        run_step(results, "ours_fp8", run_ours, device, text, nfe, default_frames, True, True)
        run_step(results, "ours_eager", run_ours, device, text, nfe, default_frames, False)
        run_step(results, "ours_sequential", run_ours, device, text, nfe, 1)
        run_step(results, "package", run_package, device, text, nfe, files)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ours, package = results.get("ours", {}), results.get("package", {})
    if "rtf" in ours and "rtf" in package:
        results["speedup_vs_package"] = round(package["seconds"] / ours["seconds"], 2)
        results["meets_target"] = ours["rtf"] < TARGET_RTF and ours["seconds"] <= package["seconds"]
    text_out = json.dumps(results, indent=2)
    print(text_out)
    if not args.smoke or args.out:
        out = args.out or RESULTS
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text_out + "\n")


if __name__ == "__main__":
    main()
