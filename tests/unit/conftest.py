import sys
import threading
import time
import traceback
from pathlib import Path
from types import FrameType

import pytest

# How long a job that a test started may take to stop after the test's own teardown (the API's shutdown has waited
# for its jobs already; a test's own thread gets this long to reach its end).
JOB_STOP_GRACE_SECONDS = 10.0

# Functions that drive a job or run a task: a thread inside one of them is doing a job's work.
JOB_FRAMES = {(("spinbot", "control", "runner.py"), "run"), (("spinbot", "control", "dispatch.py"), "execute_task")}


def _job_frame(frame: FrameType | None) -> FrameType | None:
    while frame is not None:
        if (Path(frame.f_code.co_filename).parts[-3:], frame.f_code.co_name) in JOB_FRAMES:
            return frame
        frame = frame.f_back
    return None


def _running_jobs(before: set[threading.Thread]) -> dict[threading.Thread, FrameType]:
    frames = sys._current_frames()
    found = {}
    for thread in threading.enumerate():
        if thread in before or thread is threading.current_thread() or thread.ident is None:
            continue
        frame = _job_frame(frames.get(thread.ident))
        if frame is not None:
            found[thread] = frames[thread.ident]
    return found


@pytest.fixture(autouse=True)
def no_job_outlives_its_test():
    """A job (or task) that a test started, in a thread of this process, is over when the test is: the suite runs
    in one process, and a job left rendering goes on through the next tests, which see its work as theirs (a
    stand-in backend that records the windows asked for counted another job's windows 36 and 51). Autouse, so
    torn down after the test's own fixtures (a TestClient's app shut down, with its job threads): a job still
    running then fails the test that started it, naming its thread and where it is."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + JOB_STOP_GRACE_SECONDS
    while (running := _running_jobs(before)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if running:
        where = "\n".join(
            f"  {thread.name}:\n" + "".join(traceback.format_stack(frame, limit=6)) for thread, frame in running.items()
        )
        pytest.fail(f"a job this test started was still running {JOB_STOP_GRACE_SECONDS:.0f} s after it:\n{where}")


@pytest.fixture
def keyed_client(spinbot_env, monkeypatch):
    """The API in this process with one key, tests.support.api_client's KEY (requests send its AUTH header)."""
    from tests.support.api_client import KEY, api_client  # imported here: most unit tests need no app

    with api_client(monkeypatch, KEY) as client:
        yield client
