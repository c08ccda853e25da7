"""One owner per job: a lease on the job row, taken by the process that drives the job and taken over by another
only after it expired; a node is never started by two processes. Ctrl-C in `spinbot run` marks the job interrupted.

The runners here share one SQLite database (as a `spinbot run` and a `spinbot serve` on one data folder do); their
python nodes go through a stand-in dispatcher that records who ran what, so the tests take seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import update

from spinbot.api.executor import JobExecutor
from spinbot.control.dispatch import Dispatcher
from spinbot.control.lease import LeaseKeeper, LeaseLost
from spinbot.control.requests import JobRequest
from spinbot.control.runner import Runner
from spinbot.errors import Conflict
from spinbot.samples import portrait_path, voice_path
from spinbot.state.lease import LeaseStore
from spinbot.state.models import Job, utcnow
from spinbot.tasks.base import NodeOutput
from tests.support.api_client import local_client

SPINBOT = [sys.executable, "-m", "spinbot"]
NODES = ["script", "f5_to_tts", "infinite_talk", "upscale_video"]


class RecordingDispatcher(Dispatcher):
    """Python nodes return at once (or wait for `gate` on the node named `hold`); every run is recorded."""

    def __init__(self, name: str, runs: list, hold: str | None = None):
        self.name, self.runs, self.hold = name, runs, hold
        self.gate, self.holding = threading.Event(), threading.Event()

    def run(self, request, report, is_cancelled):
        self.runs.append((self.name, request.node_id))
        if request.node_id == self.hold:
            self.holding.set()
            while not self.gate.wait(0.05):
                is_cancelled()  # a task's progress report: where a lost lease stops it
        return NodeOutput(values={"audio_duration": 1.0})


@pytest.fixture
def runners(spinbot_env, use_settings, tmp_path):
    """Two control planes on one database, as two processes would be; returns (a, b, runs, request)."""
    use_settings(job_lease_seconds=3)
    runs: list = []
    a = Runner(dispatcher=RecordingDispatcher("a", runs))
    b = Runner(dispatcher=RecordingDispatcher("b", runs))
    request = JobRequest(
        prompt="p",
        image=portrait_path(tmp_path),
        voice=voice_path(),
        ref_text="x",
        params={"script": {"text": "Ever tried. Ever failed."}},
    )
    return a, b, runs, request


def attempts(runner: Runner, job_id: str) -> list[int]:
    return [n.attempts for n in runner.jobs.get(job_id).nodes]


def expire_lease(runner: Runner, job_id: str) -> None:
    """As if its holder had stopped renewing it a while ago."""
    with runner.jobs.session() as s, s.begin():
        s.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow() - timedelta(seconds=1)))


def test_a_job_held_by_one_process_is_not_run_by_another(runners):
    a, b, runs, request = runners
    job_id = a.create_job(request)  # born leased to a
    with pytest.raises(Conflict, match=f"job {job_id} is being run by another process .*{a.leases.owner}"):
        b.run(job_id)
    assert JobExecutor(b, 1).claim_orphans() == []  # b's resume-at-start leaves it alone too
    done = a.run(job_id)
    assert done.status == "succeeded", done.error
    assert attempts(a, job_id) == [1, 1, 1, 1] and [who for who, _ in runs] == ["a"] * 3
    assert a.leases.store.view(job_id).owner is None  # given back at the end


def test_while_one_process_runs_a_job_a_second_one_starting_takes_nothing(runners):
    a, b, runs, request = runners
    a.dispatcher.hold = "infinite_talk"
    job_id = a.create_job(request)
    thread = threading.Thread(target=a.run, args=(job_id,))
    thread.start()
    assert a.dispatcher.holding.wait(30)
    time.sleep(1.5 * a.leases.seconds)  # longer than a lease: only renewals keep it a's
    assert JobExecutor(b, 1).claim_orphans() == []
    with pytest.raises(Conflict):
        b.run(job_id)
    a.dispatcher.gate.set()
    thread.join(30)
    assert a.jobs.get(job_id).status == "succeeded"
    assert attempts(a, job_id) == [1, 1, 1, 1] and runs == [("a", n) for n in NODES[1:]]


def test_an_expired_lease_is_taken_over_and_its_old_holder_stops_without_recording(runners):
    a, b, runs, request = runners
    a.dispatcher.hold = "f5_to_tts"
    job_id = a.create_job(request)
    thread = threading.Thread(target=a.run, args=(job_id,))
    thread.start()
    assert a.dispatcher.holding.wait(30)
    expire_lease(a, job_id)
    assert b.leases.acquire(job_id)  # the takeover, as b's sweep would do it
    thread.join(30)  # a notices at its task's next progress report and stops
    assert not thread.is_alive()
    job = b.jobs.get(job_id)
    assert job.status == "running" and job.error is None  # a recorded no failure for a job that is b's now
    done = b.run(job_id)
    assert done.status == "succeeded", done.error
    # The script ran once (a); f5_to_tts started on a and again on b (a was stopped inside it); the rest on b only.
    assert runs == [("a", "f5_to_tts"), ("b", "f5_to_tts"), ("b", "infinite_talk"), ("b", "upscale_video")]
    assert attempts(b, job_id) == [1, 2, 1, 1]


def test_an_api_process_shutting_down_hands_its_running_job_to_the_next_one(runners):
    """Ctrl-C of `spinbot serve` during a render: the job is neither failed nor held for a lease time; the next
    API process takes it over at once and finishes it."""
    a, b, runs, request = runners
    a.dispatcher.hold = "infinite_talk"
    job_id = a.create_job(request)
    executor = JobExecutor(a, 1)
    assert executor.submit(job_id)  # as POST /v1/jobs does
    assert a.dispatcher.holding.wait(30)
    started = time.monotonic()
    executor.shutdown()
    assert time.monotonic() - started < a.leases.seconds  # stopped at its next progress report
    job = a.jobs.get(job_id)
    assert job.status == "running" and job.error is None
    other = JobExecutor(b, 1)
    assert other.claim_orphans() == [job_id]  # free at once, not after the lease expired
    deadline = time.monotonic() + 30
    while b.jobs.get(job_id).status != "succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    other.shutdown()
    assert runs == [("a", "f5_to_tts"), ("a", "infinite_talk"), ("b", "infinite_talk"), ("b", "upscale_video")]


def test_a_job_whose_thread_had_not_taken_its_lease_yet_is_handed_back_too(runners, monkeypatch):
    """`spinbot serve` stopped just after a POST /v1/jobs: the job's thread had started but not yet taken the job's
    lease (Runner.run) when the shutdown gave the job up. Taking the lease undid that give-up, and the job ran to its
    end after the shutdown, in a thread nothing waited for (in the test suite: a 2-minute render going on through
    the next tests, whose stand-in backends counted its windows)."""
    a, b, runs, request = runners
    job_id = a.create_job(request)
    executor = JobExecutor(a, 1)
    in_run, given_up = threading.Event(), threading.Event()
    require, give_up = a.leases.require, a.leases.give_up

    def late_require(job_id: str, wait_if_silent: bool = False) -> None:
        in_run.set()
        assert given_up.wait(30)
        require(job_id, wait_if_silent)

    def noted_give_up(job_ids: list[str]) -> None:
        give_up(job_ids)
        given_up.set()

    monkeypatch.setattr(a.leases, "require", late_require)
    monkeypatch.setattr(a.leases, "give_up", noted_give_up)
    assert executor.submit(job_id)
    assert in_run.wait(30)  # the job's thread is in Runner.run, before the lease
    started = time.monotonic()
    executor.shutdown()
    assert time.monotonic() - started < a.leases.seconds  # not the shutdown's whole wait: the job stopped
    assert runs == []
    job = a.jobs.get(job_id)
    assert job.status == "pending" and job.error is None and [n.status for n in job.nodes] == ["pending"] * 4
    assert a.leases.store.view(job_id).owner is None
    other = JobExecutor(b, 1)
    assert other.claim_orphans() == [job_id]  # free at once
    deadline = time.monotonic() + 30
    while b.jobs.get(job_id).status != "succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    other.shutdown()
    assert [who for who, _ in runs] == ["b"] * 3


def test_lease_store_takes_a_lease_only_when_free_expired_or_already_ours(spinbot_env):
    runner = Runner()
    leases = LeaseStore(runner.jobs.engine)
    job_id = runner.jobs.new_id()
    runner.jobs.create_job(job_id, "p", [("n", "t", "node")], {}, {})
    # 3 s: long enough that a loaded machine (CI on 2 busy cores) does not let it expire between the lines below
    assert leases.acquire(job_id, "one", 3) and leases.acquire(job_id, "one", 3)
    assert not leases.acquire(job_id, "two", 3)
    assert leases.view(job_id).live and leases.claimable(["pending"]) == []
    time.sleep(3.2)
    assert leases.claimable(["pending"]) == [job_id]
    assert leases.acquire(job_id, "two", 5)
    assert leases.renew([job_id], "one", 5) == set()  # one lost it
    keeper = LeaseKeeper(leases, 5, owner="one")
    assert not keeper.acquire(job_id)
    with pytest.raises(LeaseLost):
        keeper.check(job_id)
    leases.release(job_id, "one")  # not one's to give back
    assert leases.view(job_id).owner == "two"
    leases.release(job_id, "two")
    assert leases.view(job_id).owner is None and keeper.acquire(job_id)


def test_the_heartbeat_keeps_a_lease_alive_past_its_length(spinbot_env):
    runner = Runner()
    job_id = runner.jobs.new_id()
    runner.jobs.create_job(job_id, "p", [("n", "t", "node")], {}, {})
    keeper = LeaseKeeper(LeaseStore(runner.jobs.engine), 1.5, owner="me")
    assert keeper.acquire(job_id)
    first = LeaseStore(runner.jobs.engine).view(job_id)
    time.sleep(3.5)
    assert LeaseStore(runner.jobs.engine).view(job_id).heartbeat_at > first.heartbeat_at
    assert LeaseStore(runner.jobs.engine).view(job_id).live
    keeper.check(job_id)
    keeper.confirm(job_id)
    keeper.release(job_id)
    assert not LeaseStore(runner.jobs.engine).view(job_id).live


@pytest.fixture
def slow_job_env(tmp_path, spinbot_env, monkeypatch):
    monkeypatch.setenv("SPINBOT_TALK_MAX_PIXELS", str(192 * 192))
    monkeypatch.setenv("SPINBOT_JOB_LEASE_SECONDS", "3")
    return dict(os.environ)


def test_ctrl_c_marks_the_job_interrupted_and_prints_the_resume_command(tmp_path, slow_job_env):
    runner = Runner()
    args = [
        "run",
        "--prompt",
        "p",
        "--image",
        str(portrait_path(tmp_path)),
        "--voice",
        str(voice_path()),
        "--set",
        "script.text=" + "Ever tried. Ever failed. No matter. " * 3,
        "--set",
        "infinite_talk.fps=10",
        "--out",
        str(tmp_path / "o.mp4"),
    ]
    proc = subprocess.Popen(
        SPINBOT + args,
        env=slow_job_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C's default action in the child even where this test run inherited SIGINT ignored (a shell's
        # background job): Python then starts with its KeyboardInterrupt handler
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 120
        job = None
        while time.monotonic() < deadline:
            job = next(iter(runner.jobs.list()[0]), None)
            if job and job.node("infinite_talk").status == "running":
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    # as it was run (python -m spinbot), so the command works from where the user is
    assert f"job {job.id} interrupted; resume it with: {sys.executable} -m spinbot run --resume {job.id}" in err
    stopped = runner.jobs.get(job.id)
    assert stopped.status == "interrupted" and "spinbot run --resume" in stopped.error
    assert stopped.node("infinite_talk").status == "interrupted"
    assert runner.leases.store.view(job.id).owner is None  # given back: the resume need not wait
    assert JobExecutor(runner, 1).claim_orphans() == []  # an API leaves a job its user stopped alone
    started = time.monotonic()
    resumed = subprocess.run(
        SPINBOT + ["run", "--resume", job.id, "--out", str(tmp_path / "o.mp4")],
        env=slow_job_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert time.monotonic() - started < 60
    done = runner.jobs.get(job.id)
    assert done.status == "succeeded" and [n.attempts for n in done.nodes] == [1, 1, 2, 1]


def test_resume_of_a_job_another_process_drives_is_refused_with_one_line(tmp_path, slow_job_env):
    runner = Runner()
    job_id = runner.create_job(JobRequest(prompt="p", image=portrait_path(tmp_path), voice=voice_path()))
    holder = LeaseKeeper(runner.leases.store, 3, owner="api-on-another-host:42:cafe")
    runner.leases.release(job_id)
    assert holder.acquire(job_id)  # alive: it renews every second
    try:
        resumed = subprocess.run(
            SPINBOT + ["run", "--resume", job_id], env=slow_job_env, capture_output=True, text=True, timeout=60
        )
    finally:
        holder.release(job_id)
    # the CLI's own warnings are plain lines for the person at the terminal (the wait on the lease comes first)
    lines = [line for line in resumed.stderr.splitlines() if line.strip() and not line.startswith("warning: ")]
    assert resumed.returncode == 2 and len(lines) == 1, resumed.stderr
    assert lines[0].startswith(f"error: job {job_id} is being run by another process (api-on-another-host:42:cafe)")
    assert [n.attempts for n in runner.jobs.get(job_id).nodes] == [0, 0, 0, 0]


def test_the_api_retries_an_interrupted_job_and_lists_it_by_its_state(spinbot_env, monkeypatch, tmp_path):

    from spinbot.api.app import create_app
    from spinbot.settings import reset_settings

    monkeypatch.setenv("SPINBOT_TALK_MAX_PIXELS", str(128 * 128))
    reset_settings()
    with local_client(create_app()) as client:
        runner = client.app.state.services.runner
        job_id = runner.create_job(
            JobRequest(
                prompt="p",
                image=portrait_path(tmp_path),
                voice=voice_path(),
                params={"script": {"text": "Ever tried."}},
            )
        )
        runner._finish(job_id, "interrupted", "interrupted by its user")  # as Ctrl-C leaves it
        runner.leases.release(job_id)
        assert [j["id"] for j in client.get("/v1/jobs?status=interrupted").json()["items"]] == [job_id]
        assert client.post(f"/v1/jobs/{job_id}/retry").status_code == 202
        deadline = time.monotonic() + 120
        while runner.jobs.get(job_id).status not in ("succeeded", "failed") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert runner.jobs.get(job_id).status == "succeeded"
