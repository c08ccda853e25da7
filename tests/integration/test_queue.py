"""The Redis queue against a real Redis: workers are `spinbot worker` subprocesses running test-only tasks
(tests/integration/queue_tasks, loaded through SPINBOT_EXTRA_TASKS). Each test routes its tasks to queues of its
own, so workers started for one test never take another test's jobs.

(Past 400 lines: every test here shares one module-scoped fleet of `spinbot worker` subprocesses, which take
seconds to start; a split by subject would start the fleet once per file.)"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis

from spinbot.control.dispatch import TaskRequest
from spinbot.queue.config import QueueOptions
from spinbot.queue.dispatcher import WORKER_CHECK_SECONDS, QueueDispatcher
from spinbot.queue.errors import QueueUnavailable, WorkerTaskError
from spinbot.queue.keys import bull_job_id
from spinbot.settings import Settings, reset_settings
from spinbot.storage.local import LocalStore
from spinbot.tasks.base import Cancelled
from spinbot.worker.heartbeat import WorkerInfo, list_workers
from spinbot.worker.main import WorkerService
from spinbot.worker.registry import install_extra_tasks
from tests.integration.queue_tasks import trace_key

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXTRA_TASKS = "tests.integration.queue_tasks.echo,tests.integration.queue_tasks.sleep"
LOCK_SECONDS = 3.0  # short leases, so that a dead worker's job comes back within seconds
STALLED_CHECK_SECONDS = 0.5
HEARTBEAT_SECONDS = 0.5

# Workers every test module run needs; started together at first use, since each takes a second or two to boot.
FLEET = {
    "shared": "shared",
    "kill-a": "kill",
    "kill-b": "kill",
    "long-a": "long",
    "long-b": "long",
    "prio": "prio",
    "cpu": "cpu",
    "term": "term",
    "term-now": "term-now",
}


# ---- helpers ---------------------------------------------------------------------------------------------------------
def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def request(task: str, job_id: str | None = None, node_id: str = "node", **params: Any) -> TaskRequest:
    return TaskRequest(job_id=job_id or uuid.uuid4().hex, node_id=node_id, task=task, params=params)


class WorkerProc:
    def __init__(self, name: str, queues: str, env: dict[str, str], log_dir: Path):
        self.name = name
        self.log = log_dir / f"worker-{name}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "spinbot", "worker", "--queues", queues],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.info: WorkerInfo | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def heartbeat(self, client: redis.Redis) -> WorkerInfo | None:
        return next((w for w in list_workers(client) if w.pid == self.pid), None)

    def wait_ready(self, client: redis.Redis, timeout: float = 30) -> WorkerProc:
        self.info = wait_for(lambda: self.heartbeat(client) or self._exited(), timeout, f"worker {self.name}")
        return self

    def _exited(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"worker {self.name} exited with {self.proc.returncode}:\n{self.log.read_text()}")

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self) -> None:
        self.signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


class Fleet:
    """Worker subprocesses by name; all are killed when the module ends."""

    def __init__(self, env: dict[str, str], client: redis.Redis, log_dir: Path):
        self.env, self.client, self.log_dir = env, client, log_dir
        self.workers: dict[str, WorkerProc] = {}

    def start(self, queues_by_name: dict[str, str]) -> list[WorkerProc]:
        started = [WorkerProc(name, queues, self.env, self.log_dir) for name, queues in queues_by_name.items()]
        self.workers.update({w.name: w for w in started})
        return [w.wait_ready(self.client) for w in started]

    def __getitem__(self, name: str) -> WorkerProc:
        return self.workers[name]

    def by_pid(self, pid: int) -> WorkerProc:
        return next(w for w in self.workers.values() if w.pid == pid)

    def stop_all(self) -> None:
        for worker in self.workers.values():
            worker.stop()


class TcpProxy:
    """A loopback TCP relay to Redis that the test can cut, as if the Redis server went away."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed by stop()
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass

    def stop(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() above; close() alone would not on Linux
        self.listener.close()
        for sock in self.sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


# ---- fixtures --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("queue-store")


@pytest.fixture(scope="module")
def store(store_dir: Path) -> LocalStore:
    return LocalStore(store_dir)


@pytest.fixture(scope="module")
def client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url, decode_responses=True)


@pytest.fixture(scope="module")
def worker_env(redis_url: str, store_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPINBOT_")}
    env.update(
        {
            "SPINBOT_REDIS_URL": redis_url,
            "SPINBOT_STORAGE_URL": f"file://{store_dir}",
            "SPINBOT_DATA_DIR": str(store_dir.parent / "worker-data"),
            "SPINBOT_EXTRA_TASKS": EXTRA_TASKS,
            "SPINBOT_QUEUE_LOCK_SECONDS": str(LOCK_SECONDS),
            "SPINBOT_QUEUE_STALLED_CHECK_SECONDS": str(STALLED_CHECK_SECONDS),
            "SPINBOT_WORKER_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
            "SPINBOT_WORKER_WATCHDOG_SECONDS": "2",
            "SPINBOT_LOG_LEVEL": "INFO",
        }
    )
    return env


@pytest.fixture(scope="module")
def fleet(worker_env, client, store_dir):
    fleet = Fleet(worker_env, client, store_dir.parent)
    try:
        fleet.start(FLEET)
        yield fleet
    finally:
        fleet.stop_all()


@pytest.fixture
def make_dispatcher(redis_url: str):
    dispatchers: list[QueueDispatcher] = []

    def make(routes: dict[str, str], url: str = redis_url, **options: Any) -> QueueDispatcher:
        dispatcher = QueueDispatcher(QueueOptions(redis_url=url, routes=routes, **options))
        dispatchers.append(dispatcher)
        return dispatcher

    yield make
    for dispatcher in dispatchers:
        dispatcher.close()


@pytest.fixture
def background():
    pool = ThreadPoolExecutor(max_workers=4)

    def submit(fn: Callable, *args: Any, **kwargs: Any) -> Future:
        return pool.submit(fn, *args, **kwargs)

    yield submit
    pool.shutdown(wait=False, cancel_futures=True)


def runs(client: redis.Redis, req: TaskRequest) -> list[int]:
    """The pids of the worker processes that started this node, in order."""
    return [int(pid) for pid in client.lrange(trace_key("runs", req.job_id, req.node_id), 0, -1)]


def started(client: redis.Redis, req: TaskRequest) -> int:
    pids = runs(client, req)
    return pids[0] if pids else 0


def running_nodes(worker: WorkerProc, client: redis.Redis) -> list:
    info = worker.heartbeat(client)
    return info.running if info else []


def quiet(fraction: float, message: str) -> None:
    pass


def never() -> bool:
    return False


# ---- delivery -----------------------------------------------------------------------------------------------------
def test_job_of_a_killed_worker_completes_on_another_with_one_artifact_set(
    fleet, client, store, make_dispatcher, background
):
    dispatcher = make_dispatcher({"test.sleep": "kill"})
    req = request("test.sleep", seconds=1.5)
    pending = background(dispatcher.run, req, quiet, never)
    victim = fleet.by_pid(wait_for(lambda: started(client, req), 10, "the first start"))
    victim.signal(signal.SIGKILL)

    output = pending.result(timeout=20)

    survivor = fleet["kill-b"] if victim is fleet["kill-a"] else fleet["kill-a"]
    assert runs(client, req) == [victim.pid, survivor.pid]
    assert output.values["pid"] == survivor.pid
    prefix = f"jobs/{req.job_id}/{req.node_id}/"
    assert store.list(prefix) == [prefix + "final.txt", prefix + "partial.txt"]
    assert {store.get_bytes(key) for key in store.list(prefix)} == {str(survivor.pid).encode()}
    assert dispatcher.channel(req).result().worker == survivor.info.id


def test_job_longer_than_the_lock_is_not_delivered_twice_while_its_worker_lives(fleet, client, make_dispatcher):
    dispatcher = make_dispatcher({"test.sleep": "long"})
    req = request("test.sleep", seconds=2.5 * LOCK_SECONDS)

    output = dispatcher.run(req, quiet, never)

    assert len(runs(client, req)) == 1
    assert output.values["pid"] in (fleet["long-a"].pid, fleet["long-b"].pid)


def test_tasks_are_served_only_by_workers_of_their_queue(fleet, client, make_dispatcher, background):
    dispatcher = make_dispatcher({"test.sleep": "gpu", "test.echo": "cpu"})
    gpu_req = request("test.sleep", seconds=0.1)
    gpu_pending = background(dispatcher.run, gpu_req, quiet, never)

    cpu_output = dispatcher.run(request("test.echo"), quiet, never)  # only a cpu worker is up yet
    time.sleep(1.0)

    assert cpu_output.meta["queue"] == {**cpu_output.meta["queue"], "queue": "cpu", "worker": fleet["cpu"].info.id}
    assert runs(client, gpu_req) == [] and dispatcher.queue_state(gpu_req) == "prioritized"
    (gpu_worker,) = fleet.start({"gpu": "gpu"})
    assert gpu_pending.result(timeout=15).meta["queue"]["worker"] == gpu_worker.info.id


def test_default_routes_send_model_tasks_to_gpu_workers():
    options = QueueOptions.from_settings(_settings(SPINBOT_REDIS_URL="redis://x", SPINBOT_QUEUE_ROUTES='{"x": "y"}'))
    routes = {task: options.queue_for(task) for task in ("f5_to_tts", "infinite_talk", "upscale_video", "other", "x")}
    assert routes == {"f5_to_tts": "gpu", "infinite_talk": "gpu", "upscale_video": "gpu", "other": "cpu", "x": "y"}


def test_higher_priority_job_is_served_before_lower_ones_waiting(fleet, client, make_dispatcher, background):
    dispatcher = make_dispatcher({"test.sleep": "prio", "test.echo": "prio"})
    job_id = uuid.uuid4().hex
    blocker = request("test.sleep", job_id, "blocker", seconds=0.5)
    waiting = [
        (request("test.echo", job_id, name), priority)
        for name, priority in (("low-1", 500), ("low-2", 500), ("high", 5))
    ]
    first = background(dispatcher.run, blocker, quiet, never)
    wait_for(lambda: started(client, blocker), 10, "the blocker to start")

    for req, priority in waiting:  # added while the only worker of the queue is busy
        dispatcher.submit(req, dispatcher.channel(req), priority)
    first.result(timeout=10)
    for req, _ in waiting:
        dispatcher.run(req, quiet, never)

    assert client.lrange(trace_key("order", job_id), 0, -1) == ["blocker", "high", "low-1", "low-2"]


# ---- idempotency --------------------------------------------------------------------------------------------------
def test_concurrent_runs_of_one_node_share_one_job(fleet, client, make_dispatcher, background):
    dispatcher = make_dispatcher({"test.echo": "shared"})
    req = request("test.echo", text="once", seconds=0.5)

    outputs = [f.result(timeout=15) for f in [background(dispatcher.run, req, quiet, never) for _ in range(2)]]

    assert outputs[0] == outputs[1] and outputs[0].values == {"echo": "once"}
    assert len(runs(client, req)) == 1


def test_a_finished_node_is_never_run_again(fleet, client, make_dispatcher):
    dispatcher = make_dispatcher({"test.echo": "shared"})
    req = request("test.echo", text="done")
    first = dispatcher.run(req, quiet, never)

    again = dispatcher.run(req, quiet, never)  # e.g. the control plane restarted and asks again
    dispatcher.enqueue(req, priority=100)  # a stray second delivery straight to a worker
    events = dispatcher.channel(req).events_key
    wait_for(
        lambda: len([e for _, e in client.xrange(events) if e["type"] == "done"]) == 2,
        30,  # a loaded CI machine: 10 s ran out once (the worker's poll and its XADD, nothing slow)
        "the worker to see the repeated delivery",
    )

    assert again == first
    assert len(runs(client, req)) == 1


def test_a_failed_node_reports_one_line_and_runs_again_when_asked_again(fleet, client, make_dispatcher):
    dispatcher = make_dispatcher({"test.echo": "shared"})
    req = request("test.echo", fail=True)

    for attempt in (1, 2):
        with pytest.raises(WorkerTaskError) as err:
            dispatcher.run(req, quiet, never)
        assert str(err.value) == "ValueError: asked to fail"
        assert len(runs(client, req)) == attempt


# ---- cancellation ---------------------------------------------------------------------------------------------------
def test_a_running_job_is_cancelled_and_its_worker_stops_within_5_s(fleet, client, make_dispatcher, background):
    dispatcher = make_dispatcher({"test.sleep": "shared", "test.echo": "shared"})
    req = request("test.sleep", seconds=60)
    cancel = threading.Event()
    progress: list[float] = []
    pending = background(dispatcher.run, req, lambda f, m: progress.append(f), cancel.is_set)
    wait_for(lambda: started(client, req), 10, "the job to start")

    cancel.set()
    asked = time.monotonic()
    with pytest.raises(Cancelled):
        pending.result(timeout=10)

    assert time.monotonic() - asked < 5
    assert dispatcher.channel(req).result().status == "cancelled"
    assert any(f > 0 for f in progress), "progress was relayed while it ran"
    wait_for(lambda: not running_nodes(fleet["shared"], client), 5, "the worker to be free")


def test_a_waiting_job_is_cancelled_without_running(make_dispatcher, client, background):
    dispatcher = make_dispatcher({"test.echo": "nobody-serves-this"})
    req = request("test.echo")
    cancel = threading.Event()
    pending = background(dispatcher.run, req, quiet, cancel.is_set)
    wait_for(lambda: dispatcher.queue_state(req) == "prioritized", 5, "the job to be queued")

    cancel.set()
    with pytest.raises(Cancelled, match="before it started"):
        pending.result(timeout=5)

    assert dispatcher.queue_state(req) == "unknown"
    assert runs(client, req) == []


class WaitingReport:
    """A reporter as the control plane's: reports, and why a queued node waits (NodeProgress.waiting)."""

    def __init__(self) -> None:
        self.reports: list[tuple[float, str]] = []
        self.waits: list[str] = []

    def __call__(self, fraction: float, message: str) -> None:
        self.reports.append((fraction, message))

    def waiting(self, message: str) -> None:
        self.waits.append(message)


def test_a_node_no_worker_serves_says_so_while_it_waits(make_dispatcher, background, caplog):
    """With no live worker on its queue, a node would wait for ever as "queued" with no word (a new user's
    `spinbot run` with Redis set and no `spinbot worker`): the wait says which queue lacks a worker."""
    dispatcher = make_dispatcher({"test.echo": "nobody-serves-this"})
    req = request("test.echo")
    report, cancel = WaitingReport(), threading.Event()
    with caplog.at_level(logging.WARNING, logger="spinbot.queue.dispatcher"):
        pending = background(dispatcher.run, req, report, cancel.is_set)
        try:
            wait_for(lambda: report.waits, 10, "the waiting message")
        finally:
            cancel.set()
        with pytest.raises(Cancelled):
            pending.result(timeout=5)
    assert report.waits == ["waiting for a worker: none serves queue 'nobody-serves-this'"]
    assert report.reports == []  # nothing that would show the node as running
    warnings = [r for r in caplog.records if r.name == "spinbot.queue.dispatcher"]
    assert [r.getMessage() for r in warnings] == ["no worker serves the node's queue: it waits until one starts"]
    assert (warnings[0].queue, warnings[0].node_id) == ("nobody-serves-this", "node")
    assert warnings[0].start_one == "spinbot worker --queues nobody-serves-this"


def test_a_node_waiting_behind_a_busy_worker_gets_no_such_message(fleet, client, make_dispatcher, background):
    """The queue's one worker is busy past the first look for workers: the node waits, and no message says none."""
    dispatcher = make_dispatcher({"test.sleep": "prio", "test.echo": "prio"})
    blocker = request("test.sleep", seconds=WORKER_CHECK_SECONDS + 1.5)
    first = background(dispatcher.run, blocker, quiet, never)
    wait_for(lambda: started(client, blocker), 10, "the blocker to start")
    report = WaitingReport()
    output = background(dispatcher.run, request("test.echo", text="served"), report, never).result(20)
    first.result(timeout=10)
    assert output.values["echo"] == "served"
    assert report.waits == []
    assert report.reports and report.reports[0][1].startswith("started on worker")


# ---- the worker -----------------------------------------------------------------------------------------------------
def test_worker_heartbeat_shows_its_queues_and_running_node(fleet, client, make_dispatcher, background):
    dispatcher = make_dispatcher({"test.sleep": "shared"})
    worker = fleet["shared"]
    req = request("test.sleep", seconds=1.0)
    pending = background(dispatcher.run, req, quiet, never)

    busy = wait_for(lambda: running_nodes(worker, client), 5, "the heartbeat to show the running node")
    pending.result(timeout=10)

    assert worker.info.queues == ["shared"] and worker.info.host == socket.gethostname()
    assert [(n.job_id, n.node_id, n.task, n.queue) for n in busy] == [(req.job_id, "node", "test.sleep", "shared")]
    assert client.pttl(f"spinbot:worker:{worker.info.id}") <= 3 * HEARTBEAT_SECONDS * 1000


def test_sigterm_lets_the_running_job_finish_then_exits(fleet, client, make_dispatcher, background):
    dispatcher = make_dispatcher({"test.sleep": "term", "test.echo": "term"})
    worker = fleet["term"]
    req = request("test.sleep", seconds=1.5)
    pending = background(dispatcher.run, req, quiet, never)
    wait_for(lambda: started(client, req), 10, "the job to start")

    worker.signal(signal.SIGTERM)
    later = request("test.echo")
    dispatcher.submit(later, dispatcher.channel(later), 100)

    assert pending.result(timeout=10).values["pid"] == worker.pid
    assert worker.proc.wait(timeout=10) == 0
    assert worker.heartbeat(client) is None
    assert runs(client, later) == [] and dispatcher.queue_state(later) == "prioritized"


def test_second_sigterm_puts_the_running_job_back_in_the_queue(fleet, client, make_dispatcher, background):
    dispatcher = make_dispatcher({"test.sleep": "term-now"})
    worker = fleet["term-now"]
    req = request("test.sleep", seconds=2.0)
    pending = background(dispatcher.run, req, quiet, never)
    wait_for(lambda: started(client, req), 10, "the job to start")

    worker.signal(signal.SIGTERM)
    time.sleep(0.2)
    worker.signal(signal.SIGTERM)
    assert worker.proc.wait(timeout=10) == 0
    assert dispatcher.queue_state(req) in ("delayed", "prioritized", "waiting")
    (next_worker,) = fleet.start({"term-now-2": "term-now"})

    assert pending.result(timeout=15).values["pid"] == next_worker.pid
    assert runs(client, req) == [worker.pid, next_worker.pid]


# ---- Redis going away -----------------------------------------------------------------------------------------------
def test_redis_gone_mid_wait_raises_a_clear_error(fleet, client, redis_url, make_dispatcher, background):
    parsed = redis.Redis.from_url(redis_url).connection_pool.connection_kwargs
    proxy = TcpProxy((parsed["host"], parsed["port"]))
    url = f"redis://127.0.0.1:{proxy.port}/{parsed['db']}"
    dispatcher = make_dispatcher({"test.sleep": "shared"}, url=url, redis_retry_seconds=2.0)
    req = request("test.sleep", seconds=60)
    pending = background(dispatcher.run, req, quiet, never)
    wait_for(lambda: started(client, req), 10, "the job to start")

    proxy.stop()
    cut = time.monotonic()
    with pytest.raises(QueueUnavailable, match=f"Redis at {url} unreachable for 2 s"):
        pending.result(timeout=15)

    assert time.monotonic() - cut < 8
    make_dispatcher({}).channel(req).request_cancel()  # free the shared worker
    wait_for(lambda: not running_nodes(fleet["shared"], client), 5, "the worker to be free")


def _settings(**env: str):
    from spinbot.settings import Settings

    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        return Settings()


def test_queue_job_ids_have_no_colon():
    assert ":" not in bull_job_id("job:1", "node:2")


# ---- self-healing ----------------------------------------------------------------------------------------------------
def test_watchdog_restarts_a_queue_worker_whose_fetch_loop_stopped(
    redis_url, store_dir, make_dispatcher, background, monkeypatch
):
    """A BullMQ worker whose fetch loop stops (process and heartbeat alive) would leave jobs waiting forever."""
    monkeypatch.setenv("SPINBOT_REDIS_URL", redis_url)  # the test tasks record their runs there
    reset_settings()
    install_extra_tasks(EXTRA_TASKS)
    settings = Settings(
        redis_url=redis_url,
        storage_url=f"file://{store_dir}",
        worker_watchdog_seconds=0.3,
        worker_heartbeat_seconds=HEARTBEAT_SECONDS,
        data_dir=store_dir.parent / "watchdog-data",
    )
    service = WorkerService(settings, ["watchdog"])
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(service.serve(),), daemon=True)
    thread.start()
    try:
        wait_for(lambda: "watchdog" in service.runs, 10, "the service to start")
        loop.call_soon_threadsafe(service.runs["watchdog"].cancel)  # the fetch loop is gone, nothing else is
        dispatcher = make_dispatcher({"test.echo": "watchdog"})
        output = background(dispatcher.run, request("test.echo", text="still served"), quiet, never).result(20)
        assert output.values["echo"] == "still served"
        assert service.restarts == 1
    finally:
        loop.call_soon_threadsafe(service._stopping.set)
        thread.join(20)
        reset_settings()


def test_a_run_superseded_by_another_workers_stores_no_result(redis_url, tmp_path, monkeypatch):
    """A worker whose queue lock ran out during a long window (the queue gave the job to another worker) finds its
    node taken over (Superseded, spinbot.tasks.talk_resume): it stores nothing, not a failure over the other run's."""
    from spinbot.queue.channel import NodeChannel
    from spinbot.tasks.base import Superseded
    from spinbot.worker import executor
    from spinbot.worker.heartbeat import WorkerState

    def taken_over(*args, **kwargs):
        raise Superseded("node 'talk' of job x: another run took it over")

    monkeypatch.setattr(executor, "execute_task", taken_over)
    client = redis.Redis.from_url(redis_url)
    request = TaskRequest(job_id=f"job-{uuid.uuid4().hex[:8]}", node_id="talk", task="infinite_talk")
    node = executor.NodeExecutor(client, LocalStore(tmp_path), WorkerState(["q"]), 60, 1.0, redis_url)
    assert node.handle({"request": request.model_dump(mode="json")}, "q") == executor.SUPERSEDED
    assert NodeChannel(client, request.job_id, "talk", 60).result() is None
