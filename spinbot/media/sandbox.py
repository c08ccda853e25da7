"""User media decoded in child processes with hard limits, so that the next unknown decoder blow-up (memory, CPU, a
segfault in a C decoder) costs one child, never the API server that serves everyone.

A `Sandbox` keeps a few warm worker processes (of the 'spawn' context: a fresh interpreter, never a fork of the
multi-threaded server), each with a pipe of its own and one call at a time. Each worker starts by capping its
address space (RLIMIT_AS) and core dumps, then imports the decoders once; each call gets its own CPU-time budget
(RLIMIT_CPU's soft limit moved past the CPU the worker already used: SIGXCPU ends it) and a wall-clock limit (the
worker is killed). A worker that died (a signal, a limit) or was killed makes its call a one-line `CheckAbandoned`
(400) and is replaced at the next call; the other workers, and the calls they run, are not touched. A worker
whose parent died (even killed) reads the end of its pipe and exits. (A ProcessPoolExecutor did this before: one
call's time limit killed all its workers, and they outlived a killed parent.)
The function runs by name ("module:function"), so the server never imports the decoders for it; InputError,
InputTooLarge and InputTooSmall raised in the child come back as themselves, by class name and message (never a
pickled traceback).

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
import queue
import signal
import threading
from dataclasses import dataclass
from typing import Any

from spinbot.errors import InputError, InputTooLarge, InputTooSmall, ParamsError, SpinBotError

log = logging.getLogger(__name__)

# What a worker imports once as it starts: the check functions and the decoders they use.
PRELOAD = ("spinbot.media.upload_check",)
# Errors that cross back from the child as themselves (class name + message); any other error is a bug, said as one.
_RETURNED = {cls.__name__: cls for cls in (InputTooLarge, InputTooSmall, ParamsError, InputError)}
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


class _Worker:
    """One worker process and the parent's end of its pipe."""

    def __init__(self, limits: Limits, preload: tuple[str, ...]):
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self.conn, theirs = context.Pipe()
        # daemon: ended with the process that started it (multiprocessing's own exit handler)
        self.process = context.Process(target=_serve, args=(theirs, limits.memory_bytes, preload), daemon=True)
        self.process.start()
        theirs.close()  # the child's end lives in the child only: its death is an EOF here

    def end(self, kill: bool) -> str:
        """Why it ended, once it did (killed first if asked): a signal's name, else _NO_SIGNAL."""
        if kill:
            self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()
        code = self.process.exitcode
        return signal.Signals(-code).name if code is not None and code < 0 else _NO_SIGNAL


class Sandbox:
    def __init__(self, limits: Limits, preload: tuple[str, ...] = PRELOAD):
        self.limits, self.preload = limits, preload
        # The idle workers, the last used on top (it is warm); None is one not started yet (at first use, or since
        # its last one ended). A call takes one for itself, so at most `workers` calls run at once, and a call past
        # its time ends its own worker, never one that another call is running in.
        self._idle: queue.LifoQueue[_Worker | None] = queue.LifoQueue()
        for _ in range(limits.workers):
            self._idle.put(None)
        self._lock = threading.Lock()
        self._live: set[_Worker] = set()
        self.replaced = 0  # workers ended after they died, ran past a limit or held a MemoryError (tests, logs)

    def warm(self) -> None:
        """Start every worker not started yet (each imports the decoders), so the first checks need not wait."""
        taken: list[_Worker | None] = []
        while True:
            try:
                taken.append(self._idle.get_nowait())
            except queue.Empty:
                break
        for worker in taken:
            try:
                worker = worker or self._start()
            finally:
                self._idle.put(worker)

    def pids(self) -> list[int]:
        with self._lock:
            return [w.process.pid for w in self._live if w.process.pid is not None]

    def close(self) -> None:
        with self._lock:
            live, self._live = list(self._live), set()
        for worker in live:
            worker.end(kill=True)

    def _start(self) -> _Worker:
        worker = _Worker(self.limits, self.preload)
        with self._lock:
            self._live.add(worker)
        return worker

    def _is_live(self, worker: _Worker | None) -> bool:
        with self._lock:
            return worker in self._live

    def _end(self, worker: _Worker, kill: bool) -> str:
        with self._lock:
            self._live.discard(worker)
            self.replaced += 1
        return worker.end(kill)

    # ---- one call ---------------------------------------------------------------------------------------------------
    def run(self, what: str, target: str, *args: Any) -> Any:
        """target(*args) in a worker; its value, its InputError, or a one-line CheckAbandoned / CheckUnavailable."""
        try:
            worker = self._idle.get(timeout=self.limits.seconds)
        except queue.Empty:
            raise CheckUnavailable(
                f"{what} could not be checked: every checker was busy for {self.limits.seconds:g} s; try again"
            ) from None
        try:
            worker = worker or self._start()
            outcome = self._ask(what, target, worker, (target, args, self.limits.cpu_seconds, _cwd()))
            if outcome[0] in ("memory", "unstarted"):
                self._end(worker, kill=True)  # it lived through it; a fresh one is surer than its heap
        finally:
            self._idle.put(worker if self._is_live(worker) else None)
        return self._outcome(what, outcome)

    def _ask(self, what: str, target: str, worker: _Worker, message: tuple[Any, ...]) -> tuple[str, str, Any]:
        """Send one call and wait for its answer, at most the time limit; a dead or late worker is ended here."""
        try:
            worker.conn.send(message)
            if worker.conn.poll(self.limits.seconds):
                return worker.conn.recv()
        except (EOFError, OSError):  # the worker died: its exit code says why
            why = self._end(worker, kill=False)
            log.warning("an upload check's worker died", extra={"what": what, "target": target, "why": why})
            if why == _NO_SIGNAL:  # no limit or crash: it could not start (an import failed): the server's fault
                raise CheckUnavailable(f"{what} could not be checked: {why} (see the server's log)") from None
            raise CheckAbandoned(f"{what} could not be checked within the limits: {self._said(why)}") from None
        except BaseException:  # interrupted (Ctrl-C): the answer still to come must not answer the next call
            self._end(worker, kill=True)
            raise
        self._end(worker, kill=True)
        log.warning("an upload check ran past its time", extra={"what": what, "target": target})
        raise CheckAbandoned(
            f"{what} could not be checked within the limits: it took longer than {self.limits.seconds:g} s "
            "(SPINBOT_UPLOAD_CHECK_SECONDS)"
        )

    def _outcome(self, what: str, outcome: tuple[str, str, Any]) -> Any:
        status, name, value = outcome
        if status == "ok":
            return value
        if status == "error":
            raise _RETURNED[name](value)
        if status == "memory":
            gib = self.limits.memory_bytes / 1024**3
            raise CheckAbandoned(
                f"{what} could not be checked within the limits: it needed more than {gib:.3g} GiB of memory "
                "(SPINBOT_UPLOAD_CHECK_MEMORY_BYTES)"
            )
        if status == "unstarted":  # the server's setup, not the file: 503, and the next call starts a new worker
            gib = self.limits.memory_bytes / 1024**3
            raise CheckUnavailable(
                f"{what} could not be checked: its checker process could not start ({value}; its imports may take "
                f"{gib:.3g} GiB of address space past its start, SPINBOT_UPLOAD_CHECK_MEMORY_BYTES)"
            )
        raise RuntimeError(f"the check {name} failed in its worker: {value}")  # a bug: the API's 500

    def _said(self, why: str) -> str:
        if why == "SIGXCPU":
            return f"it used more than {self.limits.cpu_seconds:g} s of CPU (SPINBOT_UPLOAD_CHECK_SECONDS)"
        return f"its decoder process died ({why})"


_NO_SIGNAL = "its worker process exited"


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
    # on top of what the interpreter holds as it starts: a sitecustomize or .pth hook that imports torch maps about
    # 4 GiB of CUDA libraries into every Python process (seen on a GPU machine), which no decode uses
    limit = _address_space_bytes() + memory_bytes
    limit = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))  # the hard limit too: nothing in the child raises it
    for module in preload:
        importlib.import_module(module)
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover - cv2 is a dependency
        pass


def _address_space_bytes() -> int:
    """This process's address space now (what RLIMIT_AS compares with); 0 where /proc does not say."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _few_malloc_arenas() -> None:
    """glibc gives each thread up to 8 x cores malloc arenas of 64 MiB address space each; two are plenty here."""
    try:
        import ctypes

        ctypes.CDLL(None).mallopt(-8, 2)  # M_ARENA_MAX
    except (OSError, AttributeError):  # not glibc
        pass


def _serve(conn: Any, memory_bytes: int, preload: tuple[str, ...]) -> None:
    """A worker's life: its limits and imports, then one call after another until its parent's end closes. A worker
    whose imports fail answers its first call with why (an exit would only say that it exited) and ends."""
    unstarted = None
    try:
        _start_worker(memory_bytes, preload)
    except Exception as err:  # noqa: BLE001 - an import that failed under the limit (or without it): said in one line
        from spinbot.errors import first_line

        unstarted = ("unstarted", "", f"{type(err).__name__}: {first_line(err)}")
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the parent closed its end, or died
            return
        conn.send(unstarted or _call(*message))
        if unstarted:
            return


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
