"""An upload deleted while a job that names it is submitted, for the tests on SQLite (tests/unit/test_upload_in_use.py)
and PostgreSQL (tests/integration/test_upload_in_use_postgres.py). Before the owner's lock (spinbot.state.
inputs_in_use), a DELETE between a job's admission checks and its insert answered 204 and the job was written (201)
without its voice: it failed later, at its task."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from spinbot.control.admission import Admission
from tests.support.idempotent_api import KEY_A, Api, auth


@contextmanager
def after_admission(monkeypatch: pytest.MonkeyPatch, action: Callable[[], Any]) -> Iterator[list[Any]]:
    """`action` runs once a job's admission checks have passed, before its insert: the window, deterministic. What
    it returned is in the list yielded."""
    real, done = Admission.check, []

    def check_then_act(self: Admission, *args: Any, **kwargs: Any) -> None:
        real(self, *args, **kwargs)
        done.append(action())

    monkeypatch.setattr(Admission, "check", check_then_act)
    yield done
    monkeypatch.setattr(Admission, "check", real)


def delete_upload(api: Api, upload_id: str) -> httpx.Response:
    return api.client.delete(f"/v1/uploads/{upload_id}", headers=auth(KEY_A))


def stored_uploads(api: Api) -> list[str]:
    return api.client.app.state.services.runner.artifacts.list("uploads/")


def assert_refused_without(api: Api, job: httpx.Response, upload_id: str, name: str) -> None:
    """The job refused with one line naming the upload, nothing of it written, and the upload gone."""
    assert job.status_code == 400, job.text
    assert job.json() == {
        "error": f"upload '{upload_id}' ({name}) was deleted while the job was being submitted; upload it again"
    }
    assert api.total() == 0
    assert not [key for key in stored_uploads(api) if upload_id in key]
    assert api.client.app.state.services.runner.artifacts.list("jobs/") == []


def upload_deleted_during_admission(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    body = api.body()
    with after_admission(monkeypatch, lambda: delete_upload(api, body["voice"])) as deletes:
        job = api.post(body, None)
    assert [r.status_code for r in deletes] == [204]
    assert_refused_without(api, job, body["voice"], "narrator_voice")


def job_deleted_during_admission(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """Deleting a job deletes the uploads no other job names: a job submitted meanwhile with the same uploads was
    not counted, and was written without them."""
    body = api.body()
    first = api.post(body, None).json()["id"]
    assert api.settled(first)["status"] == "succeeded"
    deleting = lambda: api.client.delete(f"/v1/jobs/{first}", headers=auth(KEY_A))  # noqa: E731
    with after_admission(monkeypatch, deleting) as deletes:
        job = api.post(body, None)
    assert [r.status_code for r in deletes] == [204]
    assert_refused_without(api, job, body["image"], "source_image")  # the first input checked
    assert stored_uploads(api) == []


def upload_of_a_job_is_kept_with_a_409_naming_it(api: Api) -> None:
    """Queued or running, then finished: the job's upload stays until the job is deleted."""
    body = api.body()
    job_id = api.post(body, None).json()["id"]
    dispatcher = api.client.app.state.services.runner.dispatcher
    assert dispatcher.holding.wait(30)  # running
    for upload_id in (body["voice"], body["image"]):
        answer = delete_upload(api, upload_id)
        assert answer.status_code == 409
        assert answer.json() == {
            "error": f"upload '{upload_id}' is an input of your job '{job_id}'; deleting that job deletes it"
        }
    api.client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(KEY_A))
    assert api.settled(job_id)["status"] == "cancelled"
    assert delete_upload(api, body["voice"]).status_code == 409  # a finished job can be retried: it keeps it
    assert len(stored_uploads(api)) == 2
    assert api.client.delete(f"/v1/jobs/{job_id}", headers=auth(KEY_A)).status_code == 204
    assert stored_uploads(api) == []
