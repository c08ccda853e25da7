"""`spinbot serve` with Redis unreachable: a job it takes over is one warning line, not an error with a traceback
every half lease time for every unfinished job (README: serve rides out a Redis outage)."""

from __future__ import annotations

import logging

import redis

from spinbot.api.executor import JobExecutor


class RedisDownRunner:
    """Runner.run as it fails while Redis is away: at the job's first event."""

    def __init__(self) -> None:
        self.runs: list[str] = []

    def run(self, job_id: str) -> None:
        self.runs.append(job_id)
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6390. Connection refused.")


def test_a_job_taken_over_while_redis_is_down_is_one_warning_without_traceback(caplog):
    runner = RedisDownRunner()
    executor = JobExecutor(runner, 1)  # type: ignore[arg-type]  # only run() is called
    with caplog.at_level(logging.INFO, logger="spinbot.api.executor"):
        assert executor.submit("job-1")
        executor.pool.shutdown(wait=True)
    assert runner.runs == ["job-1"]
    records = [r for r in caplog.records if r.name == "spinbot.api.executor"]
    assert [(r.levelname, r.getMessage()) for r in records] == [
        ("WARNING", "job waits for Redis: taken again at the next look for unfinished jobs")
    ]
    assert records[0].exc_info is None
    assert records[0].error == "Error 111 connecting to 127.0.0.1:6390. Connection refused."  # type: ignore[attr-defined]
    assert executor._active == {}  # the thread let it go: the next look for unfinished jobs takes it again
