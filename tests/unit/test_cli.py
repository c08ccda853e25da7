from pathlib import Path

import pytest

from spinbot.samples import portrait_path, voice_path
from tests.support.cli import made_database, run_cli, stored_job_files


@pytest.fixture
def inputs(tmp_path: Path, spinbot_env) -> dict[str, Path]:
    text = tmp_path / "notes.txt"
    text.write_text("just some words, not media")
    fake_png = tmp_path / "fake.png"
    fake_png.write_text("not really a png")
    return {"image": portrait_path(tmp_path), "voice": voice_path(), "text": text, "fake_png": fake_png}


def run_with_inputs(inputs: dict[str, Path], *args: str) -> tuple[int, list[str]]:
    """`spinbot run --prompt hello` with the fixture's portrait and voice, then args."""
    return run_cli("run", "--prompt", "hello", "--image", str(inputs["image"]), "--voice", str(inputs["voice"]), *args)


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
    assert stored_job_files(spinbot_env) == []


def test_missing_required_options_are_named(spinbot_env):
    code, lines = run_cli("run", "--prompt", "hello")
    assert code != 0 and lines == ["error: missing --image, --voice (or use --resume JOB_ID)"]


def test_a_missing_or_empty_prompt_names_the_own_script_alternative(spinbot_env, tmp_path):
    image = portrait_path(tmp_path)
    for prompt in ((), ("--prompt", "")):
        code, lines = run_cli("run", *prompt, "--image", str(image), "--voice", str(voice_path()))
        assert code == 2 and lines == [
            "error: missing --prompt or --set script.text=YOUR WORDS (or use --resume JOB_ID)"
        ], lines


def test_resume_of_unknown_job_is_a_clear_error(spinbot_env):
    made_database()
    code, lines = run_cli("run", "--resume", "0" * 32)
    assert code != 0 and len(lines) == 1 and lines[0].startswith(f"error: job '{'0' * 32}' not found in "), lines
    assert lines[0].endswith("`spinbot jobs list` lists the jobs there")  # where it looked, and how to see


def test_serve_refuses_a_public_address_without_api_keys(spinbot_env, monkeypatch):
    monkeypatch.delenv("SPINBOT_API_KEYS", raising=False)
    code, lines = run_cli("serve", "--host", "0.0.0.0", "--port", "1")
    assert code != 0 and lines == [
        "error: refusing to serve on 0.0.0.0 without API keys: set SPINBOT_API_KEYS (comma-separated)"
    ]


# ---- help, version and the one error style -------------------------------------------------------------------

COMMANDS = [
    [],
    ["run"],
    ["demo"],
    ["cancel"],
    ["params"],
    ["serve"],
    ["worker"],
    ["pipelines"],
    ["pipelines", "list"],
    ["pipelines", "show"],
    ["pipelines", "validate"],
    ["models"],
    ["models", "list"],
    ["models", "check"],
    ["models", "pull"],
]


def test_version_prints_the_package_version():
    from spinbot import __version__

    assert run_cli("--version") == (0, [f"spinbot {__version__}"])


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "spinbot")
def test_help_answers_to_h_in_plain_type_names(command):
    code, short = run_cli(*command, "-h")
    assert code == 0 and any("Usage:" in line for line in short)
    assert (code, short) == run_cli(*command, "--help")
    text = "\n".join(short)
    for python_name in ("list[", "<str>", "<path>", "<int", "<bool>", "<float>"):
        assert python_name not in text, (command, python_name, text)


def test_run_help_marks_what_is_required(monkeypatch):
    monkeypatch.setenv("COLUMNS", "220")  # one line per option
    code, lines = run_cli("run", "-h")
    text = " ".join(" ".join(lines).replace("│", " ").split())
    assert code == 0
    assert "--prompt TEXT" in text and "(required unless --resume or --set script.text=...)" in text
    assert text.count("(required unless --resume)") == 2  # --image, --voice
    code, lines = run_cli("pipelines", "show", "-h")
    assert code == 0 and "[required]" in " ".join(lines)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["run", "--bogus"], "error: no such option: --bogus"),
        (["run", "--priority", "first"], "error: invalid value for '--priority'"),
        (["run", "--prompt"], "error: option '--prompt' requires an argument"),
        (["pipelines", "show"], "error: missing argument 'NAME'"),
        (["nonsense"], "error: no such command 'nonsense'"),
        (["params", "infinite_tlk"], "error: unknown task 'infinite_tlk'; did you mean infinite_talk?"),
    ],
)
def test_usage_errors_are_one_line_in_the_same_style(spinbot_env, args, expected):
    code, lines = run_cli(*args)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(expected), lines


def test_a_misspelled_param_gets_a_suggestion(inputs, spinbot_env):
    code, lines = run_with_inputs(inputs, "--set", "infinite_talk.fpss=30")
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith("error: infinite_talk.fpss: unknown param; did you mean fps? (allowed: ")
    code, lines = run_with_inputs(inputs, "--set", "infinite_tallk.fps=30")
    assert code == 2 and "did you mean infinite_talk?" in lines[0]
    assert stored_job_files(spinbot_env) == []


def test_an_unknown_scheduler_is_refused_with_the_choices(inputs, spinbot_env):
    code, lines = run_with_inputs(inputs, "--set", "infinite_talk.sampling_scheduler=ddim")
    assert code == 2 and lines == [
        "error: infinite_talk.sampling_scheduler: Input should be 'euler', 'unipc' or 'dpm++_sde' (got 'ddim')"
    ]


# ---- spinbot params -------------------------------------------------------------------------------------------


def test_params_lists_every_parameter_with_its_default_and_description():
    from spinbot.cli import DEFAULT_PIPELINE
    from spinbot.pipelines.spec import get_pipeline
    from spinbot.tasks.catalog import load_task

    code, lines = run_cli("params")
    assert code == 0
    text = "\n".join(lines)
    for task in {node.task for node in get_pipeline(DEFAULT_PIPELINE).nodes}:
        model = load_task(task).params_model
        for name, field in model.model_fields.items():
            row = next((line for line in lines if line.split()[:1] == [name]), None)
            assert row is not None, (task, name)
            assert field.description and field.description in text, (task, name)
    assert "  fps                    integer, >= 1, <= 120; default 25" in lines
    assert "  sampling_scheduler     euler | unipc | dpm++_sde; default dpm++_sde" in lines


def test_params_of_one_task_by_task_or_node_name():
    code, lines = run_cli("params", "infinite_talk")
    assert code == 0 and lines[0] == "infinite_talk: --set infinite_talk.PARAM=VALUE"
    assert not any(line.startswith("upscale_video") for line in lines)
    code, lines = run_cli("params", "script.generateScript")
    assert code == 0 and lines[0] == "script (task script.generateScript): --set script.PARAM=VALUE"
    assert run_cli("params", "script") == (code, lines)


# ---- own script, resume -----------------------------------------------------------------------------------------

OWN_SCRIPT = "Ever tried. Ever failed."


def test_own_script_needs_no_prompt_and_resume_shows_the_recorded_node_times(
    inputs, spinbot_env, monkeypatch, tmp_path
):
    """A job with --set script.text and no --prompt runs; it fails in upscale_video (a task that raises), and
    --resume finishes it showing each node finished before the resume with its own recorded time."""
    import sqlalchemy as sa

    from spinbot.settings import get_settings
    from spinbot.state.db import get_engine
    from spinbot.tasks import upscale

    def broken(ctx, params):
        raise RuntimeError("the upscaler broke")

    monkeypatch.setattr(upscale, "TASK", upscale.TaskDef("upscale_video", upscale.AIUpscalerParams, broken))
    code, lines = run_cli(
        "run",
        "--image",
        str(inputs["image"]),
        "--voice",
        str(inputs["voice"]),
        "--set",
        f"script.text={OWN_SCRIPT}",
        "--out",
        str(tmp_path / "out.mp4"),
    )
    assert code == 1 and lines[-1].startswith("error: job ") and "the upscaler broke" in lines[-1], lines
    job_id = lines[0].removeprefix("job ")
    monkeypatch.undo()

    # Make the finished nodes' recorded times unmistakable: 1 h 2 min 5 s for infinite_talk.
    engine = get_engine(get_settings().resolved_database_url)
    with engine.begin() as db:
        db.execute(
            sa.text(
                "UPDATE node_runs SET started_at = datetime(finished_at, '-3725 seconds') "
                "WHERE job_id = :job AND node_id = 'infinite_talk'"
            ),
            {"job": job_id},
        )
    code, lines = run_cli("run", "--resume", job_id, "--out", str(tmp_path / "out.mp4"))
    assert code == 0 and lines[-1] == str(tmp_path / "out.mp4"), lines
    rows = {
        line.split()[0]: line
        for line in lines
        if line.split()[0] in ("script", "f5_to_tts", "infinite_talk", "upscale_video")
    }
    # stderr is no terminal here: plain lines, the nodes finished before --resume first, with their recorded times
    assert "succeeded  100%  took 1:02:05" in rows["infinite_talk"], rows
    assert "succeeded  100%  took 0:00:00" in rows["script"], rows  # the user's script took no time
    assert "1:02:05" not in rows["upscale_video"]


@pytest.mark.parametrize("where", ["under_a_file", "an_existing_non_file"])
def test_an_unwritable_out_is_refused_before_the_job_starts(inputs, spinbot_env, tmp_path, where):
    """Checked first: a failed copy after a long render would waste the render (it was a traceback, exit 1)."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, so nothing can be made under it")
    out = blocker / "video.mp4" if where == "under_a_file" else tmp_path / "fifo"
    if where == "an_existing_non_file":
        import os

        os.mkfifo(out)
    args = ["run", "--prompt", "hi", "--image", str(inputs["image"]), "--voice", str(inputs["voice"]), "--out"]
    code, lines = run_cli(*args, str(out))
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: --out {out}:")
    assert stored_job_files(spinbot_env) == []


def test_out_as_a_folder_gets_the_video_named_by_its_job_and_a_failed_copy_keeps_it(
    inputs, spinbot_env, tmp_path, monkeypatch
):
    from spinbot.storage.local import LocalStore

    folder = tmp_path / "videos"
    folder.mkdir()
    args = ["run", "--prompt", "hi", "--image", str(inputs["image"]), "--voice", str(inputs["voice"])]
    code, lines = run_cli(*args, "--out", str(folder))
    assert code == 0, lines
    job_id = lines[0].removeprefix("job ")
    assert lines[-1] == str(folder / f"{job_id}.mp4") and (folder / f"{job_id}.mp4").stat().st_size > 0

    def disk_full(self, key, dest):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(LocalStore, "download", disk_full)
        code, lines = run_cli("run", "--resume", job_id, "--out", str(tmp_path / "again.mp4"))
    assert code == 1 and lines[-1] == (
        f"error: could not write {tmp_path / 'again.mp4'} (No space left on device); the video is kept: "
        f"spinbot run --resume {job_id} --out ANOTHER_FILE copies it"
    )
    code, lines = run_cli("run", "--resume", job_id, "--out", str(tmp_path / "again.mp4"))
    assert code == 0 and (tmp_path / "again.mp4").read_bytes() == (folder / f"{job_id}.mp4").read_bytes()


def test_a_huge_refused_value_is_quoted_only_in_part(inputs, spinbot_env):
    value = "[" * 50_000 + "]" * 50_000
    args = ["run", "--prompt", "hi", "--image", str(inputs["image"]), "--voice", str(inputs["voice"])]
    code, lines = run_cli(*args, "--set", f"infinite_talk.fps={value}")
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith("error: infinite_talk.fps: Input should be a valid integer")
    assert lines[0].endswith("... (100,002 characters))") and len(lines[0]) < 300


def test_a_portrait_far_from_portrait_shaped_is_refused_before_the_job(inputs, spinbot_env, tmp_path):
    """A 20000x64 image passed every check and failed at upscale_video's encoder, after the whole render."""
    from PIL import Image

    strip = tmp_path / "strip.png"
    Image.new("RGB", (20000, 64), (120, 100, 90)).save(strip)
    code, lines = run_cli("run", "--prompt", "hi", "--image", str(strip), "--voice", str(inputs["voice"]))
    assert code == 2 and lines == [
        "error: the portrait is 20000x64: one side is more than 4x the other (crop it closer to the face)"
    ]
    assert stored_job_files(spinbot_env) == []


@pytest.mark.parametrize("option", ["image", "voice"])
@pytest.mark.parametrize("spelling", ["same", "relative", "symlink"])
def test_out_that_is_an_input_file_is_refused_before_the_job(
    inputs, spinbot_env, tmp_path, monkeypatch, option, spelling
):
    """`--image victim.png --out victim.png` replaced the user's portrait with the video, exit 0."""
    import shutil

    victim = tmp_path / f"victim{inputs[option].suffix}"
    shutil.copy(inputs[option], victim)
    before = victim.read_bytes()
    out = {"same": victim, "relative": Path("sub/../") / victim.name, "symlink": tmp_path / "link"}[spelling]
    if spelling == "symlink":
        out.symlink_to(victim)
    monkeypatch.chdir(tmp_path)
    paths = {"image": str(inputs["image"]), "voice": str(inputs["voice"]), option: str(victim)}
    args = ["run", "--prompt", "hi", "--image", paths["image"], "--voice", paths["voice"], "--out", str(out)]
    code, lines = run_cli(*args)
    assert (code, lines) == (2, [f"error: --out {out}: is the --{option} file; the video would overwrite it"])
    assert victim.read_bytes() == before and stored_job_files(spinbot_env) == []


def test_out_that_exists_is_replaced_and_the_user_is_told(inputs, spinbot_env, tmp_path):
    out = tmp_path / "old.mp4"
    out.write_bytes(b"an older video")
    args = ["run", "--set", "script.text=Hi.", "--image", str(inputs["image"]), "--voice", str(inputs["voice"])]
    code, lines = run_cli(*args, "--out", str(out))
    assert code == 0 and lines[0] == f"--out {out} exists: the video will replace it", lines
    assert lines[-1] == str(out) and out.read_bytes()[4:8] == b"ftyp"


@pytest.mark.parametrize(
    "extra, named",
    [
        (["--image", "x.png", "--prompt", "hi"], "--prompt, --image"),
        (["--voice", "v.wav", "--ref-text", "words"], "--voice, --ref-text"),
        (
            ["--set", "script.text=Hi.", "--pipeline", "f5tts_infinitetalk", "--priority", "1"],
            "--pipeline, --set, --priority",
        ),
    ],
)
def test_resume_refuses_options_that_define_a_new_job(spinbot_env, extra, named):
    """They were silently ignored: the job resumed with its own inputs, exit 0."""
    code, lines = run_cli("run", "--resume", "0" * 32, *extra)
    assert (code, lines) == (
        2,
        [f"error: --resume continues a job with its own inputs: {named} cannot be given with it"],
    )
