"""Benchmark `spinbot demo` end to end on embedded defaults: wall time, per-node seconds, peak memory.

Run: .venv/bin/python benchmarks/demo.py   (writes benchmarks/results/demo.json)
Target (issue 3): under 60 s wall in total on the 2-core CPU machine.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "demo.json"


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="spinbot-bench-") as tmp:
        env = {**os.environ, "SPINBOT_DATA_DIR": f"{tmp}/data", "SPINBOT_OLLAMA_HOST": "http://127.0.0.1:9"}
        out = Path(tmp) / "demo.mp4"
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "spinbot", "demo", "--out", str(out)],
            env=env,
            cwd=tmp,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            sys.exit(f"demo failed: {proc.stderr[-2000:]}")
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        nodes = _node_timings(env)
        info = _probe(out)
    result = {
        "command": "python benchmarks/demo.py",
        "machine": machine(),
        "wall_seconds": round(wall, 2),
        "peak_rss_mib": round(peak_mib, 1),
        "nodes": nodes,
        "output": info,
        "target_seconds": 60,
        "met": wall < 60,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def _node_timings(env: dict[str, str]) -> dict[str, dict[str, object]]:
    os.environ.update(env)
    from spinbot.settings import get_settings
    from spinbot.state.db import get_engine
    from spinbot.state.store import JobStore

    job = JobStore(get_engine(get_settings().resolved_database_url)).list(limit=1)[0][0]
    return {
        n.node_id: {
            "seconds": round(n.seconds or 0, 2),
            "meta_seconds": (n.output or {}).get("meta", {}).get("seconds"),
            "peak_rss_mib_after": (n.output or {}).get("meta", {}).get("peak_rss_mib"),
        }
        for n in job.nodes
    }


def _probe(path: Path) -> dict[str, object]:
    from spinbot.media.video import probe

    info = probe(path)
    return {
        "width": info.width,
        "height": info.height,
        "fps": info.fps,
        "frames": info.frames,
        "video_seconds": round(info.duration, 3),
        "audio_seconds": round(info.audio_duration or 0, 3),
    }


if __name__ == "__main__":
    main()
