"""What the upload sandbox (spinbot/media/sandbox.py) costs: one portrait and one voice upload check in-process
against in a sandbox worker, cold (the first check: the decoders' imports, and for the sandbox a worker's start) and
warm (the median of repeated checks), and the address space a worker needs (what SPINBOT_UPLOAD_CHECK_MEMORY_BYTES
must leave room for), also for a 40 MP portrait, the largest SPINBOT_MAX_IMAGE_PIXELS lets through.

Run: python benchmarks/upload_check.py   (writes benchmarks/results/upload_check.json)
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "upload_check.json"
CHECK = "spinbot.media.upload_check:check_upload"
REPEATS = 20


def _mib(pid: int) -> dict[str, float]:
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return {k: round(int(fields[k].split()[0]) / 1024, 1) for k in ("VmSize", "VmPeak", "VmHWM")}


def _timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main() -> None:
    from spinbot.media.sandbox import Limits, Sandbox, resolve
    from spinbot.samples import portrait_path, voice_path
    from spinbot.settings import get_settings

    settings = get_settings()
    voice_seconds = (settings.min_voice_seconds, settings.max_voice_seconds)
    with tempfile.TemporaryDirectory(prefix="spinbot-bench-") as tmp:
        files = {"portrait": str(portrait_path(Path(tmp))), "voice": str(voice_path())}
        args = {kind: (kind, path, settings.max_image_pixels, voice_seconds) for kind, path in files.items()}
        result: dict[str, object] = {"files": {k: Path(v).name for k, v in files.items()}}

        # in this process, as with SPINBOT_UPLOAD_CHECK_SANDBOX=false: the first check imports the decoders
        cold = {kind: _timed(lambda kind=kind: resolve(CHECK)(*args[kind])) for kind in ("portrait", "voice")}
        warm = {
            kind: statistics.median(_timed(lambda kind=kind: resolve(CHECK)(*args[kind])) for _ in range(REPEATS))
            for kind in args
        }
        result["in_process"] = {"cold_ms": _ms(cold), "warm_median_ms": _ms(warm)}

        box = Sandbox(Limits.from_settings(settings))
        cold = {kind: _timed(lambda kind=kind: box.run("x", CHECK, *args[kind])) for kind in ("portrait", "voice")}
        warm = {
            kind: statistics.median(_timed(lambda kind=kind: box.run("x", CHECK, *args[kind])) for _ in range(REPEATS))
            for kind in args
        }
        workers = box.pids()
        result["sandbox"] = {
            "cold_ms": _ms(cold),
            "warm_median_ms": _ms(warm),
            "worker_after_checks_mib": _mib(workers[0]),
        }

        big = Path(tmp) / "40mp.jpg"
        _write_40mp(big)
        big_args = ("portrait", str(big), settings.max_image_pixels, voice_seconds)
        result["portrait_40mp"] = {
            "in_process_ms": round(_timed(lambda: resolve(CHECK)(*big_args)) * 1000, 1),
            "sandbox_ms": round(_timed(lambda: box.run("x", CHECK, *big_args)) * 1000, 1),
            "worker_mib": max((_mib(pid) for pid in workers), key=lambda m: m["VmPeak"]),
        }
        box.close()
    result.update(
        command="python benchmarks/upload_check.py",
        machine=machine(),
        memory_limit_bytes=settings.upload_check_memory_bytes,
        when=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def _ms(seconds: dict[str, float]) -> dict[str, float]:
    return {kind: round(s * 1000, 1) for kind, s in seconds.items()}


def _write_40mp(path: Path) -> None:
    import cv2
    import numpy as np

    y, x = np.mgrid[0:5000, 0:8000]
    image = np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)
    cv2.imwrite(str(path), image)


if __name__ == "__main__":
    main()
