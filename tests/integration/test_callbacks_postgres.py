"""Webhook state on PostgreSQL: migration 0005 up and down, and of many processes claiming one due attempt at once
exactly one gets it (the claim is one conditional UPDATE on the database's clock)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from alembic import command
from sqlalchemy import inspect

from spinbot.state.callbacks import CallbackStore, new_callback
from spinbot.state.db import get_engine
from spinbot.state.store import JobStore
from tests.support import services
from tests.unit.test_state import alembic_config

pytestmark = pytest.mark.integration


@pytest.fixture
def postgres_url():
    with services.scratch_postgres("spinbot_callbacks") as url:
        yield url


def test_the_callback_columns_migrate_down_and_up_on_postgres(postgres_url):
    engine = get_engine(postgres_url)  # upgraded to head
    assert {"callback", "callback_event", "callback_due_at"} <= {c["name"] for c in inspect(engine).get_columns("jobs")}
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0004")
    assert "callback" not in {c["name"] for c in inspect(engine).get_columns("jobs")}
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "head")
    assert "ix_jobs_callback_due_at" in {i["name"] for i in inspect(engine).get_indexes("jobs")}


def test_one_of_many_claimers_gets_a_due_attempt_and_a_new_event_outdates_the_old_ones_outcome(postgres_url):
    jobs = JobStore(get_engine(postgres_url))
    job_id = jobs.new_id()
    jobs.create_job(job_id, "p", [("n", "t", "node")], {}, {}, callback=new_callback("https://h.test/", "whsec_x"))
    store = CallbackStore(jobs.engine)
    assert store.due() == []  # waiting for the job to end
    assert store.job_ended(job_id, "failed")
    assert store.due() == [job_id]
    barrier = threading.Barrier(12)

    def claim(_: int):
        barrier.wait()
        return store.claim(job_id, 30)

    with ThreadPoolExecutor(12) as pool:
        claims = [c for c in pool.map(claim, range(12)) if c is not None]
    assert len(claims) == 1 and claims[0].callback["event"] == "failed" and store.due() == []
    assert store.record(claims[0], {"state": "pending", "attempts": 1}, retry_in=0.2)
    time.sleep(0.5)
    again = store.claim(job_id, 30)
    assert again is not None and again.callback["attempts"] == 1
    assert store.job_ended(job_id, "succeeded")  # retried and ended again: a new event, due now
    assert not store.record(again, {"state": "failed"}, None)  # the old event's outcome is not written
    assert jobs.get(job_id).callback["event"] == "succeeded" and jobs.get(job_id).callback["state"] == "pending"
