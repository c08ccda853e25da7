"""Queue settings in one object: routing of tasks to named queues, priorities, leases, retention."""

from __future__ import annotations

from dataclasses import dataclass, field

from spinbot.control.requests import PRIORITY_MAX, PRIORITY_MIN  # BullMQ's range, which jobs are checked against
from spinbot.errors import SpinBotError
from spinbot.settings import Settings

# GPU tasks go to workers that hold a GPU; anything else goes to QueueOptions.default_queue.
DEFAULT_ROUTES = {"f5_to_tts": "gpu", "infinite_talk": "gpu", "upscale_video": "gpu"}

# BullMQ's scale: 1 runs first, larger numbers wait; every job gets one, because BullMQ serves jobs without a
# priority before all prioritized ones.
PRIORITY_HIGH = 10
PRIORITY_NORMAL = 100
PRIORITY_LOW = 1000


@dataclass(frozen=True)
class QueueOptions:
    redis_url: str
    routes: dict[str, str] = field(default_factory=dict)
    default_queue: str = "cpu"
    lock_seconds: float = 30.0
    stalled_check_seconds: float = 15.0
    max_stalled: int = 2
    redis_retry_seconds: float = 60.0
    result_ttl_seconds: int = 7 * 24 * 3600

    @classmethod
    def from_settings(cls, settings: Settings) -> QueueOptions:
        if not settings.redis_url:
            raise SpinBotError("SPINBOT_REDIS_URL is not set: the queue needs a Redis server")
        return cls(
            redis_url=settings.redis_url,
            routes={**DEFAULT_ROUTES, **settings.queue_routes},
            default_queue=settings.queue_default,
            lock_seconds=settings.queue_lock_seconds,
            stalled_check_seconds=settings.queue_stalled_check_seconds,
            max_stalled=settings.queue_max_stalled,
            redis_retry_seconds=settings.queue_redis_retry_seconds,
            result_ttl_seconds=settings.queue_result_ttl_seconds,
        )

    def queue_for(self, task: str) -> str:
        return self.routes.get(task, self.default_queue)

    def worker_opts(self) -> dict:
        """BullMQ worker options: the lock is renewed while the worker lives, so no job length is too long."""
        return {
            "lockDuration": int(self.lock_seconds * 1000),
            "stalledInterval": int(self.stalled_check_seconds * 1000),
            "maxStalledCount": self.max_stalled,
        }


def check_priority(priority: int) -> int:
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise ValueError(f"priority {priority} is outside {PRIORITY_MIN}..{PRIORITY_MAX} (1 runs first)")
    return priority
