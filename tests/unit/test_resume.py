"""A job whose process is killed (SIGKILL) after a node finished resumes with `spinbot run --resume`."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spinbot.samples import portrait_path, voice_path
from spinbot.settings import get_settings
from spinbot.state.db import get_engine
from spinbot.state.store import JobStore

SPINBOT = [sys.executable, "-m", "spinbot"]


def wait_for(predicate, timeout: float, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def test_job_resumes_after_kill_without_rerunning_finished_nodes(tmp_path: Path, spinbot_env, monkeypatch):
    monkeypatch.setenv("SPINBOT_TALK_MAX_PIXELS", str(192 * 192))
    monkeypatch.setenv("SPINBOT_JOB_LEASE_SECONDS", "3")  # the resume waits out the killed process's lease
    env = dict(os.environ)
    jobs = JobStore(get_engine(get_settings().resolved_database_url))
    args = [
        "run",
        "--prompt",
        "resume test",
        "--image",
        str(portrait_path(tmp_path)),
        "--voice",
        str(voice_path()),
        "--ref-text",
        "Ever tried. Ever failed.",
        "--set",
        "script.text=Ever tried. Ever failed. No matter.",
        "--set",
        "infinite_talk.fps=10",
        "--out",
        str(tmp_path / "out.mp4"),
    ]
    proc = subprocess.Popen(SPINBOT + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        job = wait_for(lambda: next(iter(jobs.list()[0]), None), timeout=60)
        wait_for(lambda: jobs.get(job.id).node("script").status == "succeeded", timeout=60)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    killed = jobs.get(job.id)
    assert killed.status == "running"  # nobody got to finish it
    finished_before = {n.node_id for n in killed.nodes if n.status == "succeeded"}
    assert "script" in finished_before and len(finished_before) < len(killed.nodes)

    resumed = subprocess.run(
        SPINBOT + ["run", "--resume", job.id, "--out", str(tmp_path / "out.mp4")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip().endswith("out.mp4") and (tmp_path / "out.mp4").stat().st_size > 0
    done = jobs.get(job.id)
    assert done.status == "succeeded"
    for node in done.nodes:
        assert node.status == "succeeded"
        if node.node_id in finished_before:
            assert node.attempts == 1, f"{node.node_id} ran again"
    # One artifact set: exactly one record per (node, name), and the store holds no extra files.
    names = [(a["node_id"], a["name"]) for a in done.artifacts]
    assert len(names) == len(set(names))
    stored = sorted(
        p.relative_to(spinbot_env).as_posix()
        for p in (spinbot_env / "jobs" / job.id).rglob("*")
        if p.is_file() and "/inputs/" not in p.as_posix()
    )
    assert stored == sorted(a["key"] for a in done.artifacts)


@pytest.fixture
def small_job(tmp_path: Path, spinbot_env, use_settings):
    """An in-process runner and a short job of the seed pipeline (small frames, a one-line script)."""
    from spinbot.control.requests import JobRequest
    from spinbot.control.runner import Runner

    use_settings(talk_max_pixels=128 * 128)
    runner = Runner()
    job_id = runner.create_job(
        JobRequest(
            prompt="resume",
            image=portrait_path(tmp_path),
            voice=voice_path(),
            ref_text="x",
            params={"script": {"text": "Ever tried."}, "infinite_talk": {"fps": "10"}},
        )
    )
    return runner, job_id


def test_a_node_recorded_before_its_checkpoint_was_written_is_not_run_again(small_job):
    """A kill can land after a node's result is recorded but before LangGraph's checkpoint of that step."""
    runner, job_id = small_job
    runner.run_node(job_id, "script", {})  # recorded in the database; no checkpoint exists yet
    done = runner.run(job_id)
    assert done.status == "succeeded", done.error
    assert [n.attempts for n in done.nodes] == [1, 1, 1, 1]
    assert runner.final_artifact(done).endswith("upscale_video/upscaled.mp4")


def test_a_checkpoint_ahead_of_the_records_never_reports_unfinished_nodes_as_done(small_job):
    """If the graph's checkpoint says "finished" while a node's record does not, that node runs again."""
    from spinbot.state import store as st

    runner, job_id = small_job
    assert runner.run(job_id).status == "succeeded"
    runner.jobs.node_status(job_id, "upscale_video", st.PENDING)  # its result never made it to the database
    runner.jobs.set_job_status(job_id, st.FAILED, "interrupted")
    done = runner.run(job_id)
    assert done.status == "succeeded", done.error
    assert [n.attempts for n in done.nodes] == [1, 1, 1, 2]
