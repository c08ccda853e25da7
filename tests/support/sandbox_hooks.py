"""Functions a sandbox worker runs by name in the tests (spinbot.media.sandbox): crashes, limits and a marker of
where they ran. Kept free of heavy imports, so a worker that preloads only this module starts in a fraction of a
second."""

from __future__ import annotations

import ctypes
import os
import time

from spinbot.errors import InputTooLarge


def pid(*_: object) -> str:
    """Where it ran (any check's arguments are taken and ignored)."""
    return f".{os.getpid()}"


def cwd(*_: object) -> str:
    return os.getcwd()


def segfault(*_: object) -> str:
    ctypes.string_at(0)  # reads address 0: SIGSEGV, as a C decoder's bad pointer
    return "unreachable"


def abort(*_: object) -> str:
    os.abort()  # SIGABRT, as a C library's failed assertion or a failed allocation it cannot handle


def allocate(nbytes: int) -> int:
    return len(bytearray(nbytes))  # MemoryError past RLIMIT_AS


def spin(seconds: float) -> str:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
    return "spun"


def sleep(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


def nap(seconds: float) -> int:
    """Where it slept."""
    time.sleep(seconds)
    return os.getpid()


def too_large(*_: object) -> str:
    raise InputTooLarge("the portrait upload is refused: 9 x 9 is a test's limit")


def broken(*_: object) -> str:
    raise KeyError("a bug in a check")
