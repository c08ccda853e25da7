"""Progress one can wait on: a node's never goes back within an attempt (a restart is a new, numbered attempt), the
job's overall progress is its nodes' weighted by their tasks' share of the work, monotonic and 1.0 only once it
succeeded, and a job taken over shows its new attempt from the start. The runners here use a stand-in dispatcher, so
the tests take seconds."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from spinbot.api.schemas import JobOut
from spinbot.control import progress as progress_module
from spinbot.control.dispatch import Dispatcher
from spinbot.control.requests import JobRequest
from spinbot.control.runner import TAKEN_OVER, Runner
from spinbot.queue.dispatcher import _NodeWait
from spinbot.queue.records import PROGRESS, STARTED
from spinbot.samples import portrait_path, voice_path
from spinbot.state.events import Event
from spinbot.tasks.base import NodeOutput
from tests.unit.test_lease import expire_lease

Script = Callable[[Callable[[float, str], None], Callable[[], bool]], None]


class ScriptedDispatcher(Dispatcher):
    """Python nodes run a script of reports (by node id), then return; a script may raise."""

    def __init__(self, scripts: dict[str, Script] | None = None):
        self.scripts = scripts or {}

    def run(self, request, report, is_cancelled):
        script = self.scripts.get(request.node_id)
        if script is not None:
            script(report, is_cancelled)
        return NodeOutput(values={"audio_duration": 1.0})


def reports(*fractions: float) -> Script:
    def script(report, is_cancelled):
        for f in fractions:
            report(f, f"at {f}")

    return script


def failing_after(*fractions: float) -> Script:
    def script(report, is_cancelled):
        reports(*fractions)(report, is_cancelled)
        raise RuntimeError("the GPU fell over")

    return script


@pytest.fixture
def request_(tmp_path) -> JobRequest:
    return JobRequest(
        prompt="p",
        image=portrait_path(tmp_path),
        voice=voice_path(),
        ref_text="x",
        params={"script": {"text": "Ever tried. Ever failed."}},
    )


def recorded(runner: Runner) -> list[Event]:
    events: list[Event] = []
    runner.events.subscribe(events.append)
    return events


def node_events(events: list[Event], node_id: str, status: str | None = None) -> list[Event]:
    return [e for e in events if e.node_id == node_id and (status is None or e.status == status)]


# ---- 1. a node's progress never goes back within one attempt ---------------------------------------------------
def test_a_nodes_progress_never_goes_back_within_an_attempt(spinbot_env, request_):
    # f5_to_tts as the lite TTS reports a script of 25 chunks (chunk 25 at 0.96, then "resampling" at 0.95);
    # infinite_talk as two sources whose reports cross (0.42 then 0.40).
    dispatcher = ScriptedDispatcher(
        {"f5_to_tts": reports(0.92, 0.96, 0.95, 1.0), "infinite_talk": reports(0.05, 0.42, 0.40, 0.6, 0.55)}
    )
    runner = Runner(dispatcher=dispatcher)
    events = recorded(runner)
    job = runner.run(runner.create_job(request_))
    assert job.status == "succeeded", job.error
    tts = [e.progress for e in node_events(events, "f5_to_tts", "running")]
    talk = [e.progress for e in node_events(events, "infinite_talk", "running")]
    assert tts == [0.92, 0.96, 0.96, 1.0]
    assert talk == [0.05, 0.42, 0.42, 0.6, 0.6]
    assert {e.attempt for e in node_events(events, "infinite_talk")} == {1}


def test_reports_from_threads_that_race_still_go_out_in_order(spinbot_env, request_):
    def two_threads(report, is_cancelled):
        def source(start: int) -> None:
            for i in range(start, 400, 2):
                report(i / 400, f"step {i}")

        threads = [threading.Thread(target=source, args=(s,)) for s in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    runner = Runner(dispatcher=ScriptedDispatcher({"infinite_talk": two_threads}))
    events = recorded(runner)
    assert runner.run(runner.create_job(request_)).status == "succeeded"
    talk = [e.progress for e in node_events(events, "infinite_talk", "running")]
    assert len(talk) == 400 and talk == sorted(talk)


def test_a_failed_node_keeps_the_progress_it_reached(spinbot_env, request_):
    runner = Runner(dispatcher=ScriptedDispatcher({"infinite_talk": failing_after(0.2, 0.42)}))
    events = recorded(runner)
    job = runner.run(runner.create_job(request_))
    assert job.status == "failed"
    (failed,) = node_events(events, "infinite_talk", "failed")
    assert failed.progress == 0.42  # the event said 0 before: the bar jumped back when the node failed
    assert job.node("infinite_talk").progress == 0.42  # the last report reached the database too


def test_the_database_gets_the_last_report_of_a_burst(spinbot_env, request_, monkeypatch):
    monkeypatch.setattr(progress_module, "PROGRESS_DB_INTERVAL", 0.3)
    runner = Runner(dispatcher=ScriptedDispatcher())
    job_id = runner.create_job(request_)
    attempt = runner.jobs.node_started(job_id, "infinite_talk", "queued")
    report = runner._reporter(runner.jobs.get(job_id), "infinite_talk", attempt)
    report(0.1, "window 1/10")
    report(0.2, "window 2/10")  # within the interval: not written now
    assert runner.jobs.get(job_id).node("infinite_talk").progress == 0.1
    time.sleep(0.6)  # a long window follows: no report comes to carry it
    node = runner.jobs.get(job_id).node("infinite_talk")
    assert (node.progress, node.message) == (0.2, "window 2/10")


def test_settling_a_node_that_never_reported_leaves_it_queued(spinbot_env, request_):
    runner = Runner(dispatcher=ScriptedDispatcher())
    job_id = runner.create_job(request_)
    attempt = runner.jobs.node_started(job_id, "infinite_talk", "queued")
    report = runner._reporter(runner.jobs.get(job_id), "infinite_talk", attempt)
    report.settle()  # as when the node fails or is cancelled before any report: no running state for a moment
    assert runner.jobs.get(job_id).node("infinite_talk").status == "queued"


def test_a_queued_node_that_waits_for_a_worker_says_why_and_stays_queued(spinbot_env, request_):
    runner = Runner(dispatcher=ScriptedDispatcher())
    events = recorded(runner)
    job_id = runner.create_job(request_)
    attempt = runner.jobs.node_started(job_id, "infinite_talk", "queued")
    report = runner._reporter(runner.jobs.get(job_id), "infinite_talk", attempt)
    report.waiting("waiting for a worker: none serves queue 'gpu'")
    node = runner.jobs.get(job_id).node("infinite_talk")
    assert (node.status, node.message, node.progress) == ("queued", "waiting for a worker: none serves queue 'gpu'", 0)
    assert [(e.status, e.message) for e in node_events(events, "infinite_talk")] == [
        ("queued", "waiting for a worker: none serves queue 'gpu'")
    ]
    report(0.0, "started on worker w1")  # a worker took it: running, and no later wait message goes back to queued
    report.waiting("waiting in queue 'gpu'")
    node = runner.jobs.get(job_id).node("infinite_talk")
    assert (node.status, node.message) == ("running", "started on worker w1")
    assert node_events(events, "infinite_talk")[-1].status == "running"


# ---- a worker's restart is a new attempt, not progress going back ----------------------------------------------
class FakeChannel:
    """A node's Redis events as the queue dispatcher reads them."""

    def __init__(self, entries: list[dict[str, str]]):
        self.entries = [(f"{i + 1}-0", fields) for i, fields in enumerate(entries)]

    def read(self, after_id: str, block_ms: int) -> list[tuple[str, dict[str, str]]]:
        entries, self.entries = self.entries, []
        return entries

    def result(self):
        return None


def test_a_task_started_again_by_another_worker_is_the_next_attempt(spinbot_env, request_):
    runner = Runner(dispatcher=ScriptedDispatcher())
    events = recorded(runner)
    job_id = runner.create_job(request_)
    attempt = runner.jobs.node_started(job_id, "infinite_talk", "queued")
    report = runner._reporter(runner.jobs.get(job_id), "infinite_talk", attempt)
    channel = FakeChannel(
        [
            {"type": STARTED, "worker": "w1"},
            {"type": PROGRESS, "fraction": "0.5", "message": "window 4/8"},
            {"type": STARTED, "worker": "w2"},  # w1 died; the queue gave the task to w2, which starts from nothing
            {"type": PROGRESS, "fraction": "0.1", "message": "window 1/8"},
        ]
    )
    wait = _NodeWait(None, None, channel, 1, report, lambda: False)  # type: ignore[arg-type]
    assert wait.relay_events() is None
    seen = [(e.attempt, e.progress) for e in node_events(events, "infinite_talk", "running")]
    assert seen == [(1, 0.0), (1, 0.5), (2, 0.0), (2, 0.1)]
    assert "started again on worker w2" in node_events(events, "infinite_talk")[2].message
    assert runner.jobs.get(job_id).node("infinite_talk").attempts == 2


# ---- 2. the job's overall progress ---------------------------------------------------------------------------
def test_job_events_and_the_snapshot_carry_the_jobs_overall_progress(spinbot_env, request_):
    runner = Runner(dispatcher=ScriptedDispatcher({"infinite_talk": reports(0.5), "upscale_video": reports(0.5)}))
    events = recorded(runner)
    job = runner.run(runner.create_job(request_))
    assert job.status == "succeeded"
    job_events = [(e.status, e.progress) for e in events if e.kind == "job"]
    assert job_events == [("pending", 0.0), ("running", 0.0), ("succeeded", 1.0)]
    overall = [e.job_progress for e in events if e.kind == "node"]
    assert overall == sorted(overall) and max(overall) < 1.0  # 1.0 only once the job itself succeeded
    assert 0.45 in overall  # script, f5_to_tts done, infinite_talk at half: (1 + 4 + 80 * 0.5 + 0) / 100
    assert JobOut.of(job).progress == 1.0


def test_the_jobs_progress_weighs_each_node_by_its_tasks_share_of_the_work(spinbot_env, request_):
    # A plain average of the nodes showed 54% when the talking head, nearly all of a render's time, had just started.
    runner = Runner(dispatcher=ScriptedDispatcher({"infinite_talk": failing_after(0.05)}))
    events = recorded(runner)
    failed = runner.run(runner.create_job(request_))
    assert failed.status == "failed"
    started = node_events(events, "infinite_talk", "running")[-1]
    assert started.progress == 0.05 and started.job_progress == 0.09  # (1 + 4 + 80 * 0.05 + 0) / 100, not 0.5125
    assert failed.progress == JobOut.of(failed).progress == 0.09  # the API's figure is the CLI's


def test_a_task_registered_without_a_weight_counts_as_much_as_the_script():
    from spinbot.state.progress import job_progress, node_part

    parts = [node_part("script.generateScript", "succeeded", 0.0), node_part("a_plugin_task", "running", 0.5)]
    assert job_progress("running", parts) == 0.75  # (1 * 1 + 1 * 0.5) / 2


def test_the_jobs_progress_never_goes_back_when_a_retry_starts_a_node_again(spinbot_env, request_):
    runner = Runner(dispatcher=ScriptedDispatcher({"upscale_video": failing_after(0.5)}))
    job_id = runner.create_job(request_)
    failed = runner.run(job_id)
    assert failed.status == "failed" and JobOut.of(failed).progress == 0.925  # (1 + 4 + 80 + 15 * 0.5) / 100
    assert runner.reopen(job_id)
    runner.dispatcher = ScriptedDispatcher({"upscale_video": reports(0.1, 0.9)})
    events = recorded(runner)
    done = runner.run(job_id)
    assert done.status == "succeeded"
    overall = [e.progress for e in events if e.kind == "job"] + [e.job_progress for e in events if e.kind == "node"]
    assert min(overall) == 0.925  # upscale_video at 0.1 again: the job holds where it was
    assert [e.progress for e in events if e.kind == "job"][-1] == 1.0


# ---- 3. a job taken over shows its new attempt from the start ---------------------------------------------------
def test_a_taken_over_job_shows_no_progress_of_the_attempt_that_stopped(spinbot_env, use_settings, request_):
    use_settings(job_lease_seconds=3)
    gate = threading.Event()

    def hold(report, is_cancelled):
        report(0.42, "window 3/8")
        while not gate.wait(0.05):
            is_cancelled()  # where a lost lease stops it

    a = Runner(dispatcher=ScriptedDispatcher({"infinite_talk": hold}))
    b = Runner(dispatcher=ScriptedDispatcher({"infinite_talk": reports(0.1)}))
    job_id = a.create_job(request_)
    thread = threading.Thread(target=a.run, args=(job_id,))
    thread.start()
    until = time.monotonic() + 30
    while a.jobs.get(job_id).node("infinite_talk").progress != 0.42 and time.monotonic() < until:
        time.sleep(0.02)
    expire_lease(a, job_id)  # a stopped renewing: it died, as far as b can tell
    assert b.leases.acquire(job_id)
    thread.join(30)
    assert b.jobs.get(job_id).node("infinite_talk").progress == 0.42  # what a left behind

    at_start: list = []
    events = recorded(b)
    b.events.subscribe(
        lambda e: (
            at_start.append(b.jobs.get(job_id).node("infinite_talk"))
            if e.kind == "job" and e.status == "running"
            else None
        )
    )
    assert b.run(job_id).status == "succeeded"
    (node,) = at_start  # the job is b's and running; its node not started again yet
    assert (node.status, node.progress, node.attempts, node.message) == ("pending", 0.0, 1, TAKEN_OVER)
    talk = [(e.status, e.attempt, e.progress) for e in node_events(events, "infinite_talk")]
    # the reset already names the attempt that runs the node next: readers replace the stopped attempt's 42% at once
    assert talk[0] == ("pending", 2, 0.0) and talk[1] == ("queued", 2, 0.0) and talk[-1] == ("succeeded", 2, 1.0)
    gate.set()


def test_a_late_progress_write_of_an_attempt_that_was_replaced_changes_nothing(spinbot_env, request_):
    runner = Runner(dispatcher=ScriptedDispatcher())
    job_id = runner.create_job(request_)
    first = runner.jobs.node_started(job_id, "infinite_talk", "running")
    second = runner.jobs.node_started(job_id, "infinite_talk", "queued")  # another driver took the node over
    assert not runner.jobs.node_progress(job_id, "infinite_talk", 0.9, "old", attempt=first)
    node = runner.jobs.get(job_id).node("infinite_talk")
    assert (node.status, node.progress, node.attempts) == ("queued", 0.0, second)
