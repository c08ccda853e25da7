"""Fixtures for tests against real services. Redis: SPINBOT_TEST_REDIS_URL (default the local server)."""

from __future__ import annotations

import os

import pytest
import redis

from tests.conftest import in_ci

REDIS_BASE = os.environ.get("SPINBOT_TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
CLAIM_SECONDS = 3600


def _claim_database(server: redis.Redis) -> int:
    """A Redis database (1-15) of its own for this test run: test runs side by side must not flush each other."""
    for db in range(1, 16):
        if server.set(f"spinbot-test:db:{db}", os.getpid(), nx=True, ex=CLAIM_SECONDS):
            return db
    pytest.fail("no free Redis database for tests (all of 1-15 claimed in database 0)")


@pytest.fixture(scope="session", autouse=True)
def machine_services_up():
    """Redis and PostgreSQL running for the integration tests (started here if stopped, and stopped after)."""
    from tests.support.services import machine_services

    with machine_services():
        yield


@pytest.fixture(scope="session")
def redis_url(machine_services_up) -> str:
    """The URL of an empty Redis database, flushed before and after the session; unreachable Redis fails in CI."""
    server = redis.Redis.from_url(f"{REDIS_BASE}/0", socket_connect_timeout=2)
    try:
        server.ping()
    except redis.RedisError as err:
        message = f"Redis at {REDIS_BASE} is not reachable: {err}"
        pytest.fail(message) if in_ci() else pytest.skip(message)
    db = _claim_database(server)
    url = f"{REDIS_BASE}/{db}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    server.delete(f"spinbot-test:db:{db}")
