"""A job's own input files (its portrait and narrator voice) get the upload check in the sandbox the first time a
task reads them (spinbot.tasks.user_files), in every mode: a file that reached storage without the upload check, or
whose decode blows a limit, ends its job with one line naming the node while the process that runs the job (here
the API's, embedded, and a `spinbot run`) goes on. Outputs of the job's own nodes are read as they are.
(A `spinbot worker`: tests/integration/test_worker_input_check.py.)"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from spinbot.control.dispatch import TaskRequest, execute_task
from spinbot.media.sandbox import CheckAbandoned
from spinbot.samples import portrait_path, voice_path
from spinbot.storage.local import LocalStore
from spinbot.tasks import base, user_files
from spinbot.tasks.base import TaskContext
from tests.support.api_client import AUTH
from tests.support.cli import run_cli, stored_job_files
from tests.support.hostile_media import BOMB_LIMITS, BOMB_REFUSED, png_bomb

SEGFAULT = "tests.support.sandbox_hooks:segfault"  # a decoder that crashes in C, as the next unknown one may


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    path = png_bomb(tmp_path_factory.mktemp("bomb") / "portrait.png")
    assert path.stat().st_size < 100_000
    return path


def context(tmp_path: Path, artifacts: dict[str, Path]) -> TaskContext:
    store = LocalStore(tmp_path / "store")
    for key, path in artifacts.items():
        store.upload(path, key)
    names = {key.split("/")[-1].split(".")[0]: key for key in artifacts}
    return TaskContext("job1", "node", store, tmp_path / "work", artifacts=names)


# ---- which files are checked -----------------------------------------------------------------------------------------
def test_the_jobs_portrait_and_voice_are_decoded_first_in_the_sandbox(tmp_path, monkeypatch):
    ctx = context(
        tmp_path,
        {
            "uploads/owner/0123/source_image.png": portrait_path(tmp_path),
            "jobs/job1/inputs/narrator_voice.wav": voice_path(),
        },
    )
    monkeypatch.setattr(user_files, "CHECK", SEGFAULT)
    with pytest.raises(CheckAbandoned) as portrait:
        ctx.input_path("source_image")
    assert str(portrait.value) == (
        "the portrait (source_image) could not be checked within the limits: its decoder process died (SIGSEGV)"
    )
    with pytest.raises(CheckAbandoned, match=r"^the narrator voice \(narrator_voice\) could not be checked"):
        ctx.input_path("narrator_voice")


def test_files_written_by_the_jobs_own_nodes_are_read_as_they_are(tmp_path, monkeypatch):
    ctx = context(
        tmp_path,
        {"jobs/job1/f5_to_tts/audio.wav": voice_path(), "jobs/job1/retouch/source_image.png": portrait_path(tmp_path)},
    )
    monkeypatch.setattr(user_files, "CHECK", SEGFAULT)
    assert ctx.input_path("audio").exists() and ctx.input_path("source_image").exists()
    # another job's output under the same name is no output of this job: checked
    ctx.artifacts["source_image"] = "jobs/job2/retouch/source_image.png"
    ctx.store.upload(portrait_path(tmp_path), ctx.artifacts["source_image"])
    with pytest.raises(CheckAbandoned, match="SIGSEGV"):
        ctx.input_path("source_image")


def test_a_file_is_checked_once_however_often_the_task_reads_it(tmp_path, monkeypatch):
    ctx = context(tmp_path, {"jobs/job1/inputs/source_image.png": portrait_path(tmp_path)})
    checks: list[str] = []
    real = base.check_user_file
    monkeypatch.setattr(base, "check_user_file", lambda path, kind, what: checks.append(kind) or real(path, kind, what))
    assert ctx.input_path("source_image") == ctx.input_path("source_image")  # talk_resume's fingerprint reads it too
    assert checks == ["portrait"]


def test_a_voice_a_param_names_is_checked_before_the_speech_task_reads_it(tmp_path, monkeypatch):
    store = LocalStore(tmp_path / "store")
    store.upload(voice_path(), "uploads/owner/4567/voice.wav")
    monkeypatch.setattr(user_files, "CHECK", SEGFAULT)
    request = TaskRequest(
        job_id="job1",
        node_id="f5_to_tts",
        task="f5_to_tts",
        params={"narrator_voice": "uploads/owner/4567/voice.wav"},
        values={"text": "Hello there."},
    )
    with pytest.raises(CheckAbandoned) as refused:
        execute_task(request, store, workdir_root=tmp_path)
    assert str(refused.value) == (
        "f5_to_tts.narrator_voice could not be checked within the limits: its decoder process died (SIGSEGV)"
    )


# ---- embedded mode: jobs the API's process runs ----------------------------------------------------------------------
def upload(client, kind: str, path: Path) -> str:
    with open(path, "rb") as f:
        answer = client.post("/v1/uploads", data={"kind": kind}, files={"file": (path.name, f)}, headers=AUTH)
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


def stored(data_dir: Path, upload_id: str) -> Path:
    return next(p for p in (data_dir / "uploads").rglob("*") if p.is_file() and upload_id in p.parts)


def run_job(client, ids: dict[str, str]) -> dict:
    body = {"image": ids["portrait"], "voice": ids["voice"], "params": {"script": {"text": "Hello there."}}}
    answer = client.post("/v1/jobs", json=body, headers=AUTH)
    assert answer.status_code == 201, answer.text
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{answer.json()['id']}", headers=AUTH).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"the job did not end: {job}")


def test_a_portrait_bomb_put_in_storage_fails_its_embedded_job_in_one_line(
    keyed_client, spinbot_env, use_settings, bomb, tmp_path
):
    ids = {
        "portrait": upload(keyed_client, "portrait", portrait_path(tmp_path)),
        "voice": upload(keyed_client, "voice", voice_path()),
    }
    stored(spinbot_env, ids["portrait"]).write_bytes(bomb.read_bytes())  # storage written past the upload check
    use_settings(**BOMB_LIMITS)
    job = run_job(keyed_client, ids)
    assert job["status"] == "failed"
    assert job["error"] == f"node 'infinite_talk' (infinite_talk) failed: {BOMB_REFUSED}"
    assert [n["status"] for n in job["nodes"]] == ["succeeded", "succeeded", "failed", "pending"]
    assert keyed_client.get("/healthz").status_code == 200


def test_a_voice_whose_decode_crashes_fails_its_embedded_job_in_one_line(keyed_client, monkeypatch, tmp_path):
    ids = {
        "portrait": upload(keyed_client, "portrait", portrait_path(tmp_path)),
        "voice": upload(keyed_client, "voice", voice_path()),
    }
    monkeypatch.setattr(user_files, "CHECK", SEGFAULT)
    job = run_job(keyed_client, ids)
    assert job["status"] == "failed"
    assert job["error"] == (
        "node 'f5_to_tts' (f5_to_tts) failed: the narrator voice (narrator_voice) could not be checked within the "
        "limits: its decoder process died (SIGSEGV)"
    )
    monkeypatch.undo()
    assert run_job(keyed_client, ids)["status"] == "succeeded"  # the same API process, the next job


def test_spinbot_run_refuses_a_portrait_bomb_in_one_line(spinbot_env, use_settings, bomb):
    use_settings(**BOMB_LIMITS)
    code, lines = run_cli("run", "--prompt", "hello", "--image", str(bomb), "--voice", str(voice_path()))
    assert code == 2
    assert lines == [f"error: {BOMB_REFUSED.replace(' (source_image)', '')}"]
    assert stored_job_files(spinbot_env) == []
