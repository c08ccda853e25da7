"""Benchmark the native upscale_video backend on a CUDA GPU: 832x480 -> 1664x960, a face in every frame.

(Past 400 lines: the backend and the plain per-frame loop it must beat are timed in the same run on the same
models, so both live in the one script the device command runs.)

Run on the GPU machine, from the repository root (needs the gpu extra and spinbot's own dependencies; about
four minutes, three of them compiling the models on a fresh machine):
    python benchmarks/upscale_gpu.py                  (writes benchmarks/results/upscale_gpu.json)
    python benchmarks/upscale_gpu.py --smoke          (plumbing check on any machine, writes nothing)
Target (issue 7): at least 30 frames per second end to end (decode -> upscale -> restore -> H.264 mp4 with the
audio), and at least 3x a plain per-frame loop over the same models, timed in the same run.

The models are the real-size architectures with random weights, written in the official checkpoint layouts
(spinbot/models/synth/upscale.py builds them): RealESRGAN_x2plus (RRDBNet, 23 blocks, 64 features), CodeFormer,
RetinaFace-ResNet50. A random detector finds no real face, so its three 1x1 heads are set (zero weights, chosen
biases) to report one 256-px face with a frontal landmark layout on every frame; the rest of the detector is
random and runs in full. max_faces=1: a talking head has one face, restored on every frame.

What is timed, each on the same warm models:
- pipelined: NativeUpscaler.stream(), the fast path (decode, GPU and encode threads overlapping, compiled
  models), after two warm-up batches that compile them (first_two_batches_seconds);
- task_batch_by_batch: spinbot.tasks.upscale.upscale_stream as it is now (the protocol methods, batch by batch,
  no overlap; faces detected every 10th frame); task_with_live_output: the same, also writing the live HLS
  segments that the task writes while it runs (SPINBOT_LIVE_OUTPUT, on by default);
- plain_loop: per frame, in one thread: decode, detect, upscale, restore, encode, with the same models and
  precision (eager: the protocol methods), and the same in float32 (plain_loop_fp32), over --plain-frames frames;
- stages: GPU milliseconds per frame of each step, and CPU milliseconds per frame to decode and encode.
The GPU busy fraction is NVML's utilization (the share of time a kernel was running), sampled every 50 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from machine import machine  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "upscale_gpu.json"
COMMAND = "python benchmarks/upscale_gpu.py"
WIDTH, HEIGHT, FPS, AUDIO_RATE = 832, 480, 25, 24_000
FACE_HEAD = (2, 0)  # RetinaFace level 2 (stride 32), anchor 0: 256 px, a talking head's face at 480p
TARGET_FPS, TARGET_SPEEDUP = 30.0, 3.0


def write_clip(path: Path, frames: int) -> Path:
    """The astronaut photo's head and shoulders drifting on an 832x480 frame, with a voiced tone."""
    from skimage import data

    from spinbot.media.video import VideoWriter

    portrait = cv2.resize(data.astronaut()[0:288, 80:368], (360, 360), interpolation=cv2.INTER_AREA)
    background = np.full((HEIGHT, WIDTH, 3), (70, 90, 110), np.uint8)
    t = np.arange(round(frames / FPS * AUDIO_RATE)) / AUDIO_RATE
    audio = (0.2 * np.sin(2 * np.pi * 140 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)
    with VideoWriter(path, FPS, WIDTH, HEIGHT, audio=(audio, AUDIO_RATE)) as writer:
        for i in range(frames):
            frame = background.copy()
            x = 236 + round(40 * np.sin(2 * np.pi * i / 50))
            y = 60 + round(20 * np.sin(2 * np.pi * i / 37))
            frame[y : y + 360, x : x + 360] = portrait
            writer.write(frame)
    return path


class BusySampler:
    """NVML GPU utilization sampled in a thread; mean of the samples taken between start and stop."""

    def __init__(self, period: float = 0.05):
        self.period, self.samples = period, []
        self._stop = threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self._read = lambda: pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
        except Exception:  # noqa: BLE001 - no NVML: no busy figure, the rest still runs
            self._read = None

    def __enter__(self) -> BusySampler:
        if self._read is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.samples.append(self._read())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._read is not None:
            self._thread.join()

    @property
    def busy(self) -> float | None:
        return round(float(np.mean(self.samples)) / 100, 3) if self.samples else None


def run_pipelined(backend, clip: Path, out: Path, fidelity: float, cap: int = 0) -> dict:
    from spinbot.media.video import VideoWriter, iter_frames, read_audio

    frames = faces = 0
    started = time.perf_counter()
    with BusySampler() as sampler, VideoWriter(out, FPS, WIDTH * 2, HEIGHT * 2, audio=read_audio(clip)) as writer:
        for frame, count in backend.stream(iter_frames(clip, cap), fidelity):
            writer.write(frame)
            frames, faces = frames + 1, faces + count
    return throughput(frames, time.perf_counter() - started, sampler, faces)


def throughput(frames: int, seconds: float, sampler: BusySampler, faces: int) -> dict:
    """One timed loop's record: frames, seconds, frames per second, GPU busy share, faces restored."""
    return {
        "frames": frames,
        "seconds": round(seconds, 2),
        "fps": round(frames / seconds, 1),
        "gpu_busy": sampler.busy,
        "faces_restored": faces,
    }


def run_task_path(backend, params, clip: Path, out: Path, total: int, live: bool = False) -> dict:
    """The task's loop; with live, also the live HLS output the task writes (each batch a segment, not stored)."""
    from spinbot.media.segments import HlsSegmenter
    from spinbot.media.video import VideoWriter, read_audio
    from spinbot.tasks.upscale import upscale_stream

    class Ctx:
        @staticmethod
        def progress(fraction: float, message: str) -> None:
            pass

    started = time.perf_counter()
    with BusySampler() as sampler, VideoWriter(out, FPS, WIDTH * 2, HEIGHT * 2, audio=read_audio(clip)) as writer:
        segments = (
            HlsSegmenter(
                out.with_suffix(".live"),
                FPS,
                WIDTH * 2,
                HEIGHT * 2,
                params.batch_size,
                lambda name, path, content_type: None,
                audio=read_audio(clip),
            )
            if live
            else None
        )
        frames, faces = upscale_stream(
            Ctx(), backend, params, clip, total, writer, (WIDTH * 2, HEIGHT * 2), live=segments
        )
        if segments is not None:
            segments.finish()
    return throughput(frames, time.perf_counter() - started, sampler, faces) | {"batch_size": params.batch_size}


def run_plain_loop(backend, clip: Path, out: Path, fidelity: float, frames: int) -> dict:
    """The straightforward loop: one frame at a time, every step waiting for the last."""
    from spinbot.media.faces import Box
    from spinbot.media.video import VideoWriter, iter_frames

    s = backend.scale
    done = faces = 0
    started = time.perf_counter()
    with BusySampler() as sampler, VideoWriter(out, FPS, WIDTH * 2, HEIGHT * 2) as writer:
        for frame in iter_frames(clip, frames):
            boxes = [Box(b.x * s, b.y * s, b.w * s, b.h * s) for b in backend.detect_faces(frame)]
            upscaled = backend.upscale_batch([frame])[0]
            if boxes:
                upscaled = backend.restore_faces(upscaled, boxes, fidelity)
            writer.write(upscaled)
            done, faces = done + 1, faces + len(boxes)
    return throughput(done, time.perf_counter() - started, sampler, faces)


def gpu_ms(fn, repeat: int = 5) -> float:
    import torch

    fn()
    if not torch.cuda.is_available():  # --smoke on a CPU: wall time
        started = time.perf_counter()
        for _ in range(repeat):
            fn()
        return (time.perf_counter() - started) * 1000 / repeat
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeat):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / repeat


def stage_times(backend, clip: Path, batch: int, fidelity: float) -> dict:
    """Milliseconds per frame (per face for the restoration) of each step, measured alone."""
    import torch

    from spinbot.backends.upscale.face_alignment import similarity, upscaled_points
    from spinbot.media.video import VideoWriter, iter_frames

    started = time.perf_counter()
    frames = list(iter_frames(clip, 4 * batch))
    decode_ms = (time.perf_counter() - started) * 1000 / len(frames)
    x = backend._to_device(torch.from_numpy(np.stack(frames[:batch])))
    with torch.inference_mode():
        up = backend._upscale(x)
        faces = backend._detect(x)
        transforms = [
            (i, similarity(upscaled_points(f.landmarks[0], 2), backend._template()))
            for i, f in enumerate(faces)
            if len(f)
        ]
        per_face = max(1, len(transforms))
        out = {
            "decode_cpu": round(decode_ms, 2),
            "upscale_gpu_eager": round(gpu_ms(lambda: backend._upscale(x)) / batch, 2),
            "upscale_gpu_compiled": round(gpu_ms(lambda: backend._upscale(x, fast=True)) / batch, 2),
            "detect_gpu_and_sync": round(gpu_ms(lambda: backend._detect(x)) / batch, 2),
            "restore_gpu_per_face_eager": round(
                gpu_ms(lambda: backend._restore(up.clone(), transforms, fidelity)) / per_face, 2
            ),
            "restore_gpu_per_face_compiled": round(
                gpu_ms(lambda: backend._restore(up.clone(), transforms, fidelity, fast=True)) / per_face, 2
            ),
        }
        host = backend.upscale_batch(frames[:batch])
    with tempfile.TemporaryDirectory() as tmp, VideoWriter(Path(tmp) / "e.mp4", FPS, WIDTH * 2, HEIGHT * 2) as w:
        started = time.perf_counter()
        for _ in range(4):
            for frame in host:
                w.write(frame)
        out["encode_cpu"] = round((time.perf_counter() - started) * 1000 / (4 * len(host)), 2)
    return out


def profile_stream(backend, clip: Path, fidelity: float, frames: int) -> None:
    """Where the pipelined path spends its time: kernel time against wall time, and the costliest ops."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from spinbot.media.video import iter_frames

    started = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in backend.stream(iter_frames(clip, frames), fidelity):
            pass
        torch.cuda.synchronize()
    wall = time.perf_counter() - started
    events = prof.key_averages()
    kernels = sum(e.self_device_time_total for e in events) / 1e6
    print(
        f"profile: {frames} frames in {wall:.2f} s wall (profiled), device time {kernels:.2f} s ({kernels / wall:.0%})"
    )
    print(events.table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=60))
    print(events.table(sort_by="self_device_time_total", row_limit=12, max_name_column_width=60))


def check_output(path: Path, frames: int) -> dict:
    from spinbot.media.video import probe

    info = probe(path)
    assert (info.width, info.height, info.frames) == (WIDTH * 2, HEIGHT * 2, frames), info
    assert info.audio_duration is not None and abs(info.audio_duration - frames / FPS) <= 1 / FPS, info
    return {
        "size": f"{info.width}x{info.height}",
        "frames": info.frames,
        "audio_seconds": round(info.audio_duration, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--plain-frames", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--fidelity", type=float, default=0.5)
    parser.add_argument("--skip-task-path", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--profile", action="store_true", help="also profile three pipelined batches")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="plumbing check on any device: tiny upscaler, no faces, a few frames; writes no result",
    )
    args = parser.parse_args()

    import torch

    if args.smoke:
        args.frames, args.plain_frames, args.batch_size, args.out = 8, 2, 4, None
    elif not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    # cudnn.benchmark stays off: PyTorch keeps cuDNN's tuned plans per thread, so the pipeline's device thread
    # (a new one for each video) would tune again every time; measured: 9.9 fps with it, 24.2 without (eager).
    from spinbot.backends.upscale.native import NativeConfig, NativeUpscaler
    from spinbot.models.synth.upscale import write_models
    from spinbot.settings import reset_settings
    from spinbot.tasks.upscale import AIUpscalerParams

    tmp = Path(tempfile.mkdtemp(prefix="upscale-gpu-"))
    started = time.perf_counter()
    size = {"num_feat": 64, "num_block": 23, "face": FACE_HEAD}
    if args.smoke:
        size = {"num_feat": 16, "num_block": 1, "face": None}
    write_models(tmp / "models", **size)
    os.environ["SPINBOT_MODELS_DIR"] = str(tmp / "models")
    reset_settings()
    clip = write_clip(tmp / "clip.mp4", args.frames)
    print(f"setup (checkpoints, clip) {time.perf_counter() - started:.1f} s", flush=True)

    params = AIUpscalerParams(batch_size=args.batch_size, codeformer_fidelity=args.fidelity)
    config = NativeConfig(max_faces=1, face_confidence=1.0 if args.smoke else NativeConfig.face_confidence)
    backend = NativeUpscaler(config=config)
    started = time.perf_counter()
    backend.load(params)
    load_seconds = time.perf_counter() - started
    started = time.perf_counter()
    # The first batches compile the models (config.compile).
    run_pipelined(backend, clip, tmp / "warm.mp4", args.fidelity, cap=2 * args.batch_size)
    warmup_seconds = time.perf_counter() - started
    print(f"load {load_seconds:.1f} s, first two batches (compile) {warmup_seconds:.1f} s", flush=True)
    stages = stage_times(backend, clip, args.batch_size, args.fidelity)
    print("stages (ms per frame; restore per face):", stages, flush=True)

    results = {"pipelined": run_pipelined(backend, clip, tmp / "pipelined.mp4", args.fidelity)}
    results["pipelined"]["output"] = check_output(tmp / "pipelined.mp4", args.frames)
    print("pipelined:", results["pipelined"], flush=True)
    if not args.skip_task_path:
        results["task_batch_by_batch"] = run_task_path(backend, params, clip, tmp / "task.mp4", args.frames)
        print("task batch by batch:", results["task_batch_by_batch"], flush=True)
        results["task_with_live_output"] = run_task_path(backend, params, clip, tmp / "live.mp4", args.frames, True)
        print("task with the live output:", results["task_with_live_output"], flush=True)
    results["plain_loop"] = run_plain_loop(backend, clip, tmp / "plain.mp4", args.fidelity, args.plain_frames)
    print("plain loop:", results["plain_loop"], flush=True)
    fp32 = NativeUpscaler(config=replace(config, half=False))
    fp32.load(params)
    run_plain_loop(fp32, clip, tmp / "warm32.mp4", args.fidelity, 2)
    results["plain_loop_fp32"] = run_plain_loop(fp32, clip, tmp / "plain32.mp4", args.fidelity, args.plain_frames)
    print("plain loop fp32:", results["plain_loop_fp32"], flush=True)

    if args.profile:
        profile_stream(backend, clip, args.fidelity, 3 * args.batch_size)
    fps = results["pipelined"]["fps"]
    speedup = round(fps / results["plain_loop"]["fps"], 2)
    report = {
        "benchmark": "upscale_video native backend, end to end "
        "(decode -> upscale -> face restore -> H.264 mp4 + audio)",
        "command": COMMAND + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""),
        "date": date.today().isoformat(),
        "machine": machine(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "input": f"{WIDTH}x{HEIGHT}",
        "output": f"{WIDTH * 2}x{HEIGHT * 2}",
        "video_fps": FPS,
        "frames": args.frames,
        "batch_size": args.batch_size,
        "codeformer_fidelity": args.fidelity,
        "models": {
            "upscaler": "RealESRGAN_x2plus layout (RRDBNet, 23 blocks, 64 features, pixel-unshuffle), "
            f"random weights, {backend.models.dtype}",
            "restorer": "CodeFormer, full size, random weights, bfloat16 autocast",
            "detector": "RetinaFace-ResNet50, random weights, heads set to one 256-px face per frame, float16",
        },
        "load_seconds": round(load_seconds, 1),
        "first_two_batches_seconds": round(warmup_seconds, 1),
        "stages_ms": stages,
        **results,
        "speedup_vs_plain_loop": speedup,
        "speedup_vs_plain_loop_fp32": round(fps / results["plain_loop_fp32"]["fps"], 2),
        "target": {"fps": TARGET_FPS, "speedup": TARGET_SPEEDUP},
        "target_met": fps >= TARGET_FPS and speedup >= TARGET_SPEEDUP,
    }
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"\npipelined {fps} fps (GPU busy {results['pipelined']['gpu_busy']}), plain loop "
        f"{results['plain_loop']['fps']} fps -> {speedup}x; fp32 plain loop "
        f"{results['plain_loop_fp32']['fps']} fps; target met: {report['target_met']}\nwrote {args.out}"
    )


if __name__ == "__main__":
    main()
