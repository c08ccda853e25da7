"""User media decoded in child processes with hard limits, so that the next unknown decoder blow-up (memory, CPU, a
segfault in a C decoder) costs one child, never the API server that serves everyone.

A `Sandbox` keeps a few warm worker processes (a ProcessPoolExecutor of the 'spawn' context: a fresh interpreter,
never a fork of the multi-threaded server). Each worker starts by capping its address space (RLIMIT_AS) and core
dumps, then imports the decoders once; each call gets its own CPU-time budget (RLIMIT_CPU's soft limit moved past
the CPU the worker already used: SIGXCPU ends it) and a wall-clock limit (the worker is killed). A worker that died
(a signal, a limit) or was killed makes the call a one-line `CheckAbandoned` (400), and the pool is replaced, so the
next call works; a call that was in the same pool when another one broke it is tried once more in the new pool.
The function runs by name ("module:function"), so the server never imports the decoders for it; InputError and
InputTooLarge raised in the child come back as themselves, by class name and message (never a pickled traceback).

Used by the upload check (spinbot/api/routes/uploads.py), the checks at submission (spinbot/control/admission.py)
and the check of a job's input file before a task decodes it (spinbot/tasks/user_files.py), so in the API, a CLI
and `spinbot worker` alike; `run_checked` runs in-process where the sandbox is off (SPINBOT_UPLOAD_CHECK_SANDBOX=false)
or the platform has no `resource` module.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import signal
import threading
import weakref
from concurrent.futures import BrokenExecutor, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from spinbot.errors import InputError, InputTooLarge, ParamsError, SpinBotError

log = logging.getLogger(__name__)

# What a worker imports once as it starts: the check functions and the decoders they use.
PRELOAD = ("spinbot.media.upload_check",)
# Errors that cross back from the child as themselves (class name + message); any other error is a bug, said as one.
_RETURNED = {cls.__name__: cls for cls in (InputTooLarge, ParamsError, InputError)}
# Threads that numeric and image libraries start per core: each reserves address space (stacks, allocator arenas),
# which RLIMIT_AS counts, so a worker on a 128-core host would need several GB before decoding a byte.
_ONE_THREAD = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


class CheckAbandoned(InputError):
    """A check that a limit stopped, or whose process died: the file is refused (400) with one line."""


class CheckUnavailable(SpinBotError):
    """No check could run (every worker busy for the whole time limit, or a worker that cannot start): 503."""


@dataclass(frozen=True)
class Limits:
    memory_bytes: int  # RLIMIT_AS of each worker: its whole address space, imports included
    seconds: float  # wall clock of one call; also the wait for a free worker
    cpu_seconds: float  # RLIMIT_CPU of one call (the settings make it `seconds`)
    workers: int

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        seconds = settings.upload_check_seconds
        return cls(settings.upload_check_memory_bytes, seconds, seconds, settings.upload_check_workers)


def available() -> bool:
    """The platform can limit a child (POSIX `resource`, RLIMIT_AS)."""
    try:
        import resource
    except ImportError:
        return False
    return hasattr(resource, "RLIMIT_AS")


def resolve(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def run_checked(settings: Any, what: str, target: str, *args: Any) -> Any:
    """target(*args) ("module:function") in the shared sandbox of these settings, or in this process where the
    sandbox is off or cannot run here. `what` starts the one-line error ("the portrait upload")."""
    if not settings.upload_check_sandbox or not available():
        try:
            return resolve(target)(*args)
        except MemoryError:
            raise CheckAbandoned(f"{what} could not be checked within the limits: it ran out of memory") from None
    return shared(Limits.from_settings(settings)).run(what, target, *args)


def warm_shared(settings: Any) -> None:
    """The API's start: the shared sandbox's workers started (and their imports done) before the first upload."""
    if settings.upload_check_sandbox and available():
        shared(Limits.from_settings(settings)).warm()


_shared: Sandbox | None = None
_shared_lock = threading.Lock()


def shared(limits: Limits) -> Sandbox:
    """One sandbox per process (its workers stay warm between calls); new limits replace it."""
    global _shared
    with _shared_lock:
        if _shared is None or _shared.limits != limits:
            if _shared is not None:
                _shared.close()
            _shared = Sandbox(limits)
        return _shared


class Sandbox:
    def __init__(self, limits: Limits, preload: tuple[str, ...] = PRELOAD):
        self.limits, self.preload = limits, preload
        self._lock = threading.Lock()
        # At most `workers` calls in the pool at once, so each one submitted runs at once (none waits in the pool's
        # queue while its time runs) and a timeout kills a worker that is running it, not a queued call.
        self._slots = threading.BoundedSemaphore(limits.workers)
        self._pool: ProcessPoolExecutor | None = None
        self._workers_of: weakref.WeakKeyDictionary[ProcessPoolExecutor, tuple[list[Any], Any]] = (
            weakref.WeakKeyDictionary()
        )
        self.replaced = 0  # pools replaced after a worker died or was killed (tests, logs)

    # ---- the pool ---------------------------------------------------------------------------------------------------
    def _current(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                import multiprocessing

                self._pool = ProcessPoolExecutor(
                    self.limits.workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start_worker,
                    initargs=(self.limits.memory_bytes, self.preload),
                )
            return self._pool

    def warm(self) -> None:
        """Start every worker now (each imports the decoders), so the first checks need not wait for it; a pool
        already started is left alone."""
        with self._lock:
            if self._pool is not None:
                return
        pool = self._current()
        for _ in range(self.limits.workers):
            pool.submit(_noop)  # a worker is spawned per call while none is idle

    def _drop(self, pool: ProcessPoolExecutor) -> tuple[bool, tuple[list[Any], Any]]:
        """Drop `pool` if it is still the current one (the next call starts a new one): whether this call dropped it,
        and its workers and manager thread (also where another call dropped it first)."""
        with self._lock:
            ours = self._pool is pool
            if ours:
                self._pool = None
                self.replaced += 1
                # the executor's own table of its workers and its manager thread, which shutdown() forgets: kept
                # for a later kill, and to read exit codes once that thread reaped the workers
                workers = list((getattr(pool, "_processes", None) or {}).values())
                self._workers_of[pool] = (workers, getattr(pool, "_executor_manager_thread", None))
                pool.shutdown(wait=False, cancel_futures=True)  # idle workers exit, a busy one after its call
            return ours, self._workers_of.get(pool, ([], None))

    def _replace(self, pool: ProcessPoolExecutor, kill: bool) -> str:
        """_drop, its workers killed if asked; why they ended, from their exit codes ("" where another call dropped
        the pool: that call says why)."""
        ours, (processes, manager) = self._drop(pool)
        for process in processes if kill else ():
            process.kill()
        if not ours:
            return ""
        # The executor's thread ends the others after a crash and reaps them all; reaping them here too raced it
        # (a waitpid that lost found no child, and a SIGABRT read as no signal at all).
        if manager is not None:
            manager.join(timeout=5)
        return _why_ended([p.exitcode for p in processes])

    def close(self) -> None:
        pool = self._pool
        if pool is not None:
            self._replace(pool, kill=True)

    # ---- one call ---------------------------------------------------------------------------------------------------
    def run(self, what: str, target: str, *args: Any) -> Any:
        """target(*args) in a worker; its value, its InputError, or a one-line CheckAbandoned / CheckUnavailable."""
        limits = self.limits
        if not self._slots.acquire(timeout=limits.seconds):
            raise CheckUnavailable(
                f"{what} could not be checked: every checker was busy for {limits.seconds:g} s; try again"
            )
        try:
            for attempt in (1, 2):
                pool = self._current()
                try:
                    call = pool.submit(_call, target, args, limits.cpu_seconds, _cwd())
                    outcome = call.result(timeout=limits.seconds)
                except FutureTimeout:
                    self._replace(pool, kill=True)
                    log.warning("an upload check ran past its time", extra={"what": what, "target": target})
                    raise CheckAbandoned(
                        f"{what} could not be checked within the limits: it took longer than {limits.seconds:g} s "
                        "(SPINBOT_UPLOAD_CHECK_SECONDS)"
                    ) from None
                except (BrokenExecutor, RuntimeError) as err:  # RuntimeError: submitted as another call shut it
                    why = self._replace(pool, kill=False)
                    log.warning("an upload check's worker died", extra={"what": what, "why": why, "error": repr(err)})
                    if attempt == 1:
                        continue  # maybe another call's crash ended the pool: once more, in a fresh one
                    if why == "":
                        why = "another check's crash ended it"
                    elif why == _NO_SIGNAL:
                        raise CheckUnavailable(f"{what} could not be checked: {why} (see the server's log)") from None
                    raise CheckAbandoned(f"{what} could not be checked within the limits: {self._said(why)}") from None
                return self._outcome(what, pool, outcome)
        finally:
            self._slots.release()
        raise AssertionError("unreachable")

    def _outcome(self, what: str, pool: ProcessPoolExecutor, outcome: tuple[str, str, Any]) -> Any:
        status, name, value = outcome
        if status == "ok":
            return value
        if status == "error":
            raise _RETURNED[name](value)
        if status == "memory":
            self._drop(pool)  # the worker lived through it; a fresh one is surer than its heap
            gib = self.limits.memory_bytes / 1024**3
            raise CheckAbandoned(
                f"{what} could not be checked within the limits: it needed more than {gib:.3g} GiB of memory "
                "(SPINBOT_UPLOAD_CHECK_MEMORY_BYTES)"
            )
        raise RuntimeError(f"the check {name} failed in its worker: {value}")  # a bug: the API's 500

    def _said(self, why: str) -> str:
        if why == "SIGXCPU":
            return f"it used more than {self.limits.cpu_seconds:g} s of CPU (SPINBOT_UPLOAD_CHECK_SECONDS)"
        return f"its decoder process died ({why})"


_NO_SIGNAL = "its worker process exited"


def _why_ended(codes: list[int | None]) -> str:
    """The signal that ended the pool's worker (a crash, a limit), else that one exited (its initializer failed).
    SIGTERM is the executor ending the others after one died; SIGKILL may be the kernel's OOM killer."""
    signals = [-code for code in codes if code is not None and code < 0 and -code != signal.SIGTERM]
    if signals:
        return signal.Signals(signals[0]).name
    if any(code == -signal.SIGTERM for code in codes):
        return "SIGTERM"
    return _NO_SIGNAL


# ---- in the worker ---------------------------------------------------------------------------------------------------
def _start_worker(memory_bytes: int, preload: tuple[str, ...]) -> None:
    """Limits first, imports after: the decoders' own address space counts against the limit."""
    import resource

    # Ctrl-C at a terminal reaches the whole process group: the parent (`spinbot run`) decides what it ends, and
    # shuts its workers down as it exits; an idle worker's own KeyboardInterrupt printed a traceback on the way.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in _ONE_THREAD:
        os.environ[name] = "1"
    _few_malloc_arenas()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash leaves no core file of up to the memory limit
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = memory_bytes if hard == resource.RLIM_INFINITY else min(memory_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))  # the hard limit too: nothing in the child raises it
    for module in preload:
        importlib.import_module(module)
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover - cv2 is a dependency
        pass


def _few_malloc_arenas() -> None:
    """glibc gives each thread up to 8 x cores malloc arenas of 64 MiB address space each; two are plenty here."""
    try:
        import ctypes

        ctypes.CDLL(None).mallopt(-8, 2)  # M_ARENA_MAX
    except (OSError, AttributeError):  # not glibc
        pass


def _noop() -> None:
    return None


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # the folder was removed: absolute paths still work
        return None


def _call(target: str, args: tuple[Any, ...], cpu_seconds: float, cwd: str | None) -> tuple[str, str, Any]:
    """One call in a worker, its outcome as plain values: ("ok", "", value), ("error", class name, message),
    ("memory", "", "") or ("failed", target, first line). Run in the caller's working folder: a path the CLI's
    user typed ("me.png") means the same file, and an error names it as they typed it."""
    import resource

    if cwd is not None:
        try:
            os.chdir(cwd)  # the worker started where its caller was then, which may have moved since
        except OSError:
            pass

    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(usage.ru_utime + usage.ru_stime + cpu_seconds)  # this call's CPU time, past what it used
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))
    try:
        return "ok", "", resolve(target)(*args)
    except MemoryError:
        return "memory", "", ""
    except InputError as err:
        name = next(cls.__name__ for cls in type(err).__mro__ if cls.__name__ in _RETURNED)
        return "error", name, str(err)
    except Exception as err:  # noqa: BLE001 - a bug in the check: said in one line, no traceback crosses
        from spinbot.errors import first_line

        return "failed", target, f"{type(err).__name__}: {first_line(err)}"
