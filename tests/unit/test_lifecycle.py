"""Deleting jobs: Runner.delete_job removes a finished job's artifacts, its uploads that no other job names, its
checkpoints and its records, and refuses while the job may still run; retention and `spinbot gc` apply it to old
finished jobs."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from spinbot.cli import app as cli_app
from spinbot.control.lease import LeaseKeeper
from spinbot.control.lifecycle import expire_jobs
from spinbot.control.requests import JobRequest
from spinbot.control.runner import Runner
from spinbot.errors import Conflict, JobNotFound
from spinbot.samples import portrait_path, voice_path
from spinbot.state.models import Job, utcnow
from tests.support.api_client import local_client


def files(data_dir: Path, top: str) -> list[str]:
    root = data_dir / top
    return sorted(p.relative_to(data_dir).as_posix() for p in root.rglob("*") if p.is_file()) if root.exists() else []


def checkpoint_threads(data_dir: Path) -> set[str]:
    with sqlite3.connect(data_dir / "checkpoints.sqlite") as conn:
        return {row[0] for row in conn.execute("SELECT DISTINCT thread_id FROM checkpoints")}


@pytest.fixture
def runner(spinbot_env, use_settings) -> Runner:
    use_settings(talk_max_pixels=128 * 128)
    return Runner()


def upload(runner: Runner, data_dir: Path, path: Path, kind: str, upload_id: str) -> str:
    key = f"uploads/owner1/{upload_id}/{kind}{path.suffix}"
    runner.artifacts.upload(path, key)
    return key


def api_job(runner: Runner, image_key: str, voice_key: str) -> str:
    """A job made from stored uploads, as the API makes them."""
    return runner.create_job(
        JobRequest(
            prompt="p",
            ref_text="x",
            owner="owner1",
            params={"script": {"text": "Ever tried."}, "infinite_talk": {"fps": "10"}},
            input_keys={"source_image": image_key, "narrator_voice": voice_key},
        )
    )


def finish_days_ago(runner: Runner, job_id: str, days: float) -> None:
    with runner.jobs.session() as s, s.begin():
        s.execute(update(Job).where(Job.id == job_id).values(finished_at=utcnow() - timedelta(days=days)))


def test_delete_job_removes_artifacts_unshared_uploads_checkpoints_and_records(runner, spinbot_env, tmp_path):
    image = upload(runner, spinbot_env, portrait_path(tmp_path), "portrait", "a" * 32)
    voice = upload(runner, spinbot_env, voice_path(), "voice", "b" * 32)
    own_voice = upload(runner, spinbot_env, voice_path(), "voice", "c" * 32)
    first, second = api_job(runner, image, voice), api_job(runner, image, own_voice)
    for job_id in (first, second):
        assert runner.run(job_id).status == "succeeded"
    assert {first, second} <= checkpoint_threads(spinbot_env) and files(spinbot_env, f"jobs/{second}")

    runner.delete_job(second)
    assert files(spinbot_env, f"jobs/{second}") == [] and files(spinbot_env, f"jobs/{first}")
    # The portrait stays: the first job still names it; the second job's own voice goes.
    assert files(spinbot_env, "uploads") == sorted([image, voice])
    assert second not in checkpoint_threads(spinbot_env) and first in checkpoint_threads(spinbot_env)
    with pytest.raises(JobNotFound):
        runner.jobs.get(second)
    with pytest.raises(JobNotFound):
        runner.delete_job(second)
    runner.delete_job(first)
    assert files(spinbot_env, "uploads") == [] and files(spinbot_env, "jobs") == []
    assert runner.jobs.list() == ([], 0)


def test_a_job_that_may_still_run_is_not_deleted(runner, spinbot_env, tmp_path):
    job_id = runner.create_job(JobRequest(prompt="p", image=portrait_path(tmp_path), voice=voice_path()))
    with pytest.raises(Conflict, match=f"job {job_id} is pending; cancel it"):
        runner.delete_job(job_id)
    runner.jobs.set_job_status(job_id, "failed", "boom")
    runner.leases.release(job_id)
    other = LeaseKeeper(runner.leases.store, 30, owner="retrying-elsewhere")
    assert other.acquire(job_id)  # another process is retrying it
    with pytest.raises(Conflict, match="being run by another process"):
        runner.delete_job(job_id)
    assert files(spinbot_env, f"jobs/{job_id}")  # its inputs are all there
    other.release(job_id)
    runner.delete_job(job_id)
    assert files(spinbot_env, "jobs") == []


def test_retention_and_spinbot_gc_delete_only_old_finished_jobs(runner, spinbot_env, tmp_path, use_settings):
    request = JobRequest(prompt="p", image=portrait_path(tmp_path), voice=voice_path())
    old, recent, waiting = (runner.create_job(request) for _ in range(3))
    for job_id in (old, recent):
        runner.cancel(job_id)  # finished, and its lease given back
    finish_days_ago(runner, old, 10)
    finish_days_ago(runner, waiting, 10)  # pending, whatever its dates say
    assert expire_jobs(runner, 7, dry_run=True) == [old] and len(runner.jobs.list()[0]) == 3

    result = CliRunner().invoke(cli_app, ["gc", "--older-than", "7"])
    assert result.exit_code == 0 and result.stdout.split() == [old]
    assert {j.id for j in runner.jobs.list()[0]} == {recent, waiting}
    assert files(spinbot_env, f"jobs/{old}") == [] and files(spinbot_env, f"jobs/{recent}")

    result = CliRunner().invoke(cli_app, ["gc"])
    assert result.exit_code == 2 and "SPINBOT_JOB_RETENTION_DAYS" in result.output
    use_settings(job_retention_days=0.5)
    finish_days_ago(runner, recent, 1)
    result = CliRunner().invoke(cli_app, ["gc", "--dry-run"])
    assert result.exit_code == 0 and result.stdout.split() == [recent] and runner.jobs.get(recent)
    result = CliRunner().invoke(cli_app, ["gc", "--job", waiting])
    assert result.exit_code == 2 and f"job {waiting} is pending" in result.output


def test_the_api_deletes_a_finished_job_and_answers_409_while_one_runs(spinbot_env, monkeypatch):

    from spinbot.api.app import create_app
    from spinbot.api.auth import owner_of
    from spinbot.settings import reset_settings

    monkeypatch.setenv("SPINBOT_API_KEYS", "key-a")
    reset_settings()
    with local_client(create_app()) as client:
        runner = client.app.state.services.runner
        jobs = {}
        for status in ("succeeded", "running"):
            job_id = jobs[status] = runner.jobs.new_id()
            runner.jobs.create_job(
                job_id,
                "f5tts_infinitetalk",
                [("script", "script.generateScript", "node")],
                {"values": {"prompt": "p"}, "artifacts": {}},
                {},
                owner_of("key-a"),
            )
            runner.jobs.set_job_status(job_id, status)
            runner.artifacts.put_bytes(f"jobs/{job_id}/script/out.txt", b"x")
        headers = {"Authorization": "Bearer key-a"}
        busy = client.delete(f"/v1/jobs/{jobs['running']}", headers=headers)
        assert busy.status_code == 409 and f"job {jobs['running']} is running" in busy.json()["error"]
        assert client.delete(f"/v1/jobs/{jobs['succeeded']}", headers=headers).status_code == 204
        assert client.get(f"/v1/jobs/{jobs['succeeded']}", headers=headers).status_code == 404
        assert files(spinbot_env, "jobs") == [f"jobs/{jobs['running']}/script/out.txt"]


def failed_job(runner: Runner, tmp_path: Path) -> str:
    job_id = runner.create_job(JobRequest(prompt="p", image=portrait_path(tmp_path), voice=voice_path()))
    runner.jobs.set_job_status(job_id, "failed", "boom")
    runner.leases.release(job_id)
    return job_id


def test_a_retry_arriving_while_the_job_is_deleted_is_refused(runner, spinbot_env, tmp_path, monkeypatch):
    # The API answers a retry and a delete of one job in one process: one lease owner, so only the job's status
    # keeps them apart. Here the retry comes while the delete removes the files.
    job_id = failed_job(runner, tmp_path)
    delete_prefix = runner.artifacts.delete_prefix
    retried: list[bool] = []

    def retry_meanwhile(prefix: str) -> int:
        retried.append(runner.reopen(job_id))
        assert runner.jobs.get(job_id).status == "deleting"
        return delete_prefix(prefix)

    monkeypatch.setattr(runner.artifacts, "delete_prefix", retry_meanwhile)
    runner.delete_job(job_id)
    assert retried == [False]
    with pytest.raises(JobNotFound):
        runner.jobs.get(job_id)


def test_a_delete_after_a_retry_it_did_not_see_is_refused_and_keeps_the_job(runner, spinbot_env, tmp_path, monkeypatch):
    # The retry lands between the delete's first look at the job and its lease: the job is pending again and
    # must not lose its files under the run that starts.
    job_id = failed_job(runner, tmp_path)
    require = runner.leases.require

    def retried_first(job: str, wait_if_silent: bool = False) -> None:
        assert runner.reopen(job)
        require(job, wait_if_silent)

    monkeypatch.setattr(runner.leases, "require", retried_first)
    with pytest.raises(Conflict, match=f"job {job_id} is pending"):
        runner.delete_job(job_id)
    assert runner.jobs.get(job_id).status == "pending" and files(spinbot_env, f"jobs/{job_id}")


def test_a_delete_cut_short_leaves_the_job_deleting_and_the_next_delete_finishes_it(
    runner, spinbot_env, tmp_path, monkeypatch
):
    job_id = failed_job(runner, tmp_path)

    def storage_away(prefix: str) -> int:
        raise OSError("storage away")

    with monkeypatch.context() as patch:
        patch.setattr(runner.artifacts, "delete_prefix", storage_away)
        with pytest.raises(OSError):
            runner.delete_job(job_id)
    assert runner.jobs.get(job_id).status == "deleting"
    assert not runner.reopen(job_id)  # never run again, with half its files gone
    runner.delete_job(job_id)
    with pytest.raises(JobNotFound):
        runner.jobs.get(job_id)
    assert files(spinbot_env, "jobs") == []
