"""/readyz: each dependency's state (database, Redis, storage), checked at once and bounded in time, and whether the
native backends' imports are done.

The checks are blocking client calls, so they run on a small pool of their own: a dependency that hangs ties up at
most one of its threads (a check still running is reported as timed out, never started twice), and never the
threads that serve requests.

Where jobs run in this process with a native backend, a submission's check imports torch and the backend's packages
(several seconds); the API does that once as it starts, in a thread of its own (`start`), and reports `backends`
as `loading` (503) until it is done, so that no submission waits for it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from spinbot.api.schemas import DependencyState, ReadyOut
from spinbot.control.admission import Admission
from spinbot.control.runner import Runner
from spinbot.errors import first_line
from spinbot.settings import Settings

CHECK_TIMEOUT_SECONDS = 3.0
log = logging.getLogger(__name__)


def ping_database(runner: Runner) -> None:
    """One `SELECT 1` on a pooled connection: the cheapest question the database must answer."""
    from sqlalchemy import text

    with runner.jobs.engine.connect() as conn:
        conn.execute(text("SELECT 1"))


class Readiness:
    def __init__(self, settings: Settings, runner: Runner):
        self.settings, self.runner = settings, runner
        self._pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="spinbot-readyz")
        self._running: dict[str, Future] = {}
        self._redis: Any = None
        self._imports: Future | None = None  # the native backends' imports, where there are any
        self._imports_took: float | None = None

    def start(self) -> None:
        """Import the native backends' packages in a thread, where some task runs natively in this process."""
        admission = Admission(self.settings, self.runner.artifacts)
        if not admission.native_tasks_here():
            return
        future = self._imports = Future()
        started = time.perf_counter()

        def run() -> None:
            try:
                admission.import_native()
            except Exception as err:  # noqa: BLE001 - a CPU install: submissions refuse the job with it
                log.warning("the native backends could not be imported", extra={"reason": first_line(err)})
                future.set_exception(err)
            else:
                future.set_result(None)
            finally:
                self._imports_took = time.perf_counter() - started

        threading.Thread(target=run, name="spinbot-native-imports", daemon=True).start()

    def _backends(self) -> DependencyState:
        future = self._imports
        if future is None:
            return DependencyState(ok=True, ms=0.0, detail="not configured")
        if not future.done():
            return DependencyState(ok=False, ms=0.0, detail="loading")
        detail = "unavailable" if future.exception() is not None else "ok"
        return DependencyState(ok=detail == "ok", ms=round((self._imports_took or 0.0) * 1000, 1), detail=detail)

    def _checks(self) -> dict[str, Callable[[], None] | None]:
        return {
            "database": self._database,
            "redis": self._redis_ping if self.settings.redis_url else None,
            "storage": self._storage,
        }

    async def check(self) -> ReadyOut:
        names, checks = zip(*self._checks().items())
        states = await asyncio.gather(*(self._run(name, check) for name, check in zip(names, checks)))
        dependencies = {**dict(zip(names, states)), "backends": self._backends()}
        ready = all(s.ok for s in dependencies.values())
        return ReadyOut(status="ready" if ready else "unavailable", dependencies=dependencies)

    async def _run(self, name: str, check: Callable[[], None] | None) -> DependencyState:
        if check is None:
            return DependencyState(ok=True, ms=0.0, detail="not configured")
        started = time.perf_counter()
        future = self._running.get(name)
        if future is None or future.done():
            future = self._running[name] = self._pool.submit(check)
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), CHECK_TIMEOUT_SECONDS)
            detail = "ok"
        except TimeoutError:
            detail = "timed out"
        except Exception:  # noqa: BLE001 - any failure is 'unreachable'; the details are not for an open probe
            detail = "unreachable"
        return DependencyState(ok=detail == "ok", ms=round((time.perf_counter() - started) * 1000, 1), detail=detail)

    def _database(self) -> None:
        ping_database(self.runner)

    def _redis_ping(self) -> None:
        if self._redis is None:
            import redis

            self._redis = redis.Redis.from_url(
                str(self.settings.redis_url),
                socket_timeout=CHECK_TIMEOUT_SECONDS,
                socket_connect_timeout=CHECK_TIMEOUT_SECONDS,
            )
        self._redis.ping()

    def _storage(self) -> None:
        from spinbot.storage.local import LocalStore
        from spinbot.storage.s3 import S3Store

        store = self.runner.artifacts
        if isinstance(store, S3Store):
            store.check_bucket()  # one HEAD of the bucket
        elif isinstance(store, LocalStore) and not os.access(store.root, os.W_OK):
            raise OSError("the artifact folder is not writable")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._redis is not None:
            self._redis.close()
