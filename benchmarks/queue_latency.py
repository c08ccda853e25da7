"""Queue latency with no-op tasks: 200 jobs of 3 python-plane nodes each, through 4 `spinbot worker` processes.

    python benchmarks/queue_latency.py [--jobs 200] [--workers 4] [--concurrency 4] [--redis-url URL]

Measures, from the timestamps each worker puts in a node's output (same host, same clock):
- enqueue-to-start: the dispatcher added the node's job -> a worker started the task;
- finish-to-next-node: a worker finished node n -> a worker started node n+1 of the same job (result back to the
  control plane, the next node enqueued and picked up);
- jobs per second over the whole run.
Writes benchmarks/results/queue_latency.json with the machine and the command. This file is also the module that
gives the workers the no-op task (SPINBOT_EXTRA_TASKS=queue_latency, with this folder on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from spinbot.tasks.base import NodeOutput, TaskContext, TaskDef, TaskParams

HERE = Path(__file__).resolve().parent
NODES = ("f5_to_tts", "infinite_talk", "upscale_video")  # the python-plane chain of the seed pipeline
TASK_NAME = "bench.noop"


class NoopParams(TaskParams):
    pass


def _noop(ctx: TaskContext, params: NoopParams) -> NodeOutput:
    return NodeOutput()


TASK = TaskDef(name=TASK_NAME, params_model=NoopParams, run=_noop)


def main() -> None:
    args = _parse_args()
    queue = f"bench-{uuid.uuid4().hex[:8]}"  # a queue of its own: no flush of a shared Redis database needed
    with tempfile.TemporaryDirectory(prefix="spinbot-bench-") as tmp:
        workers = _start_workers(args, queue, Path(tmp))
        try:
            timings, seconds = _run_jobs(args, queue)
        finally:
            for proc in workers:
                proc.terminate()
            for proc in workers:
                proc.wait(timeout=30)
            _forget_queue(args.redis_url, queue)
    report = _report(args, timings, seconds)
    out = HERE / "results" / "queue_latency.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["results"], indent=2))
    print(f"written to {out.relative_to(HERE.parent)}")


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=4, help="jobs the control plane runs at once")
    parser.add_argument("--redis-url", default=os.environ.get("SPINBOT_REDIS_URL", "redis://127.0.0.1:6379/15"))
    return parser.parse_args()


def _start_workers(args: argparse.Namespace, queue: str, tmp: Path) -> list[subprocess.Popen]:
    import redis

    from spinbot.worker.heartbeat import list_workers

    env = {k: v for k, v in os.environ.items() if not k.startswith("SPINBOT_")}
    env.update(
        {
            "SPINBOT_REDIS_URL": args.redis_url,
            "SPINBOT_STORAGE_URL": f"file://{tmp / 'store'}",
            "SPINBOT_DATA_DIR": str(tmp / "data"),
            "SPINBOT_EXTRA_TASKS": "queue_latency",
            "SPINBOT_QUEUE_RESULT_TTL_SECONDS": "600",
            "SPINBOT_LOG_LEVEL": "WARNING",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")])),
        }
    )
    procs = [
        subprocess.Popen([sys.executable, "-m", "spinbot", "worker", "--queues", queue], env=env)
        for _ in range(args.workers)
    ]
    client = redis.Redis.from_url(args.redis_url)
    deadline = time.monotonic() + 60
    pids = {p.pid for p in procs}
    while {w.pid for w in list_workers(client)} & pids != pids:
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise SystemExit("workers did not start")
        time.sleep(0.1)
    return procs


def _forget_queue(redis_url: str, queue: str) -> None:
    """Delete the benchmark queue's BullMQ keys (node results expire on their own)."""
    import redis

    from spinbot.queue.keys import BULL_PREFIX

    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"{BULL_PREFIX}:{queue}:*", count=1000):
        client.delete(key)


def _run_jobs(args: argparse.Namespace, queue: str) -> tuple[list[list[dict]], float]:
    from spinbot.control.dispatch import TaskRequest
    from spinbot.queue.config import QueueOptions
    from spinbot.queue.dispatcher import QueueDispatcher

    dispatcher = QueueDispatcher(
        QueueOptions(redis_url=args.redis_url, routes={TASK_NAME: queue}, result_ttl_seconds=600)
    )

    def one_job(_: int) -> list[dict]:
        job_id = uuid.uuid4().hex
        return [
            dispatcher.run(
                TaskRequest(job_id=job_id, node_id=node, task=TASK_NAME), lambda f, m: None, lambda: False
            ).meta["queue"]
            for node in NODES
        ]

    try:
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(one_job, range(2 * args.workers)))  # warm-up: imports, connections, scripts loaded
            started = time.perf_counter()
            timings = list(pool.map(one_job, range(args.jobs)))
            seconds = time.perf_counter() - started
    finally:
        dispatcher.close()
    return timings, seconds


def _report(args: argparse.Namespace, timings: list[list[dict]], seconds: float) -> dict:
    to_start = [n["started_at"] - n["enqueued_at"] for job in timings for n in job]
    to_next = [b["started_at"] - a["finished_at"] for job in timings for a, b in itertools.pairwise(job)]
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": _machine(),
        "setup": {
            "jobs": args.jobs,
            "nodes_per_job": len(NODES),
            "workers": args.workers,
            "concurrency": args.concurrency,
            "task": "no-op",
        },
        "results": {
            "enqueue_to_start_ms": _percentiles(to_start),
            "finish_to_next_node_ms": _percentiles(to_next),
            "jobs_per_second": round(args.jobs / seconds, 1),
            "nodes_per_second": round(args.jobs * len(NODES) / seconds, 1),
            "seconds": round(seconds, 2),
        },
    }


def _percentiles(values: list[float]) -> dict[str, float]:
    ms = sorted(v * 1000 for v in values)
    cuts = statistics.quantiles(ms, n=100)
    return {"p50": round(statistics.median(ms), 2), "p95": round(cuts[94], 2), "max": round(ms[-1], 2), "n": len(ms)}


def _machine() -> dict:
    from importlib.metadata import version

    from machine import machine  # benchmarks/machine.py: this folder is sys.path[0] when run as a script

    return {
        **machine(),
        "bullmq": version("bullmq"),
        "redis_py": version("redis"),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }


if __name__ == "__main__":
    main()
