"""Idempotency-Key on POST /v1/jobs, on SQLite: a repeat answers the job the first request made (200,
Idempotent-Replayed) and creates nothing; another body with the key is a 422; keys are per API key; concurrent
requests with one key make one job; a refused request leaves its key free; a deleted job's key makes a new job; the
callback secret is never answered again; migration 0006 down and up."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import IntegrityError

from spinbot.api.app import create_app
from spinbot.control.runner import Runner
from tests.support.api_client import local_client
from tests.support.idempotent_api import KEY_A, KEY_B, Api, assert_one_job_made, post_at_once
from tests.support.quick_dispatcher import QuickDispatcher
from tests.unit.test_state import alembic_config

INDEXES = {"uq_jobs_owner_idempotency_key", "uq_jobs_keyless_idempotency_key"}


@pytest.fixture
def start_api(spinbot_env, use_settings, tmp_path) -> Iterator[Callable[..., Api]]:
    with ExitStack() as stack:

        def start(hold: bool = False, **settings: object) -> Api:
            use_settings(**{"api_keys": f"{KEY_A},{KEY_B}", "priority_api_keys": KEY_A, **settings})
            dispatcher = QuickDispatcher(hold=hold)  # it was QuickDispatcher(hold): `fail`, and hold=True failed jobs
            api = Api(stack.enter_context(local_client(create_app(runner=Runner(dispatcher=dispatcher)))), tmp_path)
            api.dispatcher = dispatcher  # type: ignore[attr-defined]
            return api

        yield start


def stored_files(data) -> list[str]:
    return sorted(p.relative_to(data).as_posix() for p in data.rglob("*") if p.is_file() and "jobs" in p.parts)


def test_a_repeat_answers_the_first_jobs_answer_with_200_and_creates_nothing(start_api, spinbot_env):
    api = start_api()
    body = api.body(priority=3)
    first = api.post(body, "order-42")
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    job = first.json()
    assert job["idempotency_key"] == "order-42"
    files = stored_files(spinbot_env)
    # the same request: fields in another order, other whitespace, an omitted default spelled out
    again = json.dumps({"pipeline": "f5tts_infinitetalk", **dict(reversed(list(body.items())))}, indent=2).encode()
    for raw in (body, again):
        r = api.post(raw, "order-42")
        assert r.status_code == 200, r.text
        assert r.headers["Idempotent-Replayed"] == "true" and r.headers["Cache-Control"] == "no-store"
        assert r.json()["id"] == job["id"] and r.json()["created_at"] == job["created_at"]
        assert r.json()["idempotency_key"] == "order-42"
    assert api.total() == 1 and stored_files(spinbot_env) == files
    metrics = api.client.get("/metrics", headers={"Authorization": f"Bearer {KEY_A}"}).text
    assert "spinbot_jobs_created_total 1.0" in metrics and "spinbot_jobs_replayed_total 2.0" in metrics
    listed = api.client.get("/v1/jobs", headers={"Authorization": f"Bearer {KEY_A}"}).json()["items"]
    assert [j["idempotency_key"] for j in listed] == ["order-42"]
    # without the header, the same body is a new job
    assert api.post(body, None).status_code == 201 and api.total() == 2


def test_the_same_key_with_another_body_is_a_422_naming_the_key_and_changes_nothing(start_api):
    api = start_api()
    job = api.post(api.body(), "k-1").json()
    for other in (api.body(prompt="another"), api.body(priority=5), {**api.body(), "params": {}}):
        r = api.post(other, "k-1")
        assert r.status_code == 422
        error = r.json()["error"]
        assert error == (
            f"Idempotency-Key 'k-1' was already used for another request (job '{job['id']}'): send that request "
            "again unchanged, or use a new key for this one"
        )
        assert "\n" not in error and "Idempotent-Replayed" not in r.headers
    assert api.total() == 1
    assert api.post(api.body(), "k-1").status_code == 200  # the first body still answers its job


def test_another_api_key_with_the_same_idempotency_key_gets_its_own_job(start_api):
    api = start_api()
    a = api.post(api.body(KEY_A), "shared-key")
    b = api.post(api.body(KEY_B), "shared-key", key=KEY_B)
    assert a.status_code == 201 and b.status_code == 201 and a.json()["id"] != b.json()["id"]
    assert api.post(api.body(KEY_B), "shared-key", key=KEY_B).json()["id"] == b.json()["id"]
    assert api.total(KEY_A) == 1 and api.total(KEY_B) == 1
    # key B cannot reach key A's job through the key, nor learn it exists: its own request, its own answer
    assert api.client.get(f"/v1/jobs/{a.json()['id']}", headers={"Authorization": f"Bearer {KEY_B}"}).status_code == 404


def test_concurrent_requests_with_one_key_make_one_job(start_api, monkeypatch):
    api = start_api()
    answers = post_at_once(api, monkeypatch, api.body(), "at-once", 6)
    job_id = assert_one_job_made(api, answers)
    assert api.settled(job_id)["status"] == "succeeded"  # the one job runs, once


def test_a_refused_request_stores_nothing_and_leaves_its_key_free(start_api, spinbot_env):
    api = start_api(hold=True, max_active_jobs=1)
    bad_param = api.body(params={"infinite_talk": {"fsp": 3}})
    r = api.post(bad_param, "retry-me")
    assert r.status_code == 400 and "infinite_talk.fsp: unknown param" in r.json()["error"]
    r = api.post({**api.body(), "image": "no-such-upload"}, "retry-me")
    assert r.status_code == 400 and "unknown portrait upload" in r.json()["error"]
    assert api.total() == 0 and stored_files(spinbot_env) == []
    first = api.post(api.body(), "retry-me")  # fixed: the key makes its job
    assert first.status_code == 201
    # the job is active (held in infinite_talk) for the whole test: with `hold` read as `fail`, it failed, and the
    # 429 below held only while the failure had not been recorded yet
    assert api.dispatcher.holding.wait(20)  # type: ignore[attr-defined]
    # at the active-job limit (1, this job): a repeat is answered, not a 429, and counts nothing more
    assert api.post(api.body(), "retry-me").status_code == 200
    r = api.post(api.body(prompt="a second job"), "another-key")
    assert r.status_code == 429
    assert api.post(api.body(prompt="a second job"), "another-key").status_code == 429  # still free, still refused
    api.client.post(f"/v1/jobs/{first.json()['id']}/cancel", headers={"Authorization": f"Bearer {KEY_A}"})
    assert api.settled(first.json()["id"])["status"] == "cancelled"
    assert api.post(api.body(prompt="a second job"), "another-key").status_code == 201
    assert api.total() == 2


def test_a_deleted_jobs_key_makes_a_new_job(start_api):
    api = start_api()
    first = api.post(api.body(), "reusable").json()
    api.settled(first["id"])
    assert api.client.delete(f"/v1/jobs/{first['id']}", headers={"Authorization": f"Bearer {KEY_A}"}).status_code == 204
    api.inputs.clear()  # the delete took the uploads that only this job named
    again = api.post(api.body(), "reusable")
    assert again.status_code == 201 and again.json()["id"] != first["id"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "Idempotency-Key: empty; send 1 to 255 printable ASCII characters"),
        ("x" * 256, "Idempotency-Key: 256 characters, more than 255"),
        ("tab\there", "Idempotency-Key: '\\t' is not a printable ASCII character (a UUID makes a good key)"),
        # sent as UTF-8; the server reads a header as latin-1, so the first byte of the é is named
        ("caf\u00e9", "Idempotency-Key: '\\xc3' is not a printable ASCII character (a UUID makes a good key)"),
    ],
)
def test_a_key_that_is_not_1_to_255_printable_ascii_characters_is_a_one_line_400(start_api, value, message):
    api = start_api()
    headers = {"Authorization": f"Bearer {KEY_A}", "Idempotency-Key": value.encode()}
    r = api.client.post("/v1/jobs", json=api.body(), headers=headers)  # type: ignore[arg-type]
    assert r.status_code == 400 and r.json() == {"error": message}
    assert api.total() == 0


def test_a_key_of_255_characters_with_spaces_and_punctuation_is_taken(start_api):
    api = start_api()
    key = ("a b~!\"'{}" * 30)[:255]
    r = api.post(api.body(), key)
    assert r.status_code == 201 and r.json()["idempotency_key"] == key
    assert api.post(api.body(), key).status_code == 200


def test_a_replay_never_answers_the_callback_secret_again(start_api):
    # a receiver on loopback that refuses at once: the jobs' calls fail fast and are not tried again
    api = start_api(callback_allow_private=True, callback_max_attempts=1)
    hook = "http://127.0.0.1:9/hook"
    made = api.post(api.body(callback_url=hook), "with-hook")
    assert made.status_code == 201 and made.json()["callback_secret"].startswith("whsec_")
    replay = api.post(api.body(callback_url=hook), "with-hook")
    assert replay.status_code == 200 and replay.json()["callback_secret"] is None
    own = "whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"
    mine = api.post(api.body(callback_url=hook, callback_secret=own), "own-secret")
    assert mine.status_code == 201 and mine.json()["callback_secret"] is None
    replay = api.post(api.body(callback_url=hook, callback_secret=own), "own-secret")
    assert replay.status_code == 200 and replay.json()["callback_secret"] is None and own not in replay.text
    other = api.post(api.body(callback_url=hook, callback_secret="whsec_" + "QkJC" * 8), "own-secret")
    assert other.status_code == 422 and own not in other.text  # another secret is another request
    for job in (made.json(), mine.json()):
        api.settled(job["id"])


def test_the_idempotency_columns_migrate_down_and_up_and_the_indexes_hold(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "head")
    columns = {c["name"] for c in inspect(engine).get_columns("jobs")}
    assert {"idempotency_key", "idempotency_digest"} <= columns
    assert {i["name"] for i in inspect(engine).get_indexes("jobs")} >= INDEXES
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0005")
    assert not {"idempotency_key", "idempotency_digest"} & {c["name"] for c in inspect(engine).get_columns("jobs")}
    assert not INDEXES & {i["name"] for i in inspect(engine).get_indexes("jobs")}
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "head")
    assert_keys_unique_per_owner(engine)


def assert_keys_unique_per_owner(engine) -> None:
    """One job per (owner, key); NULL owners (the keyless API) share one scope; jobs without a key never collide."""
    insert = text(
        "INSERT INTO jobs (id, pipeline, status, owner, inputs, params, cancel_requested, created_at, progress, "
        "idempotency_key) VALUES (:id, 'p', 'pending', :owner, '{}', '{}', false, '2027-01-01', 0, :key)"
    )
    rows = [("1", "a", "k"), ("2", "b", "k"), ("3", None, "k"), ("4", "a", None), ("5", "a", None), ("6", None, None)]
    with engine.begin() as conn:
        for job_id, owner, key in rows:
            conn.execute(insert, {"id": job_id, "owner": owner, "key": key})
    for job_id, owner in (("7", "a"), ("8", None)):
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(insert, {"id": job_id, "owner": owner, "key": "k"})


def test_without_api_keys_a_repeat_answers_the_keyless_scopes_job(spinbot_env, use_settings, tmp_path, monkeypatch):
    monkeypatch.delenv("SPINBOT_API_KEYS", raising=False)
    use_settings()  # no keys: every job's owner is NULL, one scope for the keys (its own unique index)
    with local_client(create_app(runner=Runner(dispatcher=QuickDispatcher()))) as client:
        api = Api(client, tmp_path)
        first = api.post(api.body(), "local")
        assert first.status_code == 201
        answers = post_at_once(api, monkeypatch, api.body(), "local-at-once", 4)
        assert len({r.json()["id"] for r in answers}) == 1
        assert sorted(r.status_code for r in answers) == [200, 200, 200, 201]
        assert api.post(api.body(), "local").json()["id"] == first.json()["id"]
        assert api.total() == 2


def test_the_header_and_the_replay_answer_are_in_the_openapi_document(start_api):
    api = start_api()
    operation = api.client.get("/openapi.json").json()["paths"]["/v1/jobs"]["post"]
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in operation["parameters"])
    assert "Idempotent-Replayed" in operation["responses"]["200"]["headers"]
    assert "Idempotency-Key" in operation["responses"]["422"]["description"]
