"""Stumbles a new user met on a first run, each one line and a non-zero exit before any work starts (or noise that
is gone): a native backend that would run for days on the CPU, an --out that is no video file, progress lines in a
log, the resume hint, unknown worker queues, third-party noise from the native backends' imports."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from spinbot.samples import portrait_path, voice_path
from tests.support.api_client import local_client
from tests.support.cli import run_cli_result


# ---- native infinite_talk without a GPU ---------------------------------------------------------------------------
def write_talk_files(models, transformer_bytes: int) -> None:
    """Every file native infinite_talk needs, the transformer at the size given (sparse: no disk used)."""
    from spinbot.models.layouts import layout_for
    from spinbot.tasks.talk import InfiniteTalkParams

    for f in layout_for("infinite_talk").files(InfiniteTalkParams(), models):
        f.path.parent.mkdir(parents=True, exist_ok=True)
        write_sparse_safetensors(f.path, transformer_bytes if f.param == "wan_video_model" else 64)


def write_sparse_safetensors(path, size: int) -> None:
    """A readable safetensors file of about `size` bytes: one uint8 tensor covering the rest (sparse: no disk used),
    so the header check at submission passes and only the size decides."""
    header = json.dumps({"w": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}}).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(header)) + header)
        out.truncate(8 + len(header) + size)


def test_native_infinite_talk_with_full_size_files_and_no_gpu_is_refused_at_submission(
    spinbot_env, use_settings, tmp_path, monkeypatch
):
    # it ran the 14B model on the CPU (days), quietly
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    models = tmp_path / "models"
    write_talk_files(models, 32 * 10**9)
    use_settings(talk_backend="native", models_dir=models)
    code, lines, exception = run_cli_result(
        "run", "--prompt", "hi", "--image", str(portrait_path(tmp_path)), "--voice", str(voice_path())
    )
    assert code == 2, exception
    assert lines == [
        "error: infinite_talk: the native infinite_talk backend needs a CUDA GPU; none is visible (its 32 GB "
        "transformer would run on the CPU for days; use SPINBOT_TALK_BACKEND=lite on a CPU machine, or "
        "SPINBOT_TALK_ALLOW_CPU=true to run it anyway)"
    ]
    assert not (spinbot_env / "jobs").exists() or not any((spinbot_env / "jobs").iterdir())


@pytest.mark.parametrize("transformer_bytes, allow", [(16 * 10**6, False), (32 * 10**9, True)])
def test_tiny_checkpoints_or_the_opt_in_pass_the_cpu_check(
    spinbot_env, use_settings, tmp_path, monkeypatch, transformer_bytes, allow
):
    torch = pytest.importorskip("torch")
    from spinbot.control.admission import Admission
    from spinbot.pipelines.spec import load_pipelines
    from spinbot.settings import get_settings
    from spinbot.storage.local import LocalStore
    from spinbot.tasks.catalog import load_task

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    models = tmp_path / "models"
    write_talk_files(models, transformer_bytes)
    use_settings(talk_backend="native", models_dir=models, talk_allow_cpu=allow)
    spec = load_pipelines()["f5tts_infinitetalk"]
    nodes = {n.id: load_task(n.task).params_model() for n in spec.nodes}
    Admission(get_settings(), LocalStore(tmp_path / "store")).check_model_files(spec, nodes)  # no error


# ---- --out ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, example", [("x.txt", "x.mp4"), ("talk", "talk.mp4")])
def test_an_out_that_is_no_mp4_is_refused_before_any_work(spinbot_env, tmp_path, monkeypatch, name, example):
    # an mp4 was written under the name x.txt after the whole render
    monkeypatch.chdir(tmp_path)
    code, lines, exception = run_cli_result(
        "run", "--prompt", "hi", "--image", str(portrait_path(tmp_path)), "--voice", str(voice_path()), "--out", name
    )
    assert code == 2, exception
    assert lines == [
        f"error: --out {name}: the video is an .mp4 file; give a name ending in .mp4 (e.g. {example}) "
        "or a folder that exists"
    ]
    assert not (spinbot_env / "jobs").exists() or not any((spinbot_env / "jobs").iterdir())


def test_an_mp4_out_in_capitals_or_a_folder_is_taken(tmp_path):
    from spinbot.cli_checks import check_out

    assert check_out(tmp_path / "TALK.MP4", {}) is False
    assert check_out(tmp_path, {}) is False


def test_a_refused_run_leaves_no_folder_its_out_would_have_made(spinbot_env, tmp_path):
    # the --out check made new/deeper/ for the video, and it stayed when the run was refused a moment later
    out, image = tmp_path / "new" / "deeper" / "v.mp4", tmp_path / "none.png"
    code, lines, exception = run_cli_result(
        "run", "--prompt", "hi", "--image", str(image), "--voice", str(voice_path()), "--out", str(out)
    )
    assert (code, lines) == (2, [f"error: image not found: {image}"]), exception
    assert not (tmp_path / "new").exists()


def test_an_out_in_folders_not_there_yet_gets_them_with_the_video(tmp_path, capsys):
    from types import SimpleNamespace

    from spinbot.cli_checks import check_out
    from spinbot.cli_progress import deliver

    out = tmp_path / "new" / "deeper" / "v.mp4"
    assert check_out(out, {}) is False and not (tmp_path / "new").exists()
    store = SimpleNamespace(download=lambda key, dest: dest.write_bytes(b"the video"))
    runner = SimpleNamespace(final_artifact=lambda job: "jobs/j1/upscale_video/video.mp4", artifacts=store)
    deliver(runner, SimpleNamespace(id="j1", status="succeeded"), out)
    assert out.read_bytes() == b"the video" and capsys.readouterr().out == f"{out}\n"


def test_an_out_under_a_file_is_one_line(tmp_path):
    from spinbot.cli_checks import check_out
    from spinbot.errors import InputError

    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError) as refused:
        check_out(tmp_path / "afile" / "new" / "v.mp4", {})
    assert str(refused.value) == (
        f"--out {tmp_path / 'afile' / 'new' / 'v.mp4'}: cannot make its folder: {tmp_path / 'afile'} is not a folder"
    )


# root keeps its permission checks once it drops the capabilities that bypass them: a user's view of chmod 555
AS_A_USER = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]


def test_an_unwritable_out_is_one_line_before_any_job(spinbot_env, tmp_path):
    import os
    import subprocess
    import sys

    from tests.support.cli import stored_job_files

    # setpriv is util-linux's, which Debian marks essential: no skip where it is missing, the test fails there
    as_a_user = AS_A_USER if os.geteuid() == 0 else []
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    image = portrait_path(tmp_path)
    for out in (locked / "v.mp4", locked / "new" / "v.mp4", locked):
        result = subprocess.run(
            [*as_a_user, sys.executable, "-m", "spinbot", "run", "--prompt", "hi", "--image", str(image),
             "--voice", str(voice_path()), "--out", str(out)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 2, result.stderr[-2000:]
        assert result.stderr.splitlines() == [f"error: --out {out}: cannot write in {locked} (Permission denied)"]
    assert stored_job_files(spinbot_env) == [] and not (locked / "new").exists()


# ---- progress in a log file ---------------------------------------------------------------------------------------
def test_a_failed_job_in_a_log_file_keeps_node_names_whole(spinbot_env, tmp_path, monkeypatch):
    # rich's final table, fitted to 80 columns where stderr is no terminal, cut names to `infinite_t…`
    from spinbot.control import dispatch
    from spinbot.errors import SpinBotError

    def boom(request, *args, **kwargs):
        if request.node_id == "infinite_talk":
            raise SpinBotError("infinite_talk: " + "a long reason why the render stopped " * 3)
        return real(request, *args, **kwargs)

    real = dispatch.execute_task
    monkeypatch.setattr(dispatch, "execute_task", boom)
    code, lines, exception = run_cli_result(
        "run", "--image", str(portrait_path(tmp_path)), "--voice", str(voice_path()),
        "--set", "script.text=Ever tried.", "--out", str(tmp_path / "o.mp4"),
    )  # fmt: skip
    assert code == 1, exception
    assert not any("…" in line for line in lines), lines
    assert any(line.startswith("infinite_talk  failed") for line in lines), lines
    assert lines[-1].startswith("error: job ") and "failed: infinite_talk: a long reason" in lines[-1]


def test_a_new_attempt_with_no_message_yet_has_no_dangling_colon(capsys):
    # `queued 0%  attempt 2:` on resume
    from types import SimpleNamespace

    from rich.progress import Progress

    from spinbot import cli_progress
    from spinbot.state.events import Event

    talk = SimpleNamespace(node_id="infinite_talk", status="failed", message=None, seconds=None, attempts=1)
    bars = cli_progress.NodeBars(
        Progress(), runner=None, job=SimpleNamespace(id="j", status="queued", progress=0.0, nodes=[talk])
    )
    bars.plain = cli_progress.PlainLines()
    bars.on_event(Event("j", "node", "queued", "infinite_talk", attempt=2))
    bars.on_event(Event("j", "node", "running", "infinite_talk", progress=0.1, message="window 1/4", attempt=2))
    assert capsys.readouterr().err.splitlines() == [
        "infinite_talk  queued       0%  attempt 2",
        "infinite_talk  running     10%  attempt 2: window 1/4",
    ]


# ---- the resume hint ------------------------------------------------------------------------------------------------
def test_the_resume_hint_is_the_command_as_the_user_ran_it(tmp_path, monkeypatch):
    # it said `spinbot run --resume ...` to a user who ran .venv/bin/spinbot (not on PATH) or python -m spinbot
    import sys

    from spinbot.cli_progress import resume_command

    script = tmp_path / "venv" / "bin" / "spinbot"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setattr(sys, "argv", ["venv/bin/spinbot", "run"])
    assert resume_command("J", None) == "venv/bin/spinbot run --resume J"
    monkeypatch.setenv("PATH", str(script.parent))  # the venv activated: `spinbot` finds the same script
    monkeypatch.setattr(sys, "argv", [str(script), "run"])
    assert resume_command("J", tmp_path / "my out.mp4") == f"spinbot run --resume J --out '{tmp_path}/my out.mp4'"
    main = str(Path(__import__("spinbot").__file__).parent / "__main__.py")
    monkeypatch.setattr(sys, "argv", [main, "run"])
    monkeypatch.setattr(sys, "orig_argv", [".venv/bin/python", "-m", "spinbot", "run"])
    assert resume_command("J", None) == ".venv/bin/python -m spinbot run --resume J"


# ---- worker --queues ------------------------------------------------------------------------------------------------
def test_a_worker_on_a_queue_no_task_is_routed_to_here_warns_and_serves_it(spinbot_env, use_settings, monkeypatch):
    # `spinbot worker --queues nope` started and served nothing, silently; the routes that count are those of the
    # process that submits the jobs, so the worker warns instead of refusing (tests/integration/test_queue.py routes
    # to a queue of its own)
    import spinbot.worker.main as worker_main

    served = []
    monkeypatch.setattr(worker_main, "run_worker", lambda queues, settings: served.append(queues))
    use_settings(redis_url="redis://127.0.0.1:9/0")
    code, lines, exception = run_cli_result("worker", "--queues", "gpu,nope")
    assert code == 0, exception
    assert served == [["gpu", "nope"]]
    warnings = [json.loads(line) for line in lines if "no task is routed to this queue" in line]  # a worker logs JSON
    assert [(w["level"], w["option"], w["queue"], w["known"]) for w in warnings] == [
        ("warning", "--queues", "nope", "cpu, gpu")
    ]
    code, lines, _ = run_cli_result("worker", "--queues", " , ")
    assert (code, lines) == (2, ["error: --queues: no queue named (known: cpu, gpu)"])


def test_queues_that_the_routes_name_are_served(spinbot_env, use_settings):
    from spinbot.cli_checks import worker_queues
    from spinbot.settings import get_settings

    use_settings(queue_routes='{"upscale_video": "big-gpu"}', queue_default="light")
    assert worker_queues("big-gpu, gpu,light,gpu", get_settings()) == ["big-gpu", "gpu", "light"]
    assert worker_queues(None, get_settings()) == ["gpu", "cpu"]  # SPINBOT_WORKER_QUEUES' default


# ---- third-party noise ----------------------------------------------------------------------------------------------
def test_the_native_backends_imports_print_no_third_party_noise_but_ours_still_shows():
    # `spinbot models list/check` printed torch's jit.script FutureWarning and bitsandbytes' "pip install kernels" line
    import subprocess
    import sys

    from tests.conftest import require_module

    for name in ("x_transformers", "spandrel_extra_arches", "diffusers", "bitsandbytes"):
        require_module(name)
    code = (
        "import logging, warnings; logging.basicConfig()\n"
        "import spinbot.backends\n"
        "import x_transformers, spandrel_extra_arches.architectures.CodeFormer, diffusers.quantizers.bitsandbytes\n"
        "warnings.warn('ours', FutureWarning)\n"
        "logging.getLogger('spinbot.x').warning('ours too')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "jit.script" not in result.stderr and "gemm_4bit" not in result.stderr, result.stderr
    assert "FutureWarning: ours" in result.stderr and "ours too" in result.stderr


# ---- the web page -------------------------------------------------------------------------------------------------
def test_the_page_names_its_icon_so_the_browser_asks_for_no_favicon(spinbot_env):
    # every page load asked for /favicon.ico and got a 404
    import re

    from spinbot.api.app import create_app

    with local_client(create_app()) as client:
        r = client.get("/")
    assert r.status_code == 200
    icons = re.findall(r'<link rel="icon" href="([^"]+)"', r.text)
    assert icons == ["data:,"]  # an empty icon, which the page's CSP allows (img-src data:)
    assert "img-src 'self' blob: data:" in r.headers["content-security-policy"]


def test_a_checkpoint_larger_than_the_memory_reads_its_header(tmp_path):
    # safetensors' pt framework mapped the whole file copy-on-write: "unable to mmap 32000000088 bytes ... Cannot
    # allocate memory" for the 14B checkpoint on a 24 GB machine, so `models check` and submission refused it
    import os

    from spinbot.models.headers import read_header

    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    path = tmp_path / "big.safetensors"
    write_sparse_safetensors(path, max(32 * 10**9, 2 * ram))
    assert list(read_header(path)) == ["w"]
