"""Benchmark upscale_video's memory: peak RSS and seconds on a 10 s and a 60 s video, each run in its own process.

Run: .venv/bin/python benchmarks/upscale_memory.py   (writes benchmarks/results/upscale_memory.json)
Target (issue 3): peak RSS under 1.5 GiB on a 60 s video, bounded by the batch and not by the video's length:
the 10 s and 60 s runs at the same batch_size should peak alike, and a larger batch_size should peak higher.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "upscale_memory.json"
COMMAND = "python benchmarks/upscale_memory.py"
SIDE, FPS, AUDIO_RATE = 512, 25, 24_000
TARGET_MIB = 1.5 * 1024
# (video seconds, batch_size): the seed's default batch on both lengths, then a 4x batch on the short video.
RUNS = [(10, 50), (60, 50), (10, 200)]


def write_clip(path: Path, seconds: int) -> Path:
    """The astronaut photo's head and shoulders at 512x512, drifting like a talking head, with a voiced tone."""
    from spinbot.media.video import VideoWriter

    room = SIDE // 8
    portrait = cv2.resize(data.astronaut()[0:288, 80:368], (SIDE + room,) * 2, interpolation=cv2.INTER_AREA)
    t = np.arange(seconds * AUDIO_RATE) / AUDIO_RATE
    audio = (0.2 * np.sin(2 * np.pi * 140 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)
    with VideoWriter(path, FPS, SIDE, SIDE, audio=(audio, AUDIO_RATE)) as writer:
        for i in range(seconds * FPS):
            x = round(room / 2 * (1 + np.sin(2 * np.pi * i / 50)))
            y = round(room / 2 * (1 + np.sin(2 * np.pi * i / 37)))
            writer.write(portrait[y : y + SIDE, x : x + SIDE])
    return path


def upscale_in_this_process(clip: Path, store_root: Path, batch_size: int) -> None:
    """The child: run the task once and print its output metadata and this process's own peak RSS as JSON."""
    from spinbot.control.dispatch import TaskRequest, execute_task
    from spinbot.storage.local import LocalStore

    store = LocalStore(store_root)
    store.upload(clip, "inputs/clip.mp4")
    request = TaskRequest(
        job_id="bench",
        node_id="upscale_video",
        task="upscale_video",
        params={"batch_size": batch_size},
        artifacts={"video": "inputs/clip.mp4"},
    )
    started, cpu_started = time.perf_counter(), time.process_time()
    output = execute_task(request, store)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"meta": output.meta, "task_seconds": seconds, "task_cpu_seconds": cpu, "peak_mib": peak_mib}))


def measure(clip: Path, seconds: int, batch_size: int, store_root: Path) -> dict:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(clip), str(store_root), str(batch_size)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        sys.exit(f"upscale run failed: {proc.stderr[-2000:]}")
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    frames = child["meta"]["frames"]
    return {
        "video_seconds": seconds,
        "frames": frames,
        "batch_size": batch_size,
        "input": f"{SIDE}x{SIDE}",
        "output": "x".join(map(str, child["meta"]["size"])),
        "peak_rss_mib": round(child["peak_mib"], 1),
        "process_seconds": round(time.perf_counter() - started, 2),
        "task_seconds": round(child["task_seconds"], 2),
        "ms_per_frame": round(1000 * child["task_seconds"] / frames, 1),
        "cpu_ms_per_frame": round(1000 * child["task_cpu_seconds"] / frames, 1),
        "faces_restored": child["meta"]["faces_restored"],
    }


def markdown(runs: list[dict]) -> str:
    cells = "; ".join(
        f"{r['video_seconds']} s (batch {r['batch_size']}): {r['peak_rss_mib']:.0f} MiB, "
        f"{r['task_seconds']:.1f} s ({r['ms_per_frame']:.1f} ms/frame)"
        for r in runs
    )
    return f"| upscale_video peak RSS, {SIDE}x{SIDE} -> {2 * SIDE}x{2 * SIDE} @ {FPS} fps | {cells} |"


def main() -> None:
    load_at_start = os.getloadavg()[0]  # the machine is shared: other work slows the timings, not the memory
    runs = []
    with tempfile.TemporaryDirectory(prefix="spinbot-bench-") as tmp:
        clips = {seconds: write_clip(Path(tmp) / f"clip{seconds}.mp4", seconds) for seconds in {s for s, _ in RUNS}}
        for i, (seconds, batch_size) in enumerate(RUNS):
            runs.append(measure(clips[seconds], seconds, batch_size, Path(tmp) / f"store{i}"))
            print(json.dumps(runs[-1]), flush=True)
    long_run = next(r for r in runs if r["video_seconds"] == 60)
    result = {
        "command": COMMAND,
        "machine": machine(),
        "load_average_at_start": load_at_start,
        "runs": runs,
        "target_peak_rss_mib": TARGET_MIB,
        "met": long_run["peak_rss_mib"] < TARGET_MIB,
        "markdown": markdown(runs),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(result["markdown"])


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        upscale_in_this_process(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
