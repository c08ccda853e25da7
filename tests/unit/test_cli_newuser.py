"""What a new user runs into first: errors that are one line (never a traceback), however odd the path or the setting
that caused them, and commands that fail before any work when the machine cannot do what was asked."""

from __future__ import annotations

import pytest

from spinbot.samples import voice_path
from tests.support.cli import run_cli_result


# ---- brackets in what an error line quotes ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["a[/]b.png", "my[bold]face.png", "take[1].png"])
def test_a_path_with_brackets_is_quoted_as_it_is(spinbot_env, tmp_path, name):
    # rich read "[/]" as markup and failed the print with a traceback; "[bold]" vanished from the path shown
    code, lines, exception = run_cli_result("run", "--prompt", "hi", "--image", name, "--voice", str(voice_path()))
    assert not isinstance(exception, Exception) or isinstance(exception, SystemExit), exception
    assert code == 2 and lines == [f"error: image not found: {name}"]


def test_the_gpu_extra_hint_keeps_its_brackets(spinbot_env, monkeypatch):
    import spinbot.models.selection as selection

    def no_torch(settings, tasks):
        raise ModuleNotFoundError("No module named 'torch'")

    monkeypatch.setattr(selection, "select_tasks", no_torch)
    code, lines, _ = run_cli_result("models", "list", "--task", "f5_to_tts")
    assert code == 2 and lines == [
        "error: the native backends' model files need the gpu extra (pip install -e '.[gpu]'): No module named 'torch'"
    ]


def test_an_existing_out_with_brackets_is_named_as_it_is(spinbot_env, tmp_path):
    out = tmp_path / "take[bold]1.mp4"
    out.write_bytes(b"old")
    code, lines, _ = run_cli_result(
        "run", "--prompt", "hi", "--image", str(tmp_path / "none.png"), "--voice", str(voice_path()), "--out", str(out)
    )
    assert code == 2 and lines[0] == f"--out {out} exists: the video will replace it"


# ---- a native backend on the CPU install ---------------------------------------------------------------------------
@pytest.fixture
def without_torch(monkeypatch):
    """`make demo`'s install: no gpu extra, so the native backends' layouts (which import torch) cannot load."""
    import spinbot.models.layouts as layouts

    def no_torch(task: str):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    monkeypatch.setattr(layouts, "layout_for", no_torch)


@pytest.mark.parametrize("backend, node", [("tts_backend", "f5_to_tts"), ("talk_backend", "infinite_talk")])
def test_a_native_backend_without_the_gpu_extra_is_one_line_at_submission(
    spinbot_env, use_settings, without_torch, tmp_path, backend, node
):
    # it was a ModuleNotFoundError traceback from the models-folder check
    from spinbot.samples import portrait_path

    use_settings(**{backend: "native", "models_dir": tmp_path / "models"})
    code, lines, exception = run_cli_result(
        "run", "--prompt", "hi", "--ref-text", "hello", "--image", str(portrait_path(tmp_path)),
        "--voice", str(voice_path()),
    )  # fmt: skip
    assert code == 2, exception
    assert lines == [
        f"error: {node}: the native backend needs the gpu extra (pip install -e '.[gpu]'): No module named 'torch'"
    ]
    assert not (spinbot_env / "jobs").exists() or not any((spinbot_env / "jobs").iterdir())


def test_worker_gpus_without_the_gpu_extra_is_one_line(spinbot_env, monkeypatch):
    # `import torch` in the GPU check was a ModuleNotFoundError traceback
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` fails as on the CPU install
    code, lines, exception = run_cli_result("worker", "--gpus", "0")
    assert code == 2, exception
    assert len(lines) == 1 and lines[0].startswith(
        "error: --gpus (SPINBOT_WORKER_GPUS, SPINBOT_WORKER_CPU_RANKS) needs the gpu extra (pip install -e '.[gpu]'): "
    ), lines


# ---- settings a new user gets wrong -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, value, expected",
    [
        # serve and worker passed it to logging: a ValueError traceback ("Unknown level: 'LOUD'")
        (
            "SPINBOT_LOG_LEVEL",
            "loud",
            "error: SPINBOT_LOG_LEVEL='loud' refused: "
            "Input should be 'DEBUG', 'INFO', 'WARNING', 'ERROR' or 'CRITICAL'",
        ),
        # pydantic-settings' own SettingsError (not JSON) was a traceback
        (
            "SPINBOT_QUEUE_ROUTES",
            "upscale_video=cpu",
            "error: SPINBOT_QUEUE_ROUTES='upscale_video=cpu' refused: not JSON, "
            'e.g. SPINBOT_QUEUE_ROUTES=\'{"upscale_video": "cpu"}\'',
        ),
        # the variable was named SPINBOT_QUEUE_ROUTES_A, which does not exist
        (
            "SPINBOT_QUEUE_ROUTES",
            '{"a": 1}',
            "error: SPINBOT_QUEUE_ROUTES='{\"a\": 1}' refused: a: Input should be a valid string (got 1)",
        ),
    ],
)
def test_a_refused_setting_is_one_line_naming_it(spinbot_env, use_settings, monkeypatch, name, value, expected):
    monkeypatch.setenv(name, value)
    use_settings()
    for command in (["pipelines", "list"], ["serve", "--port", "1"], ["worker"]):
        code, lines, exception = run_cli_result(*command)  # as the `spinbot` console script runs: spinbot.cli:app
        assert (code, lines) == (2, [expected]), (command, exception)


def test_serve_and_worker_refuse_any_bad_setting_in_one_line(spinbot_env, use_settings):
    # the console script is spinbot.cli:app, which let serve's and worker's SettingsError out as a traceback (only
    # `python -m spinbot` caught it)
    use_settings(talk_backend="gpu")
    expected = ["error: SPINBOT_TALK_BACKEND='gpu' refused: Input should be 'lite' or 'native'"]
    for command in (["serve", "--port", "1"], ["worker"]):
        code, lines, exception = run_cli_result(*command)
        assert (code, lines) == (2, expected), (command, exception)


# ---- input files that are there but cannot be used ------------------------------------------------------------------
@pytest.mark.parametrize("option", ["--image", "--voice"])
def test_a_folder_given_as_an_input_file_is_called_a_folder(spinbot_env, tmp_path, option):
    # it was "image not found: DIR": the user sees the folder is there
    from spinbot.samples import portrait_path

    files = {"--image": str(portrait_path(tmp_path)), "--voice": str(voice_path()), option: str(tmp_path)}
    code, lines, _ = run_cli_result("run", "--prompt", "hi", *[part for pair in files.items() for part in pair])
    what = "image" if option == "--image" else "audio"
    assert code == 2 and lines == [f"error: {what} is a folder, not a file: {tmp_path}"]


@pytest.mark.parametrize("option", ["--image", "--voice"])
def test_an_unreadable_input_file_says_why(spinbot_env, tmp_path, monkeypatch, use_settings, option):
    # it was "not a readable image/audio file": a permission problem read as a broken file (chmod 000 does not stop
    # root, who runs these tests here, so the refusal is the operating system's answer, stood in for in this
    # process: the checks at submission run here, not in the sandbox's children, which the stand-in cannot reach)
    use_settings(upload_check_sandbox="false")
    import builtins
    import shutil

    from spinbot.samples import portrait_path

    image, voice = portrait_path(tmp_path), shutil.copy(voice_path(), tmp_path / "me.wav")
    locked = image if option == "--image" else voice
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):
        if str(file) == str(locked):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    code, lines, _ = run_cli_result("run", "--prompt", "hi", "--image", str(image), "--voice", str(voice))
    what = "image" if option == "--image" else "audio"
    assert code == 2 and lines == [f"error: cannot read the {what} file {locked} (Permission denied)"]


def test_a_misspelled_setting_name_is_a_warning_not_a_silent_default(spinbot_env, monkeypatch):
    # SPINBOT_TALK_BACKEDN=native left the lite backend in force without a word
    monkeypatch.setenv("SPINBOT_TALK_BACKEDN", "native")
    monkeypatch.setenv("SPINBOT_SOMETHING_ELSE", "1")  # not close to any setting: no line
    monkeypatch.setenv("SPINBOT_TEST_REDIS_URL", "redis://127.0.0.1:6379")  # the tests' own variables
    code, lines, _ = run_cli_result("pipelines", "list")
    assert code == 0
    assert lines[0] == "warning: SPINBOT_TALK_BACKEDN is not a setting (ignored); did you mean SPINBOT_TALK_BACKEND?"
    assert len(lines) == 2 and lines[1].startswith("f5tts_infinitetalk")


@pytest.mark.parametrize(
    "device, expected",
    [
        (
            "cuda",
            "error: f5_to_tts native: device 'cuda' asked for but torch sees no CUDA GPU; "
            "set f5_to_tts.device=cpu (slow) or run on a GPU worker",
        ),
        (
            "gpu",
            "error: f5_to_tts: device 'gpu' is not a device this backend runs on (cpu, cuda, cuda:1, ...); "
            "this machine has: cpu",
        ),
    ],
)
def test_native_tts_on_a_device_this_machine_lacks_is_refused_at_submission(
    spinbot_env, use_settings, monkeypatch, tmp_path, device, expected
):
    # it was accepted and failed at f5_to_tts, after the script node (an LLM call of up to SPINBOT_OLLAMA_TIMEOUT);
    # and before the missing model files, so nobody pulls 54 GB for a machine that cannot run them
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert_refused_before_any_job(spinbot_env, use_settings, tmp_path, device, expected)


def test_the_cli_logs_plain_lines_for_a_person(spinbot_env, capsys):
    # `spinbot run` without Ollama showed a JSON object ({"ts": ..., "level": "warning", "logger": ...}) between
    # its progress lines
    import logging

    from spinbot.cli_checks import open_runner

    open_runner()
    logging.getLogger("spinbot.control.script").warning(
        "script: Ollama failed, using the fallback text", extra={"reason": "ConnectionError: refused\nsecond line"}
    )
    assert capsys.readouterr().err.splitlines() == [
        "warning: script: Ollama failed, using the fallback text (reason: ConnectionError: refused second line)"
    ]


@pytest.mark.parametrize(
    "device, expected",
    [
        ("cuda:7", "error: f5_to_tts: device 'cuda:7' is not on this machine (1 CUDA GPU(s)); it has: cpu, cuda, "
         "cuda:0"),
        ("meta", "error: f5_to_tts: device 'meta' is not a device this backend runs on (cpu, cuda, cuda:1, ...); "
         "this machine has: cpu, cuda, cuda:0"),
        ("mps", "error: f5_to_tts: device 'mps' is not a device this backend runs on (cpu, cuda, cuda:1, ...); "
         "this machine has: cpu, cuda, cuda:0"),
        ("cuda:-1", "error: f5_to_tts: device 'cuda:-1' is not a device this backend runs on (cpu, cuda, cuda:1, "
         "...); this machine has: cpu, cuda, cuda:0"),
    ],
)  # fmt: skip
def test_native_tts_on_a_gpu_number_or_device_kind_this_machine_lacks_is_refused_at_submission(
    spinbot_env, use_settings, monkeypatch, tmp_path, device, expected
):
    # torch.device accepts each of these, so admission let them through to fail at f5_to_tts after the script node
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a machine of one GPU, wherever this runs
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert_refused_before_any_job(spinbot_env, use_settings, tmp_path, device, expected)


def assert_refused_before_any_job(spinbot_env, use_settings, tmp_path, device: str, expected: str) -> None:
    """`spinbot run` with the native TTS on `device`: exit 2 with `expected` as its one line, and no job stored."""
    from spinbot.samples import portrait_path

    use_settings(tts_backend="native", models_dir=tmp_path / "models")
    code, lines, exception = run_cli_result(
        "run", "--prompt", "hi", "--ref-text", "hello", "--image", str(portrait_path(tmp_path)),
        "--voice", str(voice_path()), "--set", f"f5_to_tts.device={device}",
    )  # fmt: skip
    assert (code, lines) == (2, [expected]), exception
    assert not (spinbot_env / "jobs").exists() or not any((spinbot_env / "jobs").iterdir())
