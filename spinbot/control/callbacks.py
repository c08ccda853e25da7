"""Webhooks: a job created with a callback_url gets a signed POST when it ends (succeeded, failed or cancelled).

The control plane that finishes the job (the API process driving its graph, whichever worker ran its tasks) records
a new event on the job's row, due now (spinbot.state.callbacks); a CallbackSender in the API process delivers it in
its own threads, never in a job's or a request's. Each attempt: the job read again (a job deleted meanwhile, or
retried since, gets nothing), the URL checked and its name resolved once (spinbot.control.callback_url), one POST to
the checked address with a total time limit, no redirect followed, no body read, no proxy from the environment.
Network errors, 429 and 5xx are tried again after SPINBOT_CALLBACK_RETRY_SECONDS, then 3x longer each time, up to
SPINBOT_CALLBACK_MAX_ATTEMPTS in all; any other answer ends it. Pending attempts live in the database, so the API's
sweeper sends those a stopped process left (at least once: a receiver deduplicates by `webhook-id`).

Signed as the Standard Webhooks spec says: `webhook-id` (the event id, the same on every attempt),
`webhook-timestamp` (Unix seconds of the attempt) and `webhook-signature` (spinbot.control.callback_signing), keyed
with the job's secret, which the job's creation answered once (or the client's own).
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import random
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
from sqlalchemy.exc import SQLAlchemyError

from spinbot import __version__
from spinbot.control.callback_signing import check_secret, new_secret, sign
from spinbot.control.callback_url import CallbackPolicy, CallbackRefused, Resolver, Target, url_host
from spinbot.errors import InputError, JobNotFound, first_line
from spinbot.state import callbacks as cs
from spinbot.state.models import iso_utc, utcnow
from spinbot.state.store import JobStore, JobView

log = logging.getLogger(__name__)
SENDER_THREAD_PREFIX = "spinbot-callback"


class _NoCallbackRequestLines(logging.Filter):
    """httpx logs each request's whole URL at INFO ("HTTP Request: POST http://host/path?token=..."): a token in a
    callback URL's path or query would be in the server log. The sender's threads log their own line, host only."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.threadName or "").startswith(SENDER_THREAD_PREFIX)


logging.getLogger("httpx").addFilter(_NoCallbackRequestLines())

# An attempt's claim outlasts its longest run by this much: its time limit, and a lookup that may use all of the
# connect timeout where that is the longer, plus the database's reads and writes around them.
CLAIM_MARGIN_SECONDS = 30.0
SENDER_THREADS = 4
# One key's attempts at once: a key whose receivers are slow (or that ends many jobs at once) holds at most these of
# the SENDER_THREADS; its other due calls wait for one of its own attempts to end, never other keys' threads.
PER_OWNER_ATTEMPTS = 2


def new_job_callback(
    url: str | None, secret: str | None, policy: CallbackPolicy, owner: str | None = None
) -> dict[str, Any] | None:
    """The webhook state a job is created with, checked first (CallbackRefused, InputError): the URL as the policy
    sees it now (its name looked up as `owner`'s), and the client's secret or a new one."""
    if url is None:
        if secret is not None:
            raise InputError("callback_secret: given without a callback_url")
        return None
    policy.check(url, owner)
    return cs.new_callback(url, check_secret(secret) if secret is not None else new_secret())


# ---- one attempt ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    status: int | None  # the receiver's HTTP status, if it answered
    error: str | None  # one line; None when delivered
    retry: bool  # worth another attempt (network errors, 429, 5xx)


def judged(status: int) -> Outcome:
    if 200 <= status < 300:
        return Outcome(status, None, False)
    if 300 <= status < 400:
        return Outcome(status, f"HTTP {status}: redirects are not followed", False)
    return Outcome(status, f"HTTP {status}", status == 429 or status >= 500)


@dataclass(frozen=True)
class AttemptLimits:
    """An attempt's time limits: `connect` seconds for the name's lookup and again for the connection, `total` for
    the whole attempt, the lookup included, counted from `started` (time.monotonic())."""

    connect: float
    total: float
    started: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        return max(0.0, self.started + self.total - time.monotonic())


async def post(
    target: Target, headers: dict[str, str], body: bytes, limits: AttemptLimits, tls: ssl.SSLContext | bool
) -> Outcome:
    """One POST to the checked address, the name in Host and SNI, within what is left of the attempt's time; the
    answer's status only, its body never read."""
    left = limits.left()
    extensions = {"sni_hostname": target.url.host} if target.url.scheme == "https" else {}
    headers = {**headers, "host": target.url.authority}
    timeout = httpx.Timeout(left, connect=min(limits.connect, left))
    try:
        with anyio.fail_after(left):
            async with httpx.AsyncClient(
                trust_env=False, follow_redirects=False, timeout=timeout, verify=tls
            ) as client:
                request = client.build_request("POST", target.request_url, content=body, headers=headers)
                request.extensions.update(extensions)
                response = await client.send(request, stream=True)
                await response.aclose()
                return judged(response.status_code)
    except (TimeoutError, httpx.TimeoutException):
        return Outcome(None, f"no answer within {limits.total:g} s", True)
    except httpx.ConnectError:
        return Outcome(None, "could not connect", True)
    except httpx.HTTPError as err:
        return Outcome(None, f"the connection failed ({type(err).__name__})", True)


# ---- the sender -------------------------------------------------------------------------------------------------
class CallbackSender:
    """Delivers the webhooks of jobs that ended, in this process's own threads: a timer heap and a small pool."""

    def __init__(
        self,
        jobs: JobStore,
        settings: Any,
        render: Callable[[JobView], dict[str, Any]],
        *,
        resolver: Resolver | None = None,
        tls: ssl.SSLContext | bool = True,
    ):
        self.jobs, self.settings, self.render, self.tls = jobs, settings, render, tls
        self.store = cs.CallbackStore(jobs.engine)
        self.policy = CallbackPolicy.from_settings(settings, resolver)
        self.hold_seconds = settings.callback_connect_timeout + settings.callback_timeout + CLAIM_MARGIN_SECONDS
        self._heap: list[tuple[float, int, str]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._closed = False
        self._pool = ThreadPoolExecutor(max_workers=SENDER_THREADS, thread_name_prefix=SENDER_THREAD_PREFIX)
        self._timer: threading.Thread | None = None  # started with the first attempt scheduled
        self._queued: set[str] = set()  # on the heap, waiting for a thread or parked: a sweep adds none twice
        self._running: Counter[str] = Counter()  # attempts running, by job owner
        self._parked: dict[str, dict[str, None]] = {}  # by owner, in order: due calls waiting for its attempts

    def schedule(self, job_id: str, delay: float = 0.0) -> None:
        with self._wake:
            if self._closed:
                return  # the process is stopping: the attempt stays due in the database for another one
            if job_id in self._queued:
                return  # already on its way (a sweep of a backed-up sender finds it due again)
            self._queued.add(job_id)
            self._push(job_id, delay)

    def _push(self, job_id: str, delay: float) -> None:
        """Onto the timer heap (the caller holds self._wake); the timer thread starts with the first call."""
        heapq.heappush(self._heap, (time.monotonic() + delay, next(self._order), job_id))
        if self._timer is None:
            self._timer = threading.Thread(target=self._run_timer, name="spinbot-callback-timer", daemon=True)
            self._timer.start()
        self._wake.notify()

    def sweep(self) -> None:
        """Schedule every attempt due in the database: new ones a CLI recorded, retries and claims a stopped process
        left."""
        for job_id in self.store.due():
            self.schedule(job_id)

    def close(self) -> None:
        """Start no more attempts: those queued or parked stay due in the database for the next API process. The
        attempts already running finish within their time limit and record their outcome (the interpreter joins
        the pool's threads at exit); a process killed meanwhile leaves its claims to run out."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run_timer(self) -> None:
        with self._wake:
            while not self._closed:
                wait = self._heap[0][0] - time.monotonic() if self._heap else None
                if wait is None or wait > 0:
                    self._wake.wait(wait)
                    continue
                job_id = heapq.heappop(self._heap)[2]
                self._pool.submit(self._run_due, job_id)

    def _run_due(self, job_id: str) -> None:
        """A due call, in a pool thread: attempted now, or parked while its owner has PER_OWNER_ATTEMPTS running."""
        with _failures_logged(job_id):
            owner = self._owner(job_id)
            if not self._start(owner, job_id):
                return  # parked: scheduled again as one of its owner's attempts ends
            try:
                self.attempt(job_id)
            finally:
                self._end(owner)

    def _owner(self, job_id: str) -> str:
        try:
            job = self._job(job_id)
        except BaseException:
            self._forget(job_id)  # still due in the database: the next sweep schedules it again
            raise
        return (job.owner or "") if job is not None else ""

    def _forget(self, job_id: str) -> None:
        with self._wake:
            self._queued.discard(job_id)

    def _start(self, owner: str, job_id: str) -> bool:
        """Count an attempt of this owner (True), or park it while PER_OWNER_ATTEMPTS of its own run: a parked call
        stays in self._queued, so a sweep that finds it due again does not queue it a second time."""
        with self._wake:
            if self._running[owner] >= PER_OWNER_ATTEMPTS:
                self._parked.setdefault(owner, {})[job_id] = None
                return False
            self._running[owner] += 1
            self._queued.discard(job_id)  # from here a retry (or a later event) may be scheduled again
            return True

    def _end(self, owner: str) -> None:
        """An attempt of this owner ended: its oldest parked call, if any, goes back on the heap, due now."""
        with self._wake:
            self._running[owner] -= 1
            if self._running[owner] <= 0:
                del self._running[owner]
            parked = self._parked.get(owner, {})
            following = next(iter(parked), None)
            if following is not None:
                del parked[following]
            if not parked:
                self._parked.pop(owner, None)
            if following is not None and not self._closed:
                self._push(following, 0.0)

    def attempt(self, job_id: str) -> None:
        """One attempt at the job's due event, if this process gets it."""
        claim = self.store.claim(job_id, self.hold_seconds)
        if claim is None:
            return
        job = self._job(job_id)
        if job is None or job.status != claim.callback["event"]:  # deleted, or retried since it ended
            self.store.record(claim, {"state": cs.SUPERSEDED}, None)
            log.info("callback not sent: the job changed", extra={"job_id": job_id, "event_id": claim.event_id})
            return
        outcome = self._deliver(claim, job)
        self._record(claim, outcome)

    def _job(self, job_id: str) -> JobView | None:
        try:
            return self.jobs.get(job_id)
        except JobNotFound:
            return None

    def _deliver(self, claim: cs.Claim, job: JobView) -> Outcome:
        limits = AttemptLimits(self.settings.callback_connect_timeout, self.settings.callback_timeout)
        try:
            target = self.policy.check(claim.callback["url"], job.owner)  # resolved once; the request goes there
        except CallbackRefused as err:
            return Outcome(None, str(err).removeprefix("callback_url: "), retry=err.transient)
        body = self._body(claim, job)
        stamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": f"SpinBot-Webhook/{__version__}",
            "webhook-id": claim.event_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": sign(claim.callback["secret"], claim.event_id, stamp, body),
        }
        return anyio.run(post, target, headers, body, limits, self.tls)

    def _body(self, claim: cs.Claim, job: JobView) -> bytes:
        event = {
            "type": f"job.{claim.callback['event']}",
            "event_id": claim.event_id,
            "timestamp": iso_utc(utcnow()),
            "job": self.render(job),
        }
        return json.dumps(event, separators=(",", ":")).encode()

    def _record(self, claim: cs.Claim, outcome: Outcome) -> None:
        attempts = int(claim.callback.get("attempts") or 0) + 1
        attempts_left = attempts < self.settings.callback_max_attempts
        retry_in = self._backoff(attempts) if outcome.retry and attempts_left else None
        state = cs.DELIVERED if outcome.error is None else (cs.PENDING if retry_in is not None else cs.FAILED)
        changes = {
            "state": state,
            "attempts": attempts,
            "last_attempt_at": iso_utc(claim.now),
            "last_status": outcome.status,
            "last_error": outcome.error,
            "delivered_at": iso_utc(claim.now) if state == cs.DELIVERED else None,
        }
        written = self.store.record(claim, changes, retry_in)  # not where the job ended again meanwhile: a new event
        if written and retry_in is not None:
            # the database's due time was its own clock at the write plus retry_in; this delay starts after the
            # write, so it ends past due by either clock (a claim refused anyway waits for the next sweep)
            self.schedule(claim.job_id, retry_in + 0.05)
        fields = {
            "job_id": claim.job_id,
            "event_id": claim.event_id,
            "host": url_host(claim.callback["url"]),
            "attempt": attempts,
        }
        fields.update(status_code=outcome.status, state=state)
        if outcome.error is None:
            log.info("callback delivered", extra=fields)
        else:
            log.warning("callback attempt failed", extra={**fields, "error": outcome.error, "retry_in": retry_in})

    def _backoff(self, attempts: int) -> float:
        # up to a fifth longer at random: the calls of many jobs that one outage failed together do not all come back
        # in the same instant
        return self.settings.callback_retry_seconds * 3 ** (attempts - 1) * random.uniform(1.0, 1.2)


@contextmanager
def _failures_logged(job_id: str) -> Iterator[None]:
    """An attempt that could not finish: one line for the database away (the attempt was never claimed, or its claim
    runs out, and a later sweep sends it), the traceback for anything else."""
    try:
        yield
    except SQLAlchemyError as err:
        log.warning("callback attempt stopped", extra={"job_id": job_id, "error": first_line(err)})
    except Exception:
        log.exception("callback attempt crashed", extra={"job_id": job_id})
