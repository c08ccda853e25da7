"""SPINBOT_MAX_ACTIVE_JOBS on PostgreSQL: jobs of one key written at one moment by many threads (or API processes)
never pass the limit. Under READ COMMITTED each insert counted without the others' (12 at once with a limit of 3
made 6 to 12 jobs); a lock on the owner's name in the transaction makes it exact."""

from __future__ import annotations

import pytest

from spinbot.errors import TooManyJobs
from spinbot.state.db import get_engine
from spinbot.state.store import JobStore
from tests.support import services
from tests.unit.test_api_concurrent_limits import create_at_once

pytestmark = pytest.mark.integration


def test_jobs_written_at_once_never_pass_the_limit_on_postgres():
    with services.scratch_postgres("spinbot_active_limit") as url:
        store = JobStore(get_engine(url))
        assert create_at_once(store, "owner-a", 3, 16) == ["created"] * 3 + ["refused"] * 13
        assert store.count_unfinished("owner-a") == 3
        assert create_at_once(store, "owner-b", 3, 4).count("created") == 3


def test_a_retry_past_the_limit_leaves_the_job_failed_on_postgres():
    with services.scratch_postgres("spinbot_active_limit") as url:
        store = JobStore(get_engine(url))
        ids = [store.new_id() for _ in range(3)]
        for job_id, status in zip(ids, ("running", "failed", "failed"), strict=True):
            store.create_job(job_id, "p", [], {"values": {}, "artifacts": {}}, {}, "owner-a")
            store.set_job_status(job_id, status)
        assert store.reopen_failed(ids[1], max_active=2)
        with pytest.raises(TooManyJobs):
            store.reopen_failed(ids[2], max_active=2)
        assert store.get(ids[2]).status == "failed" and store.count_unfinished("owner-a") == 2
