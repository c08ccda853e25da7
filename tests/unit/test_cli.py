from pathlib import Path

import pytest
from typer.testing import CliRunner

from spinbot.cli import app
from spinbot.samples import portrait_path, voice_path


@pytest.fixture
def inputs(tmp_path: Path, spinbot_env) -> dict[str, Path]:
    text = tmp_path / "notes.txt"
    text.write_text("just some words, not media")
    fake_png = tmp_path / "fake.png"
    fake_png.write_text("not really a png")
    return {"image": portrait_path(tmp_path), "voice": voice_path(), "text": text, "fake_png": fake_png}


def run_cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    lines = [line for line in result.output.splitlines() if line.strip()]
    return result.exit_code, lines


def stored_files(data_dir: Path) -> list[Path]:
    jobs = data_dir / "jobs"
    return [p for p in jobs.rglob("*") if p.is_file()] if jobs.exists() else []


@pytest.mark.parametrize(
    "override, expected",
    [
        ({"image": "missing.png"}, "image not found"),
        ({"image": "text"}, "not a readable image"),
        ({"image": "fake_png"}, "not a readable image"),
        ({"voice": "text"}, "not a readable audio file"),
        ({"voice": "missing.wav"}, "audio not found"),
        ({"set": "infinite_talk.fsp=30"}, "infinite_talk.fsp: unknown param"),
        ({"set": "infinite_talk.fps=fast"}, "infinite_talk.fps: Input should be a valid integer"),
        ({"set": "nonode.x=1"}, "nonode: no such node"),
        ({"set": "fps=30"}, "--set expects NODE.PARAM=VALUE"),
        ({"pipeline": "nope"}, "unknown pipeline 'nope'"),
    ],
)
def test_bad_input_exits_non_zero_with_one_clear_line_and_writes_nothing(inputs, spinbot_env, override, expected):
    paths = {k: str(v) for k, v in inputs.items()}
    image = paths.get(override.get("image"), override.get("image")) or paths["image"]
    voice = paths.get(override.get("voice"), override.get("voice")) or paths["voice"]
    args = ["run", "--prompt", "hello", "--image", image, "--voice", voice]
    if "set" in override:
        args += ["--set", override["set"]]
    if "pipeline" in override:
        args += ["--pipeline", override["pipeline"]]
    code, lines = run_cli(*args)
    assert code != 0
    assert len(lines) == 1, lines
    assert lines[0].startswith("error:") and expected in lines[0]
    assert stored_files(spinbot_env) == []


def test_missing_required_options_are_named(spinbot_env):
    code, lines = run_cli("run", "--prompt", "hello")
    assert code != 0 and lines == ["error: missing --image, --voice (or use --resume JOB_ID)"]


def test_resume_of_unknown_job_is_a_clear_error(spinbot_env):
    code, lines = run_cli("run", "--resume", "0" * 32)
    assert code != 0 and lines == [f"error: job '{'0' * 32}' not found"]


def test_serve_refuses_a_public_address_without_api_keys(spinbot_env, monkeypatch):
    monkeypatch.delenv("SPINBOT_API_KEYS", raising=False)
    code, lines = run_cli("serve", "--host", "0.0.0.0", "--port", "1")
    assert code != 0 and lines == ["error: refusing to serve on 0.0.0.0 without API keys: set SPINBOT_API_KEYS "
                                   "(comma-separated)"]
