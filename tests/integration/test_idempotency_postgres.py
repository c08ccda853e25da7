"""Idempotency-Key on PostgreSQL: migration 0006 down and up with its unique indexes, and concurrent requests with
one key through the API make one job (the unique index decides; the others answer that job, no 500)."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import inspect

from spinbot.api.app import create_app
from spinbot.control.runner import Runner
from spinbot.state.db import get_engine
from tests.support import services
from tests.support.api_client import local_client
from tests.support.idempotent_api import KEY_A, KEY_B, Api, assert_one_job_made, post_at_once
from tests.support.quick_dispatcher import QuickDispatcher
from tests.unit.test_idempotency import INDEXES, assert_keys_unique_per_owner
from tests.unit.test_state import alembic_config

pytestmark = pytest.mark.integration


@pytest.fixture
def postgres_url():
    """A scratch database of this test's own, dropped after it."""
    with services.scratch_postgres("spinbot_idempotency") as url:
        yield url


def test_the_idempotency_columns_migrate_down_and_up_on_postgres(postgres_url):
    engine = get_engine(postgres_url)  # upgraded to head
    assert {"idempotency_key", "idempotency_digest"} <= {c["name"] for c in inspect(engine).get_columns("jobs")}
    assert {i["name"] for i in inspect(engine).get_indexes("jobs")} >= INDEXES
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0005")
    assert "idempotency_key" not in {c["name"] for c in inspect(engine).get_columns("jobs")}
    assert not INDEXES & {i["name"] for i in inspect(engine).get_indexes("jobs")}
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "head")
    assert_keys_unique_per_owner(engine)


def test_concurrent_requests_with_one_key_make_one_job_on_postgres(
    postgres_url, spinbot_env, use_settings, tmp_path, monkeypatch
):
    use_settings(api_keys=f"{KEY_A},{KEY_B}", database_url=postgres_url)
    runner = Runner(dispatcher=QuickDispatcher())
    with local_client(create_app(runner=runner)) as client:
        api = Api(client, tmp_path)
        answers = post_at_once(api, monkeypatch, api.body(), "pg-at-once", 6)
        job_id = assert_one_job_made(api, answers)
        assert api.settled(job_id)["status"] == "succeeded"
        other = api.post(api.body(KEY_B), "pg-at-once", key=KEY_B)  # another API key: its own job
        assert other.status_code == 201 and other.json()["id"] != job_id
        assert api.post(api.body(prompt="changed"), "pg-at-once").status_code == 422
