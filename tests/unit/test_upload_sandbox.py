"""Uploads are decoded in child processes with hard limits (spinbot.media.sandbox): a decoder that crashes, takes
memory or CPU past its limit, or runs past its time costs one child, the client gets one line, and the next check
works. The hostile 'decoders' are plain functions the worker runs by name (tests/support/sandbox_hooks.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from spinbot.api.routes import uploads
from spinbot.api.routes.uploads import check_content
from spinbot.control import admission
from spinbot.errors import InputError, InputTooLarge
from spinbot.media import sandbox
from spinbot.media.sandbox import CheckAbandoned, CheckUnavailable, Limits, Sandbox
from spinbot.media.upload_check import check_upload
from spinbot.samples import portrait_path, voice_path
from spinbot.settings import get_settings
from tests.support.api_client import AUTH

HOOKS = "tests.support.sandbox_hooks"


@pytest.fixture(scope="module")
def hooks_sandbox():
    """Small limits, and workers that preload only the hooks (each starts in a fraction of a second)."""
    box = Sandbox(Limits(memory_bytes=768 * 1024**2, seconds=5, cpu_seconds=1, workers=2), preload=(HOOKS,))
    yield box
    box.close()


def voice_seconds(settings) -> tuple[float, float]:
    return settings.min_voice_seconds, settings.max_voice_seconds


def one_line(err: BaseException) -> str:
    message = str(err)
    assert "\n" not in message and "Traceback" not in message
    return message


# ---- real checks through the shared sandbox -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("samples")
    wide = folder / "wide.png"
    Image.new("RGB", (1000, 100), "white").save(wide)
    text = folder / "notes.png"
    text.write_text("not an image at all\n" * 10)
    short = folder / "short.wav"
    sf.write(short, (0.3 * np.sin(np.arange(4000) / 5)).astype(np.float32), 8000)
    return {"portrait": portrait_path(folder), "voice": voice_path(), "wide": wide, "text": text, "short": short}


def test_a_portrait_and_a_voice_pass_through_the_sandbox_with_the_suffix_they_had_in_process(samples):
    settings = get_settings()
    assert settings.upload_check_sandbox  # the default, and what the tests run
    for kind in ("portrait", "voice"):
        in_process = check_upload(kind, str(samples[kind]), settings.max_image_pixels, voice_seconds(settings))
        assert check_content(kind, samples[kind], settings) == in_process
    assert in_process == ".wav"
    workers = sandbox.shared(Limits.from_settings(settings)).pids()
    assert workers and os.getpid() not in workers


def test_errors_raised_in_the_child_come_back_as_the_same_one_line_errors(samples):
    settings = get_settings()
    with pytest.raises(InputTooLarge) as wide:
        check_content("portrait", samples["wide"], settings)
    assert one_line(wide.value).startswith("the portrait upload is refused: the portrait is 1000x100")
    with pytest.raises(InputError) as text:
        check_content("portrait", samples["text"], settings)
    assert type(text.value) is InputError
    assert one_line(text.value) == "the portrait upload is not an image that can be decoded"
    with pytest.raises(InputError) as short:
        admission.check_voice(samples["short"], settings, "the narrator voice")
    assert one_line(short.value).startswith("the narrator voice lasts 0.50 s, under the minimum of 1 s")


def test_the_sandbox_can_be_turned_off(use_settings, monkeypatch, samples):
    monkeypatch.setattr(uploads, "CHECK", f"{HOOKS}:pid")
    assert check_content("portrait", samples["portrait"], get_settings()) != f".{os.getpid()}"
    use_settings(upload_check_sandbox="false")
    assert check_content("portrait", samples["portrait"], get_settings()) == f".{os.getpid()}"


# ---- crashes and limits ---------------------------------------------------------------------------------------------
def test_a_crashing_decoder_costs_one_child_and_the_next_check_works(hooks_sandbox):
    before = hooks_sandbox.run("the portrait upload", f"{HOOKS}:pid")
    with pytest.raises(CheckAbandoned) as crashed:
        hooks_sandbox.run("the portrait upload", f"{HOOKS}:segfault")
    assert one_line(crashed.value) == (
        "the portrait upload could not be checked within the limits: its decoder process died (SIGSEGV)"
    )
    with pytest.raises(CheckAbandoned, match=r"died \(SIGABRT\)$"):
        hooks_sandbox.run("the voice upload", f"{HOOKS}:abort")
    after = hooks_sandbox.run("the portrait upload", f"{HOOKS}:pid")
    assert after != before and after != f".{os.getpid()}"  # a new worker, not this process


def test_an_allocation_past_the_memory_limit_is_refused_and_the_next_check_works(hooks_sandbox):
    assert hooks_sandbox.run("x", f"{HOOKS}:allocate", 64 * 1024**2) == 64 * 1024**2
    with pytest.raises(CheckAbandoned) as refused:
        hooks_sandbox.run("the voice upload", f"{HOOKS}:allocate", 1024**3)
    assert one_line(refused.value) == (
        "the voice upload could not be checked within the limits: it needed more than 0.75 GiB of memory "
        "(SPINBOT_UPLOAD_CHECK_MEMORY_BYTES)"
    )
    assert hooks_sandbox.run("x", f"{HOOKS}:allocate", 64 * 1024**2) == 64 * 1024**2


def test_a_real_decode_past_the_memory_limit_is_said_as_the_limit(tmp_path):
    """A 40 MP portrait (the largest SPINBOT_MAX_IMAGE_PIXELS takes) peaks near 0.82 GiB in a worker: under a
    0.7 GiB limit Pillow's allocation fails, and that is said as the limit, not as a file that does not decode."""
    big = tmp_path / "40mp.png"
    y, x = np.mgrid[0:5000, 0:8000]
    Image.fromarray(np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)).save(big, compress_level=1)
    box = Sandbox(Limits(700 * 1024**2, seconds=60, cpu_seconds=60, workers=1))
    try:
        with pytest.raises(CheckAbandoned) as refused:
            box.run("the portrait upload", uploads.CHECK, "portrait", str(big), 40_000_000, (1.0, 60.0))
        assert one_line(refused.value) == (
            "the portrait upload could not be checked within the limits: it needed more than 0.684 GiB of memory "
            "(SPINBOT_UPLOAD_CHECK_MEMORY_BYTES)"
        )
    finally:
        box.close()


def test_a_check_past_its_cpu_time_is_ended_by_the_kernel(hooks_sandbox):
    assert hooks_sandbox.run("x", f"{HOOKS}:spin", 0.2) == "spun"  # under the limit: fine, also run after run
    assert hooks_sandbox.run("x", f"{HOOKS}:spin", 0.5) == "spun"
    assert hooks_sandbox.run("x", f"{HOOKS}:spin", 0.5) == "spun"  # each call has its own second, not the worker
    with pytest.raises(CheckAbandoned) as refused:
        hooks_sandbox.run("the portrait upload", f"{HOOKS}:spin", 30)
    assert one_line(refused.value).endswith("it used more than 1 s of CPU (SPINBOT_UPLOAD_CHECK_SECONDS)")
    assert hooks_sandbox.run("x", f"{HOOKS}:spin", 0.1) == "spun"


def test_a_check_past_its_time_is_killed_and_the_next_check_works(hooks_sandbox):
    started = time.monotonic()
    with pytest.raises(CheckAbandoned) as late:
        hooks_sandbox.run("the voice upload", f"{HOOKS}:sleep", 60)
    assert 5 <= time.monotonic() - started < 15
    assert one_line(late.value) == (
        "the voice upload could not be checked within the limits: it took longer than 5 s "
        "(SPINBOT_UPLOAD_CHECK_SECONDS)"
    )
    assert hooks_sandbox.run("x", f"{HOOKS}:sleep", 0) == "slept"


def in_thread(box: Sandbox, target: str, *args: object) -> tuple[threading.Thread, list[object]]:
    """box.run(target, *args) started in a thread; the list gets its value, or the error it raised."""
    out: list[object] = []

    def run() -> None:
        try:
            out.append(box.run("the voice upload", target, *args))
        except Exception as err:  # noqa: BLE001 - the test reads it
            out.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def test_a_crash_or_a_timeout_ends_its_own_worker_only():
    """Each call has a worker of its own: another call's crash, or its time limit, ends that worker alone, and a
    check then in flight goes on in its own (in one shared pool, the time limit killed every worker, and a check
    then in flight began again in a new pool)."""
    box = Sandbox(Limits(768 * 1024**2, seconds=5, cpu_seconds=5, workers=2), preload=(HOOKS,))
    try:
        box.warm()
        started = set(box.pids())
        innocent, out = in_thread(box, f"{HOOKS}:nap", 1.5)
        time.sleep(0.5)
        with pytest.raises(CheckAbandoned, match="SIGSEGV"):
            box.run("the portrait upload", f"{HOOKS}:segfault")
        innocent.join(20)
        assert out and out[0] in started and box.pids() == out  # it slept in the worker it began in, which lives

        (survivor,) = out
        hog, late = in_thread(box, f"{HOOKS}:sleep", 60)  # in the survivor, ended at 5 s
        time.sleep(3)
        innocent, out = in_thread(box, f"{HOOKS}:nap", 3)  # in a new worker, in flight at the hog's 5 s
        time.sleep(0.5)
        (fresh,) = set(box.pids()) - {survivor}
        hog.join(20)
        innocent.join(20)
        assert out == [fresh] and box.pids() == [fresh]
        assert [type(err) for err in late] == [CheckAbandoned] and "longer than 5 s" in str(late[0])
    finally:
        box.close()


def test_a_check_runs_in_its_callers_folder(hooks_sandbox, tmp_path, monkeypatch):
    """A relative path the CLI's user typed names the file they meant, whatever folder the worker started in."""
    hooks_sandbox.run("x", f"{HOOKS}:pid")  # an idle worker, started in the tests' folder
    monkeypatch.chdir(tmp_path)
    assert hooks_sandbox.run("x", f"{HOOKS}:cwd") == str(tmp_path)


def test_ctrl_c_at_a_terminal_is_left_to_the_parent(hooks_sandbox):
    """Ctrl-C reaches the whole process group, workers too: `spinbot run` ends its job and exits, and shuts its
    workers down; a worker ended by the signal itself printed a KeyboardInterrupt traceback under the CLI's lines."""
    replaced, worker = hooks_sandbox.replaced, hooks_sandbox.run("x", f"{HOOKS}:pid")
    os.kill(int(worker[1:]), signal.SIGINT)
    time.sleep(0.5)
    assert hooks_sandbox.run("x", f"{HOOKS}:pid") == worker  # the same one, the last used: alive
    assert hooks_sandbox.replaced == replaced


PARENT = f"""
import time
from spinbot.media.sandbox import Limits, Sandbox
box = Sandbox(Limits(1024**3, seconds=10, cpu_seconds=10, workers=2), preload=({HOOKS!r},))
box.warm()
box.run("x", "{HOOKS}:pid")
print(*box.pids(), flush=True)
time.sleep(60)
"""


def test_workers_end_with_their_parent_even_a_killed_one():
    """A worker reads the end of its pipe when its parent dies: a `spinbot worker` or API killed (OOM, kill -9)
    left every worker of its pool running, about 185 MB each, for good."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    workers = [int(pid) for pid in parent.stdout.readline().split()]  # type: ignore[union-attr]
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while (alive := [pid for pid in workers if _running(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in alive:
        os.kill(pid, signal.SIGKILL)  # not left behind by a failing test either
    assert len(workers) == 2 and alive == []


def _running(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()  # a zombie has ended
    except FileNotFoundError:
        return False


def test_a_bug_in_a_check_is_no_input_error_and_no_traceback_crosses(hooks_sandbox):
    with pytest.raises(RuntimeError) as bug:
        hooks_sandbox.run("x", f"{HOOKS}:broken")
    assert one_line(bug.value) == f"the check {HOOKS}:broken failed in its worker: KeyError: 'a bug in a check'"
    with pytest.raises(InputTooLarge, match="a test's limit"):
        hooks_sandbox.run("x", f"{HOOKS}:too_large")


def test_with_every_checker_busy_for_the_whole_time_a_check_is_unavailable():
    box = Sandbox(Limits(1024**3, seconds=0.2, cpu_seconds=1, workers=1), preload=(HOOKS,))
    assert box._idle.get(timeout=1) is None  # the one checker taken (not started yet)
    with pytest.raises(CheckUnavailable, match=r"every checker was busy for 0\.2 s; try again"):
        box.run("the voice upload", f"{HOOKS}:pid")
    box.close()


# ---- through the API ------------------------------------------------------------------------------------------------
def post_upload(client, kind: str, path: Path):
    with open(path, "rb") as f:
        return client.post("/v1/uploads", data={"kind": kind}, files={"file": (path.name, f)}, headers=AUTH)


def test_an_upload_whose_check_crashes_is_a_400_and_the_server_keeps_serving(keyed_client, monkeypatch, samples):
    monkeypatch.setattr(uploads, "CHECK", f"{HOOKS}:segfault")
    answer = post_upload(keyed_client, "portrait", samples["portrait"])
    assert answer.status_code == 400
    assert answer.json() == {
        "error": "the portrait upload could not be checked within the limits: its decoder process died (SIGSEGV)"
    }
    assert keyed_client.get("/healthz").status_code == 200
    monkeypatch.undo()
    answer = post_upload(keyed_client, "portrait", samples["portrait"])
    assert answer.status_code == 201, answer.text


def test_a_stored_voice_is_decoded_in_the_sandbox_at_submission(keyed_client, monkeypatch, samples):
    ids = {kind: post_upload(keyed_client, kind, samples[kind]).json()["id"] for kind in ("portrait", "voice")}
    monkeypatch.setattr(admission, "VOICE_CHECK", f"{HOOKS}:segfault")
    body = {"image": ids["portrait"], "voice": ids["voice"], "params": {"script": {"text": "Hello there."}}}
    answer = keyed_client.post("/v1/jobs", json=body, headers=AUTH)
    assert answer.status_code == 400
    assert answer.json() == {
        "error": "the narrator voice could not be checked within the limits: its decoder process died (SIGSEGV)"
    }
    assert keyed_client.get("/v1/jobs", headers=AUTH).json()["items"] == []  # nothing stored


def test_the_memory_limit_is_on_top_of_what_the_interpreter_starts_with(tmp_path, monkeypatch, samples):
    # a sitecustomize that imported torch (about 4 GiB of CUDA libraries mapped) made every worker fail its decoders'
    # imports under the 2 GiB limit on a GPU machine: "could not be checked: its worker process exited"
    (tmp_path / "sitecustomize.py").write_text(
        "import mmap\nRESERVED = mmap.mmap(-1, 3 * 1024**3, prot=0)  # PROT_NONE: address space only\n"
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    box = Sandbox(Limits(1024**3, seconds=60, cpu_seconds=60, workers=1))
    settings = get_settings()
    args = ("portrait", str(samples["portrait"]), settings.max_image_pixels, voice_seconds(settings))
    try:
        assert box.run("the portrait", "spinbot.media.upload_check:check_upload", *args) == ".png"
    finally:
        box.close()


def test_a_worker_that_cannot_start_says_why_in_one_line():
    box = Sandbox(Limits(1024**3, seconds=30, cpu_seconds=30, workers=1), preload=("spinbot.no_such_module",))
    try:
        for _ in range(2):  # the next call starts a new worker, which says it again
            with pytest.raises(CheckUnavailable) as caught:
                box.run("the portrait", "spinbot.media.upload_check:check_upload", "x.png")
            assert str(caught.value) == (
                "the portrait could not be checked: its checker process could not start (ModuleNotFoundError: No "
                "module named 'spinbot.no_such_module'; its imports may take 1 GiB of address space past its start, "
                "SPINBOT_UPLOAD_CHECK_MEMORY_BYTES)"
            )
    finally:
        box.close()
