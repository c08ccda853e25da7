"""What the route modules share: the app's services and the owner of the request, as FastAPI dependencies."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from spinbot.api.auth import current_owner, may_set_priority, media_owner
from spinbot.api.executor import JobExecutor
from spinbot.api.metrics import Metrics
from spinbot.api.readiness import Readiness
from spinbot.control.runner import Runner
from spinbot.errors import JobNotFound, echo
from spinbot.settings import Settings
from spinbot.state.event_feed import LocalEventFeed, RedisEventFeed
from spinbot.state.store import JobView


class KeySlots:
    """What each key has going in this process: its event streams (SPINBOT_MAX_STREAMS_PER_KEY), with which one key
    could otherwise hold every connection the server takes (SPINBOT_API_MAX_CONNECTIONS), and its uploads in
    progress (SPINBOT_MAX_UPLOADS_PER_KEY), each a temporary file. Used on the event loop only."""

    def __init__(self) -> None:
        self.open: dict[str, int] = {}

    def take(self, owner: str, limit: int) -> bool:
        count = self.open.get(owner, 0)
        if count >= limit:
            return False
        self.open[owner] = count + 1
        return True

    def give_back(self, owner: str) -> None:
        count = self.open.pop(owner, 0) - 1
        if count > 0:
            self.open[owner] = count


@dataclass
class Services:
    settings: Settings
    runner: Runner
    executor: JobExecutor
    metrics: Metrics
    feed: LocalEventFeed | RedisEventFeed
    readiness: Readiness
    streams: KeySlots = field(default_factory=KeySlots)
    uploads: KeySlots = field(default_factory=KeySlots)

    def owned_job(self, job_id: str, owner: str | None) -> JobView:
        """The job, if this owner may see it; another owner's job is as missing as one that never was."""
        if not re.fullmatch(r"[0-9a-f]{32}", job_id):
            raise JobNotFound(f"job {echo(job_id)} not found")
        return self.runner.jobs.get(job_id, owner=owner) if owner is not None else self.runner.jobs.get(job_id)


async def _services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(_services)]
Owner = Annotated[str | None, Depends(current_owner)]
MediaOwner = Annotated[str | None, Depends(media_owner)]  # header key or media cookie: routes loaded by URL
MaySetPriority = Annotated[bool, Depends(may_set_priority)]  # SPINBOT_PRIORITY_API_KEYS
