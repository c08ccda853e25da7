"""An upload a job names is never deleted under it, on PostgreSQL (SQLite: tests/unit/test_upload_in_use.py), where
READ COMMITTED let a DELETE and a job's insert each read without the other's write: the owner's advisory lock
(spinbot.state.inputs_in_use) puts one after the other."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import psycopg
import pytest

from spinbot.api.app import create_app
from spinbot.control.runner import Runner
from tests.support import services, upload_race
from tests.support.api_client import local_client
from tests.support.idempotent_api import KEY_A, KEY_B, Api
from tests.support.quick_dispatcher import QuickDispatcher

pytestmark = pytest.mark.integration


@pytest.fixture
def start_api(spinbot_env, use_settings, tmp_path) -> Iterator[Callable[..., Api]]:
    with ExitStack() as stack:
        url = stack.enter_context(services.scratch_postgres("spinbot_upload_in_use"))

        def start(hold: bool = False) -> Api:
            use_settings(api_keys=f"{KEY_A},{KEY_B}", database_url=url)
            runner = Runner(dispatcher=QuickDispatcher(hold=hold))
            return Api(stack.enter_context(local_client(create_app(runner=runner))), tmp_path)

        start.url = url  # type: ignore[attr-defined]
        yield start


def test_an_upload_deleted_while_a_job_naming_it_is_admitted_refuses_the_job_on_postgres(start_api, monkeypatch):
    upload_race.upload_deleted_during_admission(start_api(), monkeypatch)


def test_a_job_deleted_with_its_uploads_while_another_is_admitted_refuses_it_on_postgres(start_api, monkeypatch):
    upload_race.job_deleted_during_admission(start_api(), monkeypatch)


def test_an_upload_of_a_job_is_kept_with_a_409_naming_the_job_on_postgres(start_api):
    upload_race.upload_of_a_job_is_kept_with_a_409_naming_it(start_api(hold=True))


def _wait_for_a_lock_waiter(url: str) -> None:
    """Until a session of this database waits on an advisory lock (the job's insert): polled, bounded."""
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(600):
            waiting = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event = 'advisory'"
            ).fetchone()
            if waiting and waiting[0]:
                return
            threading.Event().wait(0.05)
    raise AssertionError("the job's insert never waited for the owner's lock")


def test_a_job_submitted_while_its_upload_is_deleted_waits_then_is_refused_on_postgres(start_api, monkeypatch):
    """The DELETE holds the owner's lock while the files go: a job naming the upload, submitted then, passes its
    checks (the upload is still there), waits at its insert, then finds the upload gone."""
    api = start_api()
    body = api.body()
    store = api.client.app.state.services.runner.artifacts
    real, answers = store.delete_prefix, []
    submit = threading.Thread(target=lambda: answers.append(api.post(body, None)))

    def delete_with_a_job_waiting(prefix: str) -> int:
        if prefix.startswith("uploads/"):
            submit.start()
            _wait_for_a_lock_waiter(start_api.url)
        return real(prefix)

    monkeypatch.setattr(store, "delete_prefix", delete_with_a_job_waiting)
    assert upload_race.delete_upload(api, body["voice"]).status_code == 204
    submit.join(60)
    upload_race.assert_refused_without(api, answers[0], body["voice"], "narrator_voice")
