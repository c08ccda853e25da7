"""One native job end to end, as a user runs it: model files in place, `spinbot models check`, a `spinbot worker`
with every backend native, and `spinbot run` twice (the second job in the same worker, models kept).

Run on the GPU machine from the repository root (about 8 minutes on an H200 with `--write full`; the packages the
machine lacks: benchmarks/device_packages.py, whose docstring gives the two device calls):
    python benchmarks/native_e2e.py --models /tmp/models --write full --redis-server PATH/redis-server \
        --out $OUT/native_e2e.json
    python benchmarks/native_e2e.py --models /tmp/models --redis-server PATH/redis-server --jobs 1 \
        --memory-fraction 0.56 --out $OUT/native_e2e_80gb.json      (the same files, an 80 GB card's share)
    python benchmarks/native_e2e.py --smoke                           (CPU, tiny models: the plumbing)

`--write full` writes every seed default's file with random weights in its real format and name
(`spinbot.models` writer: Wan 2.1 I2V 14B, the InfiniteTalk adapter, the lightx2v LoRA, UMT5-XXL, CLIP-H, the Wan
VAE, chinese-wav2vec2-base, F5TTS_v1_Base + Vocos, RealESRGAN x2, CodeFormer, RetinaFace). Random weights make
noise instead of a face and speech, but every shape, every file and every step is the real one.

Recorded: each model's load time and size (the worker's "model loaded" log lines), each node's time, the job's
wall time and GPU seconds per second of video, peak VRAM (nvidia-smi, the whole card) and peak host RAM (the
worker's process tree), the second job's time and loads (none expected), and the output checked: frames ==
round(speech seconds x fps), 2x the talking head's size, an audio stream.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from machine import machine  # noqa: E402

# About 10 s of speech at the Beckett reference's pace (F5-TTS sizes a chunk from the reference's characters/s).
SCRIPT = "Sleep is when the brain files the day away. Rest well, and wake up ready."
REF_TEXT = "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better."
NODES = ("script", "f5_to_tts", "infinite_talk", "upscale_video")


class Sampler(threading.Thread):
    """Peak host RSS of a process tree and peak used memory of the GPU, sampled every `period` seconds."""

    def __init__(self, pid: int, period: float = 0.5):
        super().__init__(daemon=True)
        self.pid, self.period = pid, period
        self.peak_rss = self.peak_vram = 0
        self._stop = threading.Event()

    def reset(self) -> None:
        self.peak_rss = self.peak_vram = 0

    def run(self) -> None:
        import psutil

        while not self._stop.wait(self.period):
            try:
                proc = psutil.Process(self.pid)
                rss = sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])
                self.peak_rss = max(self.peak_rss, rss)
            except psutil.Error:
                pass
            self.peak_vram = max(self.peak_vram, gpu_used_bytes())

    def stop(self) -> None:
        self._stop.set()


def gpu_used_bytes() -> int:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        return int(out.split()[0]) * 1024 * 1024
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spinbot(
    *args: str, env: dict[str, str], log: Path | None = None, check: bool = True, timeout: float = 1800
) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    with open(log, "a") if log else contextlib.nullcontext(subprocess.PIPE) as out:
        proc = subprocess.run(
            [sys.executable, "-m", "spinbot", *args],
            env=env,
            cwd=ROOT,
            text=True,
            timeout=timeout,
            stdout=subprocess.PIPE,
            stderr=out,
        )
    if check and proc.returncode != 0:
        tail = (proc.stderr or (log.read_text()[-3000:] if log else "")) + proc.stdout
        raise RuntimeError(f"spinbot {' '.join(args[:2])} exited {proc.returncode}:\n{tail[-3000:]}")
    return time.perf_counter() - started, proc


def model_loads(worker_log: Path, since: int) -> tuple[list[dict], int]:
    """The worker's "model loaded" lines after byte offset `since`, and the new offset."""
    text = worker_log.read_text(errors="replace")
    loads = []
    for line in text[since:].splitlines():
        if '"model loaded"' in line:
            entry = json.loads(line)
            loads.append(
                {
                    "model": Path(entry["model"]).name,
                    "role": entry["dtype"].split(":")[0],
                    "gib": round(entry["bytes"] / 2**30, 3),
                    "seconds": entry["seconds"],
                }
            )
    return loads, len(text)


def job_record(data_dir: Path, job_id: str) -> dict:
    db = sqlite3.connect(data_dir / "spinbot.db")
    db.row_factory = sqlite3.Row
    job = dict(db.execute("select * from jobs where id = ?", (job_id,)).fetchone())
    nodes = [dict(r) for r in db.execute("select * from node_runs where job_id = ? order by position", (job_id,))]
    db.close()
    return {"job": job, "nodes": nodes}


def node_seconds(node: dict) -> float | None:
    from datetime import datetime

    if not node["started_at"] or not node["finished_at"]:
        return None
    started, finished = (datetime.fromisoformat(str(node[k])) for k in ("started_at", "finished_at"))
    return round((finished - started).total_seconds(), 3)


def probe(path: Path) -> dict:
    import av

    with av.open(str(path)) as container:
        video = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video))
        audio = container.streams.audio[0] if container.streams.audio else None
        return {
            "frames": frames,
            "width": video.codec_context.width,
            "height": video.codec_context.height,
            "fps": float(video.average_rate or 0),
            "audio": None
            if audio is None
            else {
                "codec": audio.codec_context.name,
                "rate": audio.codec_context.sample_rate,
                "seconds": float(audio.duration * audio.time_base) if audio.duration else None,
            },
        }


def run_job(
    index: int,
    env: dict[str, str],
    inputs: dict[str, Path],
    data_dir: Path,
    work: Path,
    sampler: Sampler,
    worker_log: Path,
    log_offset: int,
    sets: list[str],
) -> tuple[dict, int]:
    sampler.reset()
    out = work / f"job{index}.mp4"
    seconds, _ = spinbot(
        "run",
        "--prompt",
        "why sleep matters",
        "--image",
        str(inputs["image"]),
        "--voice",
        str(inputs["voice"]),
        "--ref-text",
        REF_TEXT,
        "--set",
        f"script.text={SCRIPT}",
        *sets,
        "--out",
        str(out),
        env=env,
        log=work / f"run{index}.log",
    )
    record = job_record(data_dir, _last_job_id(data_dir))
    loads, log_offset = model_loads(worker_log, log_offset)
    nodes = {n["node_id"]: n for n in record["nodes"]}
    outputs = {k: json.loads(v["output"]) if isinstance(v["output"], str) else v["output"] for k, v in nodes.items()}
    speech_seconds = outputs["infinite_talk"]["values"]["video_duration"]
    fps = float(outputs["infinite_talk"].get("meta", {}).get("fps") or 25)
    head = probe(data_dir / outputs["infinite_talk"]["artifacts"]["video"])
    final = probe(out)
    python_seconds = sum(node_seconds(nodes[n]) or 0 for n in NODES[1:])
    result = {
        "job_id": record["job"]["id"],
        "status": record["job"]["status"],
        "wall_seconds": round(seconds, 2),
        "node_seconds": {n: node_seconds(nodes[n]) for n in NODES},
        "node_attempts": {n: nodes[n]["attempts"] for n in NODES},
        "speech_seconds": round(speech_seconds, 3),
        "gpu_seconds_per_video_second": round(python_seconds / speech_seconds, 2),
        "peak_vram_gib": round(sampler.peak_vram / 2**30, 2),
        "peak_worker_rss_gib": round(sampler.peak_rss / 2**30, 2),
        "model_loads": loads,
        "talking_head": head,
        "final": final,
        "checks": {
            "frames == round(speech x fps)": final["frames"] == round(speech_seconds * fps),
            "2x the talking head": (final["width"], final["height"]) == (2 * head["width"], 2 * head["height"]),
            "speech muxed": final["audio"] is not None,
        },
        "talk_meta": {
            k: outputs["infinite_talk"].get("meta", {}).get(k)
            for k in ("backend", "native", "windows", "ignored_params")
        },
    }
    return result, log_offset


def _last_job_id(data_dir: Path) -> str:
    db = sqlite3.connect(data_dir / "spinbot.db")
    (job_id,) = db.execute("select id from jobs order by created_at desc limit 1").fetchone()
    db.close()
    return job_id


def sample_inputs(work: Path, voice: Path | None) -> dict[str, Path]:
    """scikit-image's astronaut and the Beckett sample (the demo's inputs); `voice` where the moonshine wheel that
    ships Beckett is not installed (the GPU machine: the harness carries the WAV)."""
    from spinbot.samples import portrait_path, voice_path

    return {"image": portrait_path(work), "voice": voice or voice_path()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, help="SPINBOT_MODELS_DIR (written with --write)")
    parser.add_argument("--write", choices=["full", "tiny"], help="write the models folder first")
    parser.add_argument("--redis-server", default="redis-server", help="the redis-server binary")
    parser.add_argument("--jobs", type=int, default=2, help="jobs in the same worker")
    parser.add_argument("--memory-fraction", type=float, help="SPINBOT_GPU_MEMORY_FRACTION for the worker")
    parser.add_argument("--voice", type=Path, help="the Beckett WAV, where its wheel is not installed")
    parser.add_argument("--out", type=Path, help="result JSON")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny models, one job: the plumbing")
    args = parser.parse_args()
    # a time limit's SIGTERM (`timeout`) runs the clean-up below too: the worker and Redis it started would outlive it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.smoke:
        args.write, args.jobs = "tiny", 1
    work = Path(tempfile.mkdtemp(prefix="spinbot-e2e-"))
    models = args.models or work / "models"
    result: dict = {
        "command": " ".join(["python", "benchmarks/native_e2e.py", *sys.argv[1:]]),
        "machine": machine(),
        "script": SCRIPT,
        "memory_fraction": args.memory_fraction,
        "stand_ins": os.environ.get("SPINBOT_DEVICE_STAND_INS", ""),
    }
    try:
        import torch

        result["torch"] = torch.__version__
    except ImportError:
        pass
    if args.write:
        from spinbot.models.synth import write_model_folder

        started = time.perf_counter()
        written = write_model_folder(models, scale=args.write, device="cuda" if not args.smoke else "cpu")
        result["write_seconds"] = round(time.perf_counter() - started, 1)
        result["files"] = {str(k): round(v / 2**30, 3) for k, v in written.items()}
        print(f"models written in {result['write_seconds']} s", flush=True)

    data_dir = work / "data"
    port = free_port()
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "SPINBOT_MODELS_DIR": str(models),
        "SPINBOT_DATA_DIR": str(data_dir),
        "SPINBOT_TTS_BACKEND": "native",
        "SPINBOT_TALK_BACKEND": "native",
        "SPINBOT_UPSCALE_BACKEND": "native",
        "SPINBOT_REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "SPINBOT_LOG_LEVEL": "INFO",
        "SPINBOT_OLLAMA_HOST": "http://127.0.0.1:9",
    }
    if args.memory_fraction:
        env["SPINBOT_GPU_MEMORY_FRACTION"] = str(args.memory_fraction)

    seconds, check = spinbot("models", "check", env=env, check=False)
    result["models_check"] = {
        "seconds": round(seconds, 2),
        "exit": check.returncode,
        "output": (check.stdout + check.stderr).strip().splitlines()[-20:],
    }
    print(f"models check: exit {check.returncode} in {seconds:.1f} s", flush=True)
    if check.returncode != 0:
        raise SystemExit("spinbot models check failed:\n" + "\n".join(result["models_check"]["output"]))

    redis = subprocess.Popen(
        [args.redis_server, "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    worker_log = work / "worker.log"
    with open(worker_log, "w") as worker_out:  # the worker keeps its own copy of the descriptor
        worker = subprocess.Popen(
            [sys.executable, "-m", "spinbot", "worker"], env=env, cwd=ROOT, stdout=worker_out, stderr=subprocess.STDOUT
        )
    sampler = Sampler(worker.pid)
    sampler.start()
    try:
        inputs = sample_inputs(work, args.voice)
        # f5_to_tts's seed default is device=cuda; the CPU smoke asks for the CPU (the other backends follow torch)
        sets = ["--set", "f5_to_tts.device=cpu"] if args.smoke else []
        offset, jobs = 0, []
        result["jobs"] = jobs  # filled as each job ends: a run stopped by its time limit keeps the jobs it finished
        for index in range(1, args.jobs + 1):
            job, offset = run_job(index, env, inputs, data_dir, work, sampler, worker_log, offset, sets)
            jobs.append(job)
            print(
                f"job {index}: {job['status']} in {job['wall_seconds']} s, nodes {job['node_seconds']}, "
                f"{len(job['model_loads'])} model loads, checks {job['checks']}",
                flush=True,
            )
        result["second_job_reloads"] = len(jobs[1]["model_loads"]) if len(jobs) > 1 else None
    except Exception:
        print(worker_log.read_text()[-6000:], file=sys.stderr)
        raise
    finally:
        sampler.stop()
        worker.terminate()
        worker.wait(timeout=60)
        redis.terminate()
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2, default=str))
            shutil.copy(worker_log, args.out.with_name(args.out.stem + "_worker.log"))
        if not args.models:
            shutil.rmtree(work, ignore_errors=True)
    summary = {k: result[k] for k in ("write_seconds", "second_job_reloads") if k in result}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
