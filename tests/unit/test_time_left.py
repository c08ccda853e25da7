"""One estimate of the time left, made where a node's progress is published (spinbot.state.time_left,
spinbot.control.progress): measured after the set-up, sent in the node's events, kept on its row for GET /v1/jobs/{id}
and `spinbot jobs watch`, and a job's only once every unfinished node has one."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from spinbot.api.app import create_app
from spinbot.api.schemas import JobOut
from spinbot.control import progress as progress_module
from spinbot.control.runner import Runner
from spinbot.state.time_left import Countdown, TimeLeft, job_seconds_left
from tests.support.api_client import local_client
from tests.unit.test_progress import ScriptedDispatcher, node_events, recorded, request_  # noqa: F401 - a fixture


def test_time_left_comes_from_the_nodes_own_rate_once_measured():
    estimate = TimeLeft()
    assert estimate.seconds(100.0) is None
    estimate.report(0.1, 100.0)  # its first report: a start, nothing measured yet
    assert estimate.seconds(101.0) is None
    estimate.report(0.3, 110.0)  # the first interval may be a set-up: not measured yet
    assert estimate.seconds(110.0) is None
    estimate.report(0.5, 120.0)  # 0.2 in 10 s: 0.5 left takes 25 s
    assert estimate.seconds(120.0) == pytest.approx(25.0)
    assert estimate.seconds(130.0) == pytest.approx(15.0)  # counts down between reports
    assert estimate.seconds(200.0) == 0.0
    estimate.report(0.05, 121.0)  # progress that went back: no rate to go by
    assert estimate.seconds(121.0) is None


@pytest.mark.parametrize("started", [[], [(0.0, -2.0)]], ids=["in-process", "started on a worker"])
def test_time_left_starts_after_the_set_up_not_at_the_first_report(started):
    # A talking head: "speech and portrait ready" at 5%, ten minutes of model loading, then a step every 10 s (on a
    # worker, a report of 0 "started on worker" comes first). From the first report it said 7:52:45 at step 2.
    estimate = TimeLeft()
    for progress, now in [*started, (0.05, 0.0), (0.06, 600.0)]:
        estimate.report(progress, now)
    assert estimate.seconds(600.0) is None  # all it measured is the set-up
    estimate.report(0.07, 610.0)
    assert estimate.seconds(610.0) == pytest.approx(930.0)  # 0.01 in 10 s: 0.93 left takes 930 s
    estimate.report(0.07, 615.0)  # a window ends (its video encoded, no new progress): the clock starts over
    estimate.report(0.08, 625.0)
    assert estimate.seconds(625.0) == pytest.approx(920.0)


def node_out(job: JobOut, node_id: str):
    return next(n for n in job.nodes if n.id == node_id)


def reporting_talk(request_, monkeypatch, status: str):  # noqa: F811 - request_: the fixture's value
    """A job whose infinite_talk has started (`status`), its reporter, the events it publishes, and the clock
    `spinbot.control.progress` reads (now[0], seconds)."""
    now = [0.0]
    monkeypatch.setattr(progress_module, "time", SimpleNamespace(monotonic=lambda: now[0]))
    runner = Runner(dispatcher=ScriptedDispatcher())
    events = recorded(runner)
    job_id = runner.create_job(request_)
    attempt = runner.jobs.node_started(job_id, "infinite_talk", status)
    report = runner._reporter(runner.jobs.get(job_id), "infinite_talk", attempt)
    return runner, job_id, report, events, now


def test_events_and_rows_carry_the_time_left_measured_after_the_set_up(spinbot_env, request_, monkeypatch):  # noqa: F811
    runner, job_id, report, events, now = reporting_talk(request_, monkeypatch, "queued")
    for t, fraction, message in [(0, 0.05, "speech and portrait ready"), (600, 0.06, "window 1/10, step 1/10")]:
        now[0] = t
        report(fraction, message)
    assert node_out(JobOut.of(runner.jobs.get(job_id)), "infinite_talk").seconds_left is None  # the load only
    now[0] = 610
    report(0.07, "window 1/10, step 2/10")  # 0.01 in 10 s: 0.93 left takes 930 s (from the first report: 7:52:45)
    sent = [e.seconds_left for e in node_events(events, "infinite_talk", "running")]
    assert sent == [None, None, 930.0]
    answer = JobOut.of(runner.jobs.get(job_id))
    assert node_out(answer, "infinite_talk").seconds_left == pytest.approx(930.0, abs=2.0)
    assert answer.seconds_left is None  # upscale_video has not started: no rate, so no time for the job
    assert all(n.seconds_left is None for n in answer.nodes if n.id != "infinite_talk")


def test_a_node_started_again_has_no_estimate_until_it_measures_one(spinbot_env, request_, monkeypatch):  # noqa: F811
    runner, job_id, report, events, now = reporting_talk(request_, monkeypatch, "running")
    for t, fraction in [(0, 0.1), (10, 0.2), (20, 0.3)]:
        now[0] = t
        report(fraction, f"at {fraction}")
    assert runner.jobs.get(job_id).node("infinite_talk").estimated_end_at is not None
    report.restart("started again on another worker")
    now[0] = 25
    report(0.1, "at 0.1")
    assert node_events(events, "infinite_talk", "running")[-1].seconds_left is None
    assert runner.jobs.get(job_id).node("infinite_talk").estimated_end_at is None


def test_steady_progress_keeps_its_estimate_whatever_the_rounding_of_its_fractions():
    estimate = TimeLeft()
    for now, progress in [(0, 0.1), (10, 0.2), (20, 0.3)]:  # 0.3 - 0.2 is a hair under 0.1
        estimate.report(progress, now)
    assert estimate.seconds(20.0) == pytest.approx(70.0)


def test_a_jobs_time_left_is_its_unfinished_nodes_once_each_has_one():
    assert job_seconds_left([("succeeded", None), ("running", 120.0), ("running", 30.0)]) == 150.0
    assert job_seconds_left([("running", 120.0), ("pending", None)]) is None  # not started: no rate yet
    assert job_seconds_left([("succeeded", None)]) is None  # nothing left to estimate


def test_an_estimate_received_counts_down_from_when_it_came():
    assert Countdown(100.0, at=50.0).seconds(80.0) == 70.0
    assert Countdown(100.0, at=50.0).seconds(500.0) == 0.0
    assert Countdown(None, at=50.0).seconds(60.0) is None


def test_get_job_answers_the_time_left_of_its_running_node_and_of_the_job(spinbot_env):
    with local_client(create_app()) as client:
        jobs = client.app.state.services.runner.jobs
        job_id = jobs.new_id()
        nodes = [("script", "script.generateScript", "node"), ("f5_to_tts", "f5_to_tts", "python")]
        jobs.create_job(job_id, "f5tts_infinitetalk", nodes, {"values": {"prompt": "p"}, "artifacts": {}}, {}, None)
        jobs.set_job_status(job_id, "running")
        assert client.get(f"/v1/jobs/{job_id}").json()["seconds_left"] is None  # nothing measured yet
        jobs.node_succeeded(job_id, "script", {"values": {}}, [])
        attempt = jobs.node_started(job_id, "f5_to_tts")
        jobs.node_progress(job_id, "f5_to_tts", 0.5, "chunk 5/10", attempt=attempt, seconds_left=120.0)
        job = client.get(f"/v1/jobs/{job_id}").json()
    speech = next(n for n in job["nodes"] if n["id"] == "f5_to_tts")
    assert speech["seconds_left"] == pytest.approx(120.0, abs=2.0)
    assert job["seconds_left"] == speech["seconds_left"]  # the one node left: the job's time left is its
    assert next(n for n in job["nodes"] if n["id"] == "script")["seconds_left"] is None


def test_a_rate_of_float_noise_gives_no_estimate_and_no_date_out_of_range():
    # 1e-15 of progress in 10 s: about 3e17 s left; its estimated_end_at raised OverflowError in the database write
    from spinbot.state.time_left import TimeLeft

    left = TimeLeft()
    left.report(0.5, 0.0)
    left.report(0.5 + 1e-15, 10.0)
    left.report(0.5 + 2e-15, 20.0)
    assert left.seconds(20.0) is None
    left.report(0.75, 30.0)  # real progress again
    assert left.seconds(30.0) is not None


def test_a_nodes_end_is_written_and_counted_down_on_the_databases_clock(spinbot_env, monkeypatch):
    # PostgreSQL's clock, which every process shares (spinbot.state.lease.database_now), an hour ahead of this
    # process's: the estimated end was this process's clock plus the time left, while the node's start, the job's
    # creation and its lease were the database's; a reader on another machine counted it down on its own clock.
    from datetime import timedelta

    from spinbot.state import store as store_module
    from spinbot.state.models import utcnow

    ahead = timedelta(hours=1)
    monkeypatch.setattr(store_module, "database_now", lambda session: utcnow() + ahead)
    with local_client(create_app()) as client:
        jobs = client.app.state.services.runner.jobs
        job_id = jobs.new_id()
        jobs.create_job(job_id, "f5tts_infinitetalk", [("f5_to_tts", "f5_to_tts", "python")], {}, {}, None)
        jobs.set_job_status(job_id, "running")
        attempt = jobs.node_started(job_id, "f5_to_tts")
        jobs.node_progress(job_id, "f5_to_tts", 0.5, "chunk 5/10", attempt=attempt, seconds_left=120.0)
        job, answer = jobs.get(job_id), client.get(f"/v1/jobs/{job_id}").json()
    node = job.node("f5_to_tts")
    database = utcnow() + ahead
    for moment in (job.created_at, job.started_at, node.started_at, job.read_at):
        assert moment is not None and abs(moment - database) < timedelta(seconds=10)
    assert node.estimated_end_at is not None
    assert abs(node.estimated_end_at - (database + timedelta(seconds=120))) < timedelta(seconds=10)
    assert answer["nodes"][0]["seconds_left"] == pytest.approx(120.0, abs=2.0)  # not 3720: the database's clock
