"""Jobs: create, list, read, follow (server-sent events), cancel, retry, delete."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Header, Query, Response
from sse_starlette.sse import EventSourceResponse

from spinbot.api.auth import Forbidden
from spinbot.api.deps import MaySetPriority, MediaOwner, Owner, Services, ServicesDep
from spinbot.api.errors import ErrorBody, TooManyStreams, error_responses
from spinbot.api.idempotency import HEADER, REPLAYED_HEADER, checked_key, replayed_job, request_digest
from spinbot.api.limits import StalledClient, bounded_send
from spinbot.api.public_errors import public_error
from spinbot.api.schemas import JobCreate, JobCreated, JobOut, JobPage
from spinbot.control.requests import JobRequest
from spinbot.errors import Conflict, InputError, TooManyJobs, echo
from spinbot.pipelines.spec import get_pipeline
from spinbot.state.event_feed import ReaderLagged
from spinbot.state.events import Event
from spinbot.state.idempotency import KeyedJob, KeyInUse, find_keyed_job
from spinbot.state.store import FINAL_STATES, RETRYABLE_STATES, RUNNING, JobView
from spinbot.storage.uploads import upload_key
from spinbot.tasks.base import refuse_deep_params

router = APIRouter(tags=["jobs"])
JobStatus = Literal["pending", "running", "succeeded", "failed", "cancelled", "interrupted", "deleting"]

# With no event for this long, the stream looks at the job's row: a job whose process died without a final event
# still ends its streams.
IDLE_CHECK_SECONDS = 15.0
# A comment line this often keeps a stream that has nothing to say (a long render between two reports) from being cut
# by a proxy's idle timeout (nginx's default read timeout is 60 s).
PING_SECONDS = 10.0
# A stream that fell too far behind ends with a `reconnect` event; EventSource connects again after this long.
RECONNECT_MS = 1000
log = logging.getLogger(__name__)


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=HEADER,
        description="your own unique value for this request (1 to 255 printable ASCII characters, a UUID say): sent "
        "again with the same body, it answers the job the first request created (200, Idempotent-Replayed: true) "
        "instead of making another; with another body, a 422. Scoped to the API key, kept as long as the job",
    ),
]
_REPLAY_ANSWER = {
    "model": JobCreated,
    "description": "a repeat of a request with the same Idempotency-Key and body: the job it created, unchanged; "
    "header Idempotent-Replayed: true; callback_secret is never answered again",
    "headers": {REPLAYED_HEADER: {"description": "true", "schema": {"type": "string"}}},
}


@router.post(
    "/v1/jobs",
    status_code=201,
    response_model=JobCreated,
    responses={
        200: _REPLAY_ANSWER,
        **error_responses(400, 401, 403, 429, 503),
        422: {
            "model": ErrorBody,
            "description": "a field is missing or has the wrong type, or the Idempotency-Key "
            "was used for another request",
        },
    },
)
def create_job(
    body: JobCreate,
    services: ServicesDep,
    owner: Owner,
    may_set_priority: MaySetPriority,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> JobCreated:
    runner, store = services.runner, services.runner.artifacts
    key = checked_key(idempotency_key)
    refuse_deep_params(body.params)  # before the digest, which serializes them
    idempotency = (key, request_digest(body)) if key is not None else None
    if idempotency is not None:  # a repeat: answered before any check or limit, so it costs nothing twice
        keyed = find_keyed_job(runner.jobs.engine, owner, idempotency[0])
        if keyed is not None:
            return _replay(services, response, keyed, idempotency)
    _refuse_priority(body.priority, may_set_priority)
    _refuse_past_active_limit(runner, owner, services.settings.max_active_jobs)
    spec = get_pipeline(body.pipeline, services.settings.pipelines)  # the pipeline, then params, then uploads
    runner.validate_params(spec, dict(body.params))
    image = _upload_key(store, owner, body.image, "portrait")
    voice = _upload_key(store, owner, body.voice, "voice")
    try:
        job_id = runner.create_job(
            JobRequest(
                pipeline=body.pipeline,
                prompt=body.prompt,
                ref_text=body.ref_text,
                params=body.params,
                owner=owner,
                priority=body.priority,
                input_keys={"source_image": image, "narrator_voice": voice},
                callback_url=body.callback_url,
                callback_secret=body.callback_secret,
                idempotency=idempotency,
                max_active=services.settings.max_active_jobs,
            )
        )
    except KeyInUse as err:  # a concurrent request with the same key stored its job first
        assert idempotency is not None
        return _replay(services, response, err.job, idempotency)
    services.metrics.jobs_created.inc()
    job = runner.jobs.get(job_id)
    services.executor.submit(job_id)
    # a secret the server made is answered here, once; a client's own is never sent back
    secret = job.callback["secret"] if job.callback is not None and body.callback_secret is None else None
    return JobCreated(**JobOut.of(job).model_dump(), callback_secret=secret)


def _replay(services: Services, response: Response, keyed: KeyedJob, idempotency: tuple[str, str]) -> JobCreated:
    """The job an earlier request with the same key and body created (KeyReused, a 422, for another body). Its
    callback_secret is never answered again, whoever made it."""
    job_id = replayed_job(keyed, *idempotency)
    response.status_code = 200
    response.headers[REPLAYED_HEADER] = "true"
    services.metrics.jobs_replayed.inc()
    return JobCreated(**JobOut.of(services.runner.jobs.get(job_id)).model_dump())


@router.get("/v1/jobs", response_model=JobPage, responses=error_responses(401, 422))
def list_jobs(
    services: ServicesDep,
    owner: Owner,
    limit: int = Query(20, ge=1, le=200),
    offset: int = Query(0, ge=0, le=2**53),  # a database integer holds it
    status: JobStatus | None = Query(None, description="only jobs in this state"),
) -> JobPage:
    jobs, total = services.runner.jobs.list(owner=owner, limit=limit, offset=offset, status=status)
    return JobPage(items=[JobOut.of(j) for j in jobs], total=total, limit=limit, offset=offset)


@router.get("/v1/jobs/{job_id}", response_model=JobOut, responses=error_responses(401, 404, 422))
def get_job(job_id: str, services: ServicesDep, owner: Owner) -> JobOut:
    return JobOut.of(services.owned_job(job_id, owner))


@router.post(
    "/v1/jobs/{job_id}/cancel", status_code=202, response_model=JobOut, responses=error_responses(401, 404, 422)
)
def cancel_job(job_id: str, services: ServicesDep, owner: Owner) -> JobOut:
    job = services.owned_job(job_id, owner)
    if job.status not in FINAL_STATES:
        services.runner.cancel(job_id)
    return JobOut.of(services.runner.jobs.get(job_id))


@router.post(
    "/v1/jobs/{job_id}/retry",
    status_code=202,
    response_model=JobOut,
    responses=error_responses(401, 404, 409, 422, 429),
)
def retry_job(job_id: str, services: ServicesDep, owner: Owner, may_set_priority: MaySetPriority) -> JobOut:
    """Run a failed (or interrupted) job again from its first unfinished node. Of concurrent retries one wins; the
    others get 409. A retry counts against SPINBOT_MAX_ACTIVE_JOBS as a new job does (429). A retry by a key that
    may no longer set priority (taken out of SPINBOT_PRIORITY_API_KEYS) runs at the default priority: refusing it
    would leave the job no way to run again, and keeping it would keep a right the key has lost."""
    job = services.owned_job(job_id, owner)
    # pending again, with an event, before 202 (live readers follow the new run); only if it is still failed now
    if not services.runner.reopen(job_id, services.settings.max_active_jobs, keep_priority=may_set_priority):
        status = services.runner.jobs.get(job_id).status if job.status in RETRYABLE_STATES else job.status
        raise Conflict(f"job '{job_id}' is {status}; only failed jobs (or interrupted ones) can be retried")
    services.executor.submit(job_id)
    return JobOut.of(services.runner.jobs.get(job_id))


@router.delete(
    "/v1/jobs/{job_id}", status_code=204, response_class=Response, responses=error_responses(401, 404, 409, 422)
)
def delete_job(job_id: str, services: ServicesDep, owner: Owner) -> Response:
    """Delete a finished job: its record, artifacts and the uploads no other job of the key uses (409 while it may
    still run)."""
    services.owned_job(job_id, owner)
    services.runner.delete_job(job_id)
    return Response(status_code=204)


@router.get(
    "/v1/jobs/{job_id}/events",
    response_class=EventSourceResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "a `snapshot` (the job as GET returns it, when the stream opens), then the `node` and `job` "
            "events published after it, until the job ends; a `: ping` comment every 10 s while nothing happens",
        },
        **error_responses(401, 404, 422, 429),
    },
)
async def job_events(job_id: str, services: ServicesDep, owner: MediaOwner) -> EventSourceResponse:
    """Server-sent events; the header key or the media cookie (EventSource cannot send a header). A key may have
    SPINBOT_MAX_STREAMS_PER_KEY open in this process; one more is a 429."""
    job = await anyio.to_thread.run_sync(services.owned_job, job_id, owner)
    slot, limit = owner or "", services.settings.max_streams_per_key
    if not services.streams.take(slot, limit):  # no await between the count and taking a slot
        raise TooManyStreams(
            f"this key has {limit} event streams open, the limit (SPINBOT_MAX_STREAMS_PER_KEY={limit}); close one"
        )
    release = partial(services.streams.give_back, slot)
    return CountedEventSource(_event_stream(services, job.id), release, services.settings.api_send_timeout)


class CountedEventSource(EventSourceResponse):
    """An event stream that gives its key's slot back when it ends, however it ends (the job ended, the client left,
    a HEAD, an error, a write its client did not take within SPINBOT_API_SEND_TIMEOUT); the generator's own `finally`
    would not run for a stream never started."""

    def __init__(self, events: AsyncIterator[dict[str, Any]], release: Callable[[], None], send_timeout: float):
        super().__init__(events, ping=PING_SECONDS)
        self.release, self.write_timeout = release, send_timeout

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        # Bounded here as well as by SlowReaderLimit, which bounds every answer: sse-starlette's own `send_timeout`
        # bounds the events and pings but not the write that ends the body, and the slot must be given back.
        try:
            await super().__call__(scope, receive, bounded_send(send, self.write_timeout))
        except StalledClient:
            log.warning("an event stream ended: its client read nothing", extra={"seconds": self.write_timeout})
        finally:
            self.release()


async def _event_stream(services: Services, job_id: str) -> AsyncIterator[dict[str, Any]]:
    """The job as it is now first (a snapshot), then the events published since, in order, until it ends; no thread
    is held while waiting. Nothing from before the snapshot is replayed: a client that connects late (or reconnects)
    would otherwise watch the job go back through its past, a retried job's old `failed` ending the stream."""
    subscription = await services.feed.open(job_id, history=False)  # before the snapshot: nothing falls between
    try:
        job = await anyio.to_thread.run_sync(services.runner.jobs.get, job_id)
        yield _snapshot(job)
        if job.status in FINAL_STATES:
            return
        shown = ShownProgress(job)
        async for event in _lag_ends(subscription.events(IDLE_CHECK_SECONDS)):
            if isinstance(event, ReaderLagged):
                yield {"event": "reconnect", "data": json.dumps({"message": str(event)}), "retry": RECONNECT_MS}
                return
            if event is None:
                current = await anyio.to_thread.run_sync(services.runner.jobs.get, job_id)
                if current.status in FINAL_STATES:
                    yield _snapshot(current)
                    return
                continue
            if not shown.admits(event):
                continue
            data = {**event.to_dict(), "message": public_error(event.message)}
            yield {"event": event.kind, "data": json.dumps(data)}
            if event.kind == "job" and event.status in FINAL_STATES:
                return
    finally:
        subscription.close()


async def _lag_ends(events: AsyncIterator[Event | None]) -> AsyncIterator[Event | ReaderLagged | None]:
    """The events, then ReaderLagged as the last item where the stream's queue overflowed (event_feed.EventQueue)."""
    try:
        async for event in events:
            yield event
    except ReaderLagged:
        yield ReaderLagged(
            "this stream fell too far behind the job's events and ends here; connect again for the job as it is now"
        )


class ShownProgress:
    """Each node's (attempt, progress) as this stream has shown it. An event published after the subscription but
    before the snapshot was read can be older than the snapshot (the database is written after the event): it is
    left out rather than shown as progress going back."""

    def __init__(self, job: JobView):
        self.nodes = {n.node_id: (n.attempts, n.progress) for n in job.nodes}

    def admits(self, event: Event) -> bool:
        if event.kind != "node" or event.node_id is None or event.attempt is None:
            return True
        attempt, progress = self.nodes.get(event.node_id, (0, 0.0))
        if event.attempt < attempt:
            return False  # an attempt that another one already replaced
        if event.attempt == attempt and event.status == RUNNING and event.progress < progress:
            return False
        self.nodes[event.node_id] = (event.attempt, event.progress)
        return True


def _snapshot(job: JobView) -> dict[str, Any]:
    return {"event": "snapshot", "data": JobOut.of(job).model_dump_json()}


def _refuse_priority(priority: int | None, may_set_priority: bool) -> None:
    """One key cannot put its jobs ahead of every other key's: only SPINBOT_PRIORITY_API_KEYS may set priority."""
    if priority is not None and not may_set_priority:
        raise Forbidden(
            "this API key may not set a job's priority (only the keys in SPINBOT_PRIORITY_API_KEYS may); "
            "send the job without priority"
        )


def _refuse_past_active_limit(runner, owner: str | None, limit: int) -> None:
    """Before any work on the request: one key cannot queue jobs without end. A cheap early refusal; the limit
    itself is held where the job is written (JobStore.create_job's `max_active`), since requests sent at once all
    pass this check while their inputs are checked."""
    active = runner.jobs.count_unfinished(owner)
    if active >= limit:
        raise TooManyJobs.at_limit(active, limit)


def _upload_key(store, owner: str | None, upload_id: str, kind: str) -> str:
    key = upload_key(store, owner, upload_id, kind)
    if key is None:
        raise InputError(f"unknown {kind} upload {echo(upload_id)}")
    return key
