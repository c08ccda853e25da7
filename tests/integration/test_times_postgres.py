"""Times on PostgreSQL whose sessions are not in UTC: read back as aware UTC and answered in the API's one form, and a
node's estimated end counted down on the database's clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from spinbot.api.schemas import JobOut
from spinbot.state.db import get_engine
from spinbot.state.store import JobStore
from tests.support import services
from tests.unit.test_times_utc import recent

pytestmark = pytest.mark.integration


@pytest.fixture
def tokyo_postgres_url():
    """A scratch database whose sessions answer timestamptz in Tokyo's time (UTC+9)."""
    with services.scratch_postgres("spinbot_times") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE {url.rsplit('/', 1)[1]} SET timezone TO 'Asia/Tokyo'")
        yield url


def test_times_of_a_session_in_another_zone_are_answered_in_utc(tokyo_postgres_url):
    jobs = JobStore(get_engine(tokyo_postgres_url))
    job_id = jobs.new_id()
    jobs.create_job(job_id, "f5tts_infinitetalk", [("f5_to_tts", "f5_to_tts", "python")], {}, {}, None)
    jobs.set_job_status(job_id, "running")
    attempt = jobs.node_started(job_id, "f5_to_tts")
    jobs.node_progress(job_id, "f5_to_tts", 0.5, "chunk 5/10", attempt=attempt, seconds_left=120.0)
    job = jobs.get(job_id)
    assert job.read_at is not None and job.read_at.utcoffset() == timedelta(hours=9)  # the session's zone indeed
    for moment in (job.created_at, job.started_at, job.node("f5_to_tts").started_at):
        assert moment is not None and moment.tzinfo == UTC and abs(moment - datetime.now(UTC)) < timedelta(seconds=60)
    answer = JobOut.of(job).model_dump(mode="json")
    assert recent(answer["created_at"]) and recent(answer["started_at"]), answer
    assert answer["nodes"][0]["seconds_left"] == pytest.approx(120.0, abs=5.0)
