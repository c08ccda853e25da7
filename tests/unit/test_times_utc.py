"""Every time the API and the CLI write is aware UTC in one form (2026-12-05T17:31:37.123456Z), whatever the
database gave back: SQLite keeps no zone, PostgreSQL answers in its session's time zone."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import update
from typer.testing import CliRunner

from spinbot.api.schemas import CallbackOut, JobOut
from spinbot.cli import app
from spinbot.control.runner import Runner
from spinbot.state.models import Job, iso_utc
from tests.support.api_client import local_client, unrun_job
from tests.unit.test_progress import ScriptedDispatcher, request_  # noqa: F401 - a fixture

UTC_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z")
TOKYO = timezone(timedelta(hours=9))


def recent(text: str) -> bool:
    """An aware UTC time in the one form, within a minute of now."""
    return bool(UTC_ISO.fullmatch(text)) and abs(datetime.fromisoformat(text) - datetime.now(UTC)) < timedelta(
        seconds=60
    )


def finish(runner: Runner, job_id: str) -> None:
    runner.jobs.set_job_status(job_id, "running")
    runner.jobs.set_job_status(job_id, "failed", error="stopped here")


def test_get_jobs_answers_its_times_in_utc_with_their_zone(spinbot_env, tmp_path):
    from spinbot.api.app import create_app

    with local_client(create_app()) as client:
        job_id = unrun_job(client, tmp_path, "")
        finish(client.app.state.services.runner, job_id)
        one = client.get(f"/v1/jobs/{job_id}").json()
        (listed,) = client.get("/v1/jobs").json()["items"]
    for job in (one, listed):
        assert all(recent(job[name]) for name in ("created_at", "started_at", "finished_at")), job
    assert one["created_at"] <= one["started_at"] <= one["finished_at"]


def test_jobs_show_and_list_json_write_the_apis_form(spinbot_env, request_):  # noqa: F811 - the fixture
    runner = Runner(dispatcher=ScriptedDispatcher())
    job_id = runner.create_job(request_)
    finish(runner, job_id)
    shown = json.loads(CliRunner().invoke(app, ["jobs", "show", job_id, "--json"]).stdout)
    (listed,) = json.loads(CliRunner().invoke(app, ["jobs", "list", "--json"]).stdout)
    api = JobOut.of(runner.jobs.get(job_id)).model_dump(mode="json")
    for record in (shown, listed):
        assert [record[name] for name in ("created_at", "started_at", "finished_at")] == [
            api["created_at"],
            api["started_at"],
            api["finished_at"],
        ]
        assert recent(record["finished_at"]), record


def test_a_time_stored_in_another_zone_is_read_back_as_the_same_instant_in_utc(spinbot_env, request_):  # noqa: F811
    # SQLite keeps no zone: an aware time of another zone was stored as its wall clock, 9 hours off once read.
    runner = Runner(dispatcher=ScriptedDispatcher())
    job_id = runner.create_job(request_)
    moment = datetime(2026, 12, 6, 2, 31, 37, 123456, tzinfo=TOKYO)
    with runner.jobs.session() as s, s.begin():
        s.execute(update(Job).where(Job.id == job_id).values(finished_at=moment))
    finished = runner.jobs.get(job_id).finished_at
    assert finished == moment and finished.tzinfo == UTC
    assert JobOut.of(runner.jobs.get(job_id)).model_dump()["finished_at"].tzinfo == UTC
    assert (
        JobOut.of(runner.jobs.get(job_id)).model_dump_json().count('"finished_at":"2026-12-05T17:31:37.123456Z"') == 1
    )


def test_a_callbacks_attempt_time_is_answered_in_utc_whatever_zone_it_was_written_in():
    # written by an older version as PostgreSQL's session time, with its offset
    callback = {
        "url": "https://hooks.example.com/x",
        "state": "pending",
        "last_attempt_at": "2026-12-06T02:31:37+09:00",
    }
    shown = CallbackOut.of(callback)
    assert shown is not None and shown.model_dump(mode="json")["last_attempt_at"] == "2026-12-05T17:31:37Z"


def test_the_one_form_is_pydantics_own():
    for moment in (datetime(2026, 12, 5, 17, 31, 37, 123456), datetime(2026, 12, 6, 2, 31, 37, tzinfo=TOKYO)):
        written = CallbackOut.of({"url": "https://h.example/", "state": "pending", "last_attempt_at": moment})
        assert written is not None and written.model_dump(mode="json")["last_attempt_at"] == iso_utc(moment)
    assert iso_utc(datetime(2026, 12, 6, 2, 31, 37, tzinfo=TOKYO)) == "2026-12-05T17:31:37Z"
