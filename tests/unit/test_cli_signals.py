"""A `spinbot run` stopped by a signal, and jobs nothing runs any more: SIGTERM (timeout, systemd, docker stop) and
SIGHUP end the run as Ctrl-C does, and `spinbot cancel` cancels a job whose process died."""

from __future__ import annotations

import os
import shlex
import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from spinbot.control.requests import JobRequest
from spinbot.control.runner import Runner
from spinbot.samples import portrait_path, voice_path
from spinbot.state.models import Job, utcnow
from tests.support.cli import run_cli


class NotHandled(Exception):
    pass


def _not_handled(signum, frame):  # stands in for the default action, which would kill pytest
    raise NotHandled(f"signal {signum} reached the default handler")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
def test_a_signal_interrupts_the_job_as_ctrl_c_does_and_the_hint_keeps_out(spinbot_env, monkeypatch, tmp_path, signum):
    """SIGTERM left the job `running` under a lease nobody renewed, without a word; the resume hint lacked --out, so
    the resumed video went to spinbot-out/ instead."""
    from spinbot.tasks import upscale

    def stopped_mid_node(ctx, params):
        os.kill(os.getpid(), signum)
        time.sleep(5)  # the signal's handler raises in here
        raise AssertionError("the signal did not stop the run")

    monkeypatch.setattr(upscale, "TASK", upscale.TaskDef("upscale_video", upscale.AIUpscalerParams, stopped_mid_node))
    out = tmp_path / "my out.mp4"
    args = ["run", "--image", str(portrait_path(tmp_path)), "--voice", str(voice_path())]
    # SIGINT: Python's own handler (Ctrl-C), set here too, since a test run started in the background by a shell
    # inherits SIGINT ignored
    previous = signal.signal(signum, _not_handled if signum != signal.SIGINT else signal.default_int_handler)
    try:
        code, lines = run_cli(*args, "--set", "script.text=Ever tried.", "--out", str(out))
    finally:
        signal.signal(signum, previous)
    job_id = lines[0].removeprefix("job ")
    assert code == 128 + signum, lines
    assert lines[-1] == (
        f"job {job_id} interrupted; resume it with: spinbot run --resume {job_id} --out {shlex.quote(str(out))}"
    )
    job = Runner().jobs.get(job_id)
    assert job.status == "interrupted" and job.node("upscale_video").status == "interrupted"
    assert Runner().leases.store.view(job_id).owner is None  # resumable at once, no lease to wait out


def _running_job(tmp_path: Path, owner: str, expires_in: float) -> tuple[Runner, str]:
    """A job that a process `owner` runs, its lease expiring in `expires_in` seconds (negative: it died)."""
    runner = Runner()
    job_id = runner.create_job(JobRequest(prompt="p", image=portrait_path(tmp_path), voice=voice_path()))
    runner.leases.release(job_id)
    runner.jobs.set_job_status(job_id, "running")
    runner.jobs.node_started(job_id, "script")
    with runner.jobs.session() as s, s.begin():
        expires = utcnow() + timedelta(seconds=expires_in)
        s.execute(update(Job).where(Job.id == job_id).values(lease_owner=owner, lease_expires_at=expires))
    return runner, job_id


def test_cancel_ends_a_job_whose_process_died_and_gc_can_then_delete_it(spinbot_env, tmp_path):
    """kill -9 left the job `running`; gc said "cancel it", and the CLI had no cancel."""
    runner, job_id = _running_job(tmp_path, "gone:123:dead", expires_in=-5)
    code, lines = run_cli("gc", "--job", job_id)
    assert code == 2 and lines == [
        f"error: job {job_id} is running; cancel it (spinbot cancel {job_id}, or POST /v1/jobs/{job_id}/cancel) "
        "and wait until it has stopped to delete it"
    ]
    assert run_cli("cancel", job_id) == (0, [f"job {job_id} cancelled"])
    job = runner.jobs.get(job_id)
    assert job.status == "cancelled" and {n.status for n in job.nodes} == {"cancelled"}
    assert runner.leases.store.view(job_id).owner is None
    assert run_cli("gc", "--job", job_id) == (0, [job_id, "deleted 1 job(s)"])


def test_cancel_of_a_job_a_live_process_runs_asks_it_to_stop(spinbot_env, tmp_path):
    runner, job_id = _running_job(tmp_path, "alive:1:x", expires_in=30)
    code, lines = run_cli("cancel", job_id)
    assert (code, lines) == (
        0,
        [f"job {job_id}: cancel requested; the process running it stops it at its next progress report"],
    )
    job = runner.jobs.get(job_id)
    assert job.status == "running" and job.cancel_requested
    assert runner.leases.store.view(job_id).owner == "alive:1:x"  # still its job: it records the cancel itself


def test_cancel_refuses_a_finished_job_and_an_unknown_one(spinbot_env, tmp_path):
    runner, job_id = _running_job(tmp_path, "gone:1:x", expires_in=-5)
    runner.jobs.set_job_status(job_id, "succeeded")
    assert run_cli("cancel", job_id) == (2, [f"error: job {job_id} already succeeded: there is nothing to cancel"])
    code, lines = run_cli("cancel", "0" * 32)
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: job '{'0' * 32}' not found in "), lines


def test_ctrl_c_shows_the_stopped_node_as_interrupted_not_running(spinbot_env, monkeypatch, tmp_path):
    """The node's row said interrupted, but no event did: the progress table (and the page) kept it `running`."""
    from spinbot.tasks import upscale

    def stopped_mid_node(ctx, params):
        ctx.progress(0.25, "upscaled 50/200 frames")
        raise KeyboardInterrupt

    monkeypatch.setattr(upscale, "TASK", upscale.TaskDef("upscale_video", upscale.AIUpscalerParams, stopped_mid_node))
    args = ["run", "--image", str(portrait_path(tmp_path)), "--voice", str(voice_path()), "--set", "script.text=Hi."]
    code, lines = run_cli(*args)
    assert code == 130, lines
    upscale_lines = [line.split()[:3] for line in lines if line.startswith("upscale_video")]
    assert upscale_lines[-1] == ["upscale_video", "interrupted", "25%"], lines
