"""An upload a job names is never deleted under it (SQLite; PostgreSQL: tests/integration/
test_upload_in_use_postgres.py): a DELETE while the job is queued, running or kept is a 409 naming the job, and an
upload deleted (or a job deleted with its uploads) while a job that names it is being submitted refuses that job
with one line, nothing of it written. Before, the job was written (201) without its input and failed at its task."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest

from spinbot.api.app import create_app
from spinbot.control.runner import Runner
from spinbot.state.inputs_in_use import delete_unused
from tests.support import upload_race
from tests.support.api_client import local_client
from tests.support.idempotent_api import KEY_A, KEY_B, Api, auth
from tests.support.quick_dispatcher import QuickDispatcher


@pytest.fixture
def start_api(spinbot_env, use_settings, tmp_path) -> Iterator[Callable[..., Api]]:
    with ExitStack() as stack:

        def start(hold: bool = False) -> Api:
            use_settings(api_keys=f"{KEY_A},{KEY_B}")
            runner = Runner(dispatcher=QuickDispatcher(hold=hold))
            return Api(stack.enter_context(local_client(create_app(runner=runner))), tmp_path)

        yield start


def test_an_upload_deleted_while_a_job_naming_it_is_admitted_refuses_the_job(start_api, monkeypatch):
    upload_race.upload_deleted_during_admission(start_api(), monkeypatch)


def test_a_job_deleted_with_its_uploads_while_another_naming_them_is_admitted_refuses_it(start_api, monkeypatch):
    upload_race.job_deleted_during_admission(start_api(), monkeypatch)


def test_an_upload_of_a_running_or_finished_job_is_kept_with_a_409_naming_the_job(start_api):
    upload_race.upload_of_a_job_is_kept_with_a_409_naming_it(start_api(hold=True))


def test_the_upload_is_deleted_while_the_database_write_lock_is_held(start_api, spinbot_env, monkeypatch):
    """SQLite's one writer is the owner's lock: while the upload's files go, no job can be written (the insert waits
    for the lock, then finds the upload gone)."""
    api = start_api()
    voice = api.body()["voice"]
    store = api.client.app.state.services.runner.artifacts
    real, refused = store.delete_prefix, []

    def delete_while_probing(prefix: str) -> int:
        probe = sqlite3.connect(spinbot_env / "spinbot.db", timeout=0)
        try:
            probe.execute("UPDATE jobs SET status = status WHERE 0")
        except sqlite3.OperationalError as err:
            refused.append(str(err))
        finally:
            probe.close()
        return real(prefix)

    monkeypatch.setattr(store, "delete_prefix", delete_while_probing)
    assert upload_race.delete_upload(api, voice).status_code == 204
    assert refused == ["database is locked"]


def test_an_upload_folder_with_a_file_a_job_names_is_kept_whole(start_api):
    """The 409 deletes nothing: an upload whose folder holds a file no job names besides the one a job does was
    deleted whole (its callback ignored which keys were unused), and only then answered 409."""
    api = start_api()
    body = api.body()
    job_id = api.post(body, None).json()["id"]
    assert api.settled(job_id)["status"] == "succeeded"
    store = api.client.app.state.services.runner.artifacts
    (voice_key,) = [key for key in upload_race.stored_uploads(api) if body["voice"] in key]
    stray = voice_key.rsplit("/", 1)[0] + "/notes.txt"
    store.put_bytes(stray, b"not named by any job")
    answer = upload_race.delete_upload(api, body["voice"])
    assert answer.status_code == 409, answer.text
    assert {voice_key, stray} <= set(upload_race.stored_uploads(api))


def test_delete_unused_reads_the_keys_once(start_api):
    engine = start_api().client.app.state.services.runner.jobs.engine
    deleted: list[list[str]] = []
    keys = ["uploads/local/0123/voice.wav", "uploads/local/4567/portrait.png"]
    assert delete_unused(engine, None, (key for key in keys), deleted.append) == {}
    assert deleted == [sorted(keys)]


def test_two_jobs_sharing_uploads_deleted_at_once_leave_none_behind(start_api):
    """Each delete kept the uploads because the other job, being deleted too, still named them: the uploads stayed,
    named by no job and counted against the key's storage. A job being deleted never reads its inputs again."""
    api = start_api()
    body = api.body()
    first, second = (api.post(body, None).json()["id"] for _ in range(2))
    assert api.settled(first)["status"] == api.settled(second)["status"] == "succeeded"
    runner = api.client.app.state.services.runner
    real, nested = runner.jobs.delete_job, []

    def delete_the_other_first(job_id: str) -> None:
        # `first` has judged its uploads (the other job named them) and is about to drop its rows: `second` is
        # deleted now, judging its uploads while `first`, deleting, is still there
        if not nested:
            nested.append(job_id)
            runner.delete_job(second)
        real(job_id)

    runner.jobs.delete_job = delete_the_other_first
    assert api.client.delete(f"/v1/jobs/{first}", headers=auth(KEY_A)).status_code == 204
    assert nested == [first] and api.total() == 0
    assert upload_race.stored_uploads(api) == []
