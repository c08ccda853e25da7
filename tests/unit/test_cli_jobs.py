"""`spinbot jobs list | show | watch`: a user who closed the terminal or lost the `--resume` id finds their jobs, sees
one, and follows one that another process runs, without the HTTP API. The runners here use a stand-in dispatcher."""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import replace
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from spinbot import cli_progress
from spinbot.cli import app
from spinbot.control.dispatch import InProcessDispatcher
from spinbot.control.runner import Runner
from spinbot.state.models import utcnow
from spinbot.state.store import NodeView
from tests.support.cli import made_database
from tests.unit.test_lease import expire_lease
from tests.unit.test_progress import ScriptedDispatcher, failing_after, request_  # noqa: F401 - request_: a fixture


class SlowReports(InProcessDispatcher):
    """The lite backends, infinite_talk pausing after each report: long enough for a reader to see each one."""

    def run(self, request, report, is_cancelled):
        def slowly(fraction: float, message: str) -> None:
            report(fraction, message)
            time.sleep(0.1)

        return super().run(request, slowly if request.node_id == "infinite_talk" else report, is_cancelled)


def invoke(*args: str):
    return CliRunner().invoke(app, ["jobs", *args])


@pytest.fixture
def jobs(spinbot_env, request_):  # noqa: F811 - the fixture imported above
    """Three jobs, oldest first: one succeeded (the lite backends: seconds), one failed in infinite_talk, one pending
    (never run)."""
    runner = Runner(dispatcher=ScriptedDispatcher({"infinite_talk": failing_after(0.3)}))
    ok = Runner()
    succeeded = ok.create_job(request_)
    assert ok.run(succeeded).status == "succeeded"
    failed = runner.create_job(request_)
    runner.run(failed)
    pending = runner.create_job(request_)
    return {"succeeded": succeeded, "failed": failed, "pending": pending}


@pytest.fixture
def pending(spinbot_env, request_) -> str:  # noqa: F811 - the fixture imported above
    """A job created (leased to its creator, which is alive) and not started."""
    return Runner(dispatcher=ScriptedDispatcher()).create_job(request_)


def test_jobs_list_shows_the_newest_first_in_plain_columns(jobs):
    result = invoke("list")
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["ID", "PIPELINE", "STATUS", "CREATED", "PROGRESS", "OUTPUT"]
    assert [row.split()[0] for row in rows] == [jobs["pending"], jobs["failed"], jobs["succeeded"]]
    job_id, pipeline, status, created, progress, output = rows[2].split()
    assert (pipeline, status, progress) == ("f5tts_infinitetalk", "succeeded", "100%")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", created)
    assert output.endswith(f"{job_id}/upscale_video/upscaled.mp4")
    failed = rows[1].split()
    assert (failed[2], failed[4], failed[5]) == ("failed", "29%", "-")  # (1 + 4 + 80 * 0.3) / 100, no output


def test_jobs_list_filters_by_status_and_limits_its_rows(jobs):
    failed = invoke("list", "--status", "failed")
    assert [row.split()[0] for row in failed.stdout.splitlines()[1:]] == [jobs["failed"]]
    limited = invoke("list", "--limit", "1")
    assert [row.split()[0] for row in limited.stdout.splitlines()[1:]] == [jobs["pending"]]
    assert "1 of 3 jobs shown (--limit N for more)" in limited.stderr
    records = json.loads(invoke("list", "--json", "--status", "succeeded").stdout)
    assert [(r["id"], r["status"], r["progress"]) for r in records] == [(jobs["succeeded"], "succeeded", 1.0)]
    assert records[0]["output"].endswith("upscaled.mp4") and len(records[0]["nodes"]) == 4


@pytest.mark.parametrize(
    "args, expected",
    [
        (("list", "--status", "done"), "error: unknown status 'done' (statuses: pending, running, succeeded,"),
        (("list", "--limit", "100000"), "error: invalid value for '--limit'"),
        (("show", "0" * 32), f"error: job '{'0' * 32}' not found"),
        (("watch", "nope"), "error: job 'nope' not found"),
    ],
)
def test_bad_arguments_are_one_line_and_a_non_zero_exit(spinbot_env, args, expected):
    made_database()
    result = invoke(*args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code != 0 and len(lines) == 1 and lines[0].startswith(expected), result.output


def test_jobs_show_gives_each_nodes_state_and_the_command_that_resumes_it(jobs):
    result = invoke("show", jobs["failed"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert f"job       {jobs['failed']}" in lines and "status    failed 29%" in lines
    assert any(re.fullmatch(r"  script +succeeded +100%  took \d:\d\d:\d\d", line) for line in lines), lines
    talk = next(line for line in lines if line.startswith("  infinite_talk"))
    assert re.match(r"  infinite_talk +failed +30%  .*the GPU fell over", talk), talk
    assert f"next      resume it: spinbot run --resume {jobs['failed']}" in lines
    record = json.loads(invoke("show", jobs["failed"], "--json").stdout)
    assert record["nodes"][2]["status"] == "failed" and "the GPU fell over" in record["nodes"][2]["error"]


def test_jobs_show_of_a_job_that_succeeded_says_where_its_files_are(jobs):
    lines = invoke("show", jobs["succeeded"]).stdout.splitlines()
    assert any(re.fullmatch(r"  f5_to_tts +/.*/f5_to_tts/speech\.wav", line) for line in lines), lines
    assert re.fullmatch(rf"output    /.*/{jobs['succeeded']}/upscale_video/upscaled\.mp4", lines[-2]), lines
    assert lines[-1] == f"next      copy the video: spinbot run --resume {jobs['succeeded']} --out FILE"


def test_jobs_show_of_a_job_nobody_runs_says_how_to_run_it(pending):
    assert invoke("show", pending).stdout.splitlines()[-2] == f"next      follow it: spinbot jobs watch {pending}"
    expire_lease(Runner(), pending)  # its creator stopped renewing its lease: the process is gone
    lines = invoke("show", pending).stdout.splitlines()
    assert lines[-2].startswith(f"next      no process runs it: spinbot run --resume {pending} (or `spinbot serve`, ")
    assert lines[-1] == f"next      cancel it: spinbot cancel {pending}"


def test_jobs_watch_follows_a_job_that_another_runner_runs(spinbot_env, request_, monkeypatch):  # noqa: F811
    monkeypatch.setattr(cli_progress, "WATCH_POLL_SECONDS", 0.05)
    driver = Runner()  # the lite backends, in a thread of this test: "another process" to the command's own runner
    driver.dispatcher = SlowReports(driver.artifacts)
    job_id = driver.create_job(request_)
    running = threading.Thread(target=driver.run, args=(job_id,))
    running.start()
    try:
        result = invoke("watch", job_id)
    finally:
        running.join()
    assert result.exit_code == 0, result.output
    progress = [line for line in result.stderr.splitlines() if line]  # no terminal: `spinbot run`'s plain lines
    assert any(re.match(r"infinite_talk +running +\d+%  speech and portrait ready", line) for line in progress)
    assert any(re.fullmatch(r"upscale_video +succeeded +100%  took \d:\d\d:\d\d", line) for line in progress)
    assert progress[-1] == "job            succeeded  100%"
    assert result.stdout.strip().endswith(f"{job_id}/upscale_video/upscaled.mp4")  # where the video is


def test_ctrl_c_stops_the_watching_not_the_job(pending, monkeypatch):
    def ctrl_c(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_progress.time, "sleep", ctrl_c)
    result = invoke("watch", pending)
    assert result.exit_code == 130
    assert f"stopped watching; job {pending} goes on (spinbot jobs show {pending})" in result.stderr.splitlines()
    assert Runner().jobs.get(pending).status == "pending"  # not interrupted, not cancelled


def test_jobs_watch_of_a_job_that_ended_says_how_it_ended(jobs):
    succeeded = invoke("watch", jobs["succeeded"])
    assert succeeded.exit_code == 0 and succeeded.stdout.strip().endswith("upscaled.mp4")
    failed = invoke("watch", jobs["failed"])
    assert failed.exit_code == 1 and f"resume it with: spinbot run --resume {jobs['failed']}" in failed.stderr


def test_watching_shows_a_running_nodes_state_at_its_first_read_then_only_changes():
    # the first read came after a poll's sleep: a talking head at 59% showed 0% for a second under a job at 52%
    talk = NodeView("talk", "t", "python", "running", 0.59, "window 3/5", 1, None, None, None, None)
    done = NodeView("tts", "t", "python", "succeeded", 1.0, None, 1, None, None, None, None)
    job = SimpleNamespace(id="j", status="running", progress=0.52, nodes=[done, talk], now=utcnow())
    changes = cli_progress.RowChanges(job)
    assert [(e.node_id, e.progress, e.message, e.job_progress) for e in changes.events(job)] == [
        ("talk", 0.59, "window 3/5", 0.52)
    ]
    assert changes.events(job) == []  # nothing changed since
    ended = SimpleNamespace(
        id="j",
        status="failed",
        progress=0.52,
        nodes=[done, replace(talk, status="failed", error="the GPU fell over")],
        now=utcnow(),
    )
    assert [(e.kind, e.status, e.message) for e in changes.events(ended)] == [
        ("node", "failed", "the GPU fell over"),
        ("job", "failed", None),
    ]


def test_jobs_watch_of_an_interrupted_job_says_how_to_resume_it_once(pending):
    # an interrupted job's error names the command already (Runner.run records it on Ctrl-C): it was said twice
    runner = Runner()
    runner._finish(pending, "interrupted", f"interrupted by its user; resume with: spinbot run --resume {pending}")
    result = invoke("watch", pending)
    assert result.exit_code == 1
    assert result.stderr.count(f"run --resume {pending}") == 1, result.stderr
