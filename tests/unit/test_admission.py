"""Everything a job can fail on its inputs is refused at submission (CLI exit 2, API 400, one line naming the field
and the limit), and nothing is stored: long texts, speech over the length limit, parameter combinations that no
window plan or backend accepts, a voice sample too short or silent to clone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from spinbot.api.app import create_app
from spinbot.cli import app as cli_app
from spinbot.control.dispatch import TaskRequest, execute_task
from spinbot.control.requests import JobRequest
from spinbot.errors import BackendUnavailable, InputError, ParamsError
from spinbot.samples import BECKETT_TRANSCRIPT, portrait_path, voice_path
from spinbot.storage.local import LocalStore
from spinbot.tasks.speech_length import SpeechTooLong, estimate_seconds
from tests.support.api_client import api_client, local_client, stored
from tests.support.tasks import run_speech, store_with_voice

KEY_A, KEY_B = "key-a-123", "key-b-456"
SENTENCE = "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better. "


def write_voice(path: Path, seconds: float, amplitude: float = 0.3, rate: int = 24000) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (amplitude * np.sin(2 * np.pi * 180 * t)).astype(np.float32), rate, subtype="PCM_16")
    return path


@pytest.fixture
def client(spinbot_env, monkeypatch):
    with api_client(monkeypatch, KEY_A, KEY_B) as c:
        yield c


def auth(key: str = KEY_A) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def upload(client, kind: str, path: Path, key: str = KEY_A) -> str:
    with open(path, "rb") as f:
        r = client.post("/v1/uploads", data={"kind": kind}, files={"file": (path.name, f)}, headers=auth(key))
    assert r.status_code == 201, r.text
    return r.json()["id"]


def upload_changed_since(client, data_dir: Path, path: Path) -> str:
    """A voice upload whose stored file is `path` though its upload was a good voice: one changed in storage since,
    or checked under a lower SPINBOT_MIN_VOICE_SECONDS (a voice that fails the check is refused at upload)."""
    upload_id = upload(client, "voice", voice_path())
    stored_file = next(p for p in (data_dir / "uploads").rglob("*") if p.is_file() and upload_id in p.parts)
    stored_file.write_bytes(path.read_bytes())
    return upload_id


@pytest.fixture
def uploaded(client, tmp_path):
    return {
        "image": upload(client, "portrait", portrait_path(tmp_path)),
        "voice": upload(client, "voice", voice_path()),
    }


def submit(client, uploaded, key: str = KEY_A, **body):
    return client.post("/v1/jobs", json={"prompt": "failing better", **uploaded, **body}, headers=auth(key))


def refused(client, uploaded, spinbot_env, expected: str, **body) -> str:
    before = stored(spinbot_env)
    r = submit(client, uploaded, **body)
    assert r.status_code == 400, r.text
    message = r.json()["error"]
    assert expected in message and "\n" not in message
    assert stored(spinbot_env) == before
    assert client.get("/v1/jobs", headers=auth()).json()["total"] == 0
    return message


# ---- defect 4: bounded texts and a bounded speech length --------------------------------------------------------


def test_long_script_and_ref_text_are_refused_naming_the_limit(client, uploaded, spinbot_env, use_settings):
    refused(
        client,
        uploaded,
        spinbot_env,
        "script.text has 10001 characters, over the limit of 10000 (SPINBOT_MAX_SCRIPT_CHARS)",
        params={"script": {"text": "a" * 10_001}},
    )
    refused(
        client,
        uploaded,
        spinbot_env,
        "ref_text has 1001 characters, over the limit of 1000 (SPINBOT_MAX_REF_TEXT_CHARS)",
        ref_text="b" * 1001,
    )
    refused(
        client,
        uploaded,
        spinbot_env,
        "f5_to_tts.ref_text has 1001 characters",
        params={"f5_to_tts": {"ref_text": "b" * 1001}},
    )


def test_a_script_with_nothing_to_speak_is_refused_at_submission(client, uploaded, spinbot_env):
    """Emoji only: stored and run, then failed in f5_to_tts."""
    refused(
        client,
        uploaded,
        spinbot_env,
        "script.text has no letters or digits: there is nothing to speak",
        params={"script": {"text": "\U0001f600\U0001f389 \U0001f680!"}},
    )


def test_a_script_that_would_speak_past_the_limit_is_refused_before_it_runs(client, uploaded, spinbot_env):
    script = SENTENCE * 70  # 5,040 characters: under the character limit, about 336 s of speech
    message = refused(
        client,
        uploaded,
        spinbot_env,
        "over the limit of 300 s (SPINBOT_MAX_SPEECH_SECONDS)",
        params={"script": {"text": script}},
    )
    assert message.startswith("script.text: about 336 s of speech")
    # Slower speech is longer: 1,800 characters (120 s at speed 1) at speed 0.3 are over the limit.
    refused(
        client,
        uploaded,
        spinbot_env,
        "script.text: about 400 s",
        params={"script": {"text": SENTENCE * 25}, "f5_to_tts": {"speed": 0.3}},
    )
    # An LLM asked for 2000 words would write about 800 s.
    refused(
        client,
        uploaded,
        spinbot_env,
        "script.words (2000 words asked of the LLM): about 800 s",
        params={"script": {"words": 2000}},
    )
    assert submit(client, uploaded, params={"script": {"text": SENTENCE * 25}}).status_code == 201


def test_the_cli_refuses_a_long_script_with_one_line(spinbot_env, tmp_path):
    result = CliRunner().invoke(
        cli_app,
        [
            "run",
            "--prompt",
            "p",
            "--image",
            str(portrait_path(tmp_path)),
            "--voice",
            str(voice_path()),
            "--set",
            f"script.text={SENTENCE * 70}",
        ],
    )
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1
    assert "SPINBOT_MAX_SPEECH_SECONDS" in lines[0]
    assert not (spinbot_env / "jobs").exists()


@pytest.fixture
def voice_store(tmp_path) -> LocalStore:
    return store_with_voice(tmp_path)


speak = run_speech


def test_the_speech_task_enforces_the_limit_on_the_final_script_and_on_what_it_spoke(voice_store, use_settings):
    # An LLM's script over the estimate: refused before a word is spoken.
    use_settings(max_speech_seconds=20)
    with pytest.raises(SpeechTooLong, match=r"f5_to_tts: the script: about 34 s of speech, over the limit of 20 s"):
        speak(voice_store, SENTENCE * 7)
    assert voice_store.list("jobs/job1/f5_to_tts") == []
    # The estimate is a lower bound (a brisk pace); speech that comes out longer is stopped by its real length.
    text = SENTENCE * 2
    use_settings(max_speech_seconds=300)
    spoken = speak(voice_store, text).values["audio_duration"]
    estimate = estimate_seconds(len(text))
    assert spoken > estimate
    use_settings(max_speech_seconds=(spoken + estimate) / 2)
    with pytest.raises(SpeechTooLong, match=r"f5_to_tts: the script, after \d+ of \d+ chunks: [\d.]+ s of speech"):
        speak(voice_store, text)


# ---- defect 5: every check that can run at submission runs there ------------------------------------------------


def test_a_window_smaller_than_its_motion_context_is_refused_at_submission(client, uploaded, spinbot_env):
    refused(
        client,
        uploaded,
        spinbot_env,
        "infinite_talk: motion_frame (25) must be smaller than frame_window_size (2)",
        params={"infinite_talk": {"frame_window_size": 2}},
    )


@pytest.mark.parametrize(
    "seconds, amplitude, expected",
    [
        (0.02, 0.3, "the narrator voice lasts 0.02 s, under the minimum of 1 s (SPINBOT_MIN_VOICE_SECONDS)"),
        (2.0, 0.0, "the narrator voice is silent"),
    ],
)
def test_a_voice_too_short_or_silent_to_clone_is_refused_at_submission(
    client, spinbot_env, tmp_path, seconds, amplitude, expected
):
    voice = write_voice(tmp_path / "voice.wav", seconds, amplitude)
    assert voice.stat().st_size < 100_000
    voice_id = upload_changed_since(client, spinbot_env, voice)
    ids = {"image": upload(client, "portrait", portrait_path(tmp_path)), "voice": voice_id}
    refused(client, ids, spinbot_env, expected)
    result = CliRunner().invoke(
        cli_app, ["run", "--prompt", "p", "--image", str(portrait_path(tmp_path)), "--voice", str(voice)]
    )
    assert result.exit_code == 2 and expected in result.output


def test_a_constant_offset_is_silent_too(spinbot_env, tmp_path):
    """A DC signal (a constant sample value) passed the silence check and had nothing to clone."""
    voice = tmp_path / "dc.wav"
    sf.write(voice, np.full(48_000, 0.25, np.float32), 24_000, subtype="PCM_16")
    result = CliRunner().invoke(
        cli_app, ["run", "--prompt", "p", "--image", str(portrait_path(tmp_path)), "--voice", str(voice)]
    )
    assert result.exit_code == 2 and "the narrator voice is silent" in result.output


def test_a_long_local_voice_is_refused_at_submission_from_its_header(spinbot_env, tmp_path, monkeypatch):
    """The CLI's local voice file (no upload step checked it): over SPINBOT_MAX_VOICE_SECONDS it is refused before
    any node runs and before it is decoded whole (a 2-hour WAV took 4.3 GB and 12.7 s before this check)."""
    from spinbot.media import audio

    voice = write_voice(tmp_path / "long.wav", 90.0, rate=8000)
    decoded: list[float | None] = []
    real_load_audio = audio.load_audio

    def watched_load_audio(path, sr=None, mono=True, max_seconds=None):
        decoded.append(max_seconds)
        return real_load_audio(path, sr, mono, max_seconds)

    monkeypatch.setattr(audio, "load_audio", watched_load_audio)
    result = CliRunner().invoke(
        cli_app, ["run", "--prompt", "p", "--image", str(portrait_path(tmp_path)), "--voice", str(voice)]
    )
    expected = (  # and what to do, not only the limit
        "the narrator voice: the audio lasts 90.0 s, over the limit of 60 s (SPINBOT_MAX_VOICE_SECONDS): "
        "cut 10 to 30 s of clear speech from it"
    )
    assert result.exit_code == 2 and expected in result.output
    assert decoded == []  # the header said enough
    assert stored(spinbot_env) == []  # no job, nothing uploaded


def test_what_the_configured_backend_needs_is_checked_at_submission(client, uploaded, spinbot_env, use_settings):
    refused(
        client,
        uploaded,
        spinbot_env,
        "upscale_video.model_name_0: 'codeformer.pth' names no upscale factor",
        params={"upscale_video": {"model_name_0": "codeformer.pth"}},
    )
    refused(
        client,
        uploaded,
        spinbot_env,
        "infinite_talk.sampling_scheduler:",
        params={"infinite_talk": {"sampling_scheduler": "ddim"}},
    )
    use_settings(tts_backend="native", talk_backend="native")
    with local_client(create_app()) as native:  # the same data folder, so the same uploads
        refused(native, uploaded, spinbot_env, "f5_to_tts: ref_text (the transcript of the narrator voice) is empty")
        refused(
            native,
            uploaded,
            spinbot_env,
            "infinite_talk.motion_frame: the native backend needs at least 1",
            params={"infinite_talk": {"motion_frame": 0}},
            ref_text=BECKETT_TRANSCRIPT,
        )


def stored_key(data_dir: Path, upload_id: str) -> str:
    return next(
        p.relative_to(data_dir).as_posix()
        for p in (data_dir / "uploads").rglob("*")
        if p.is_file() and upload_id in p.parts
    )


def test_a_narrator_voice_param_must_name_one_of_the_owners_stored_voices(client, uploaded, spinbot_env, tmp_path):
    other_key = stored_key(spinbot_env, upload(client, "voice", voice_path(), key=KEY_B))
    # The API names the key by its file name only: object keys stay internal.
    refused(
        client,
        uploaded,
        spinbot_env,
        "f5_to_tts.narrator_voice: 'voice.wav' is not one of your uploads",
        params={"f5_to_tts": {"narrator_voice": other_key, "ref_text": "x"}},
    )
    owner_a = stored_key(spinbot_env, uploaded["voice"]).split("/")[1]
    refused(
        client,
        uploaded,
        spinbot_env,
        "is not in the artifact store",
        params={"f5_to_tts": {"narrator_voice": f"uploads/{owner_a}/{'0' * 32}/voice.wav"}},
    )
    short_key = stored_key(spinbot_env, upload_changed_since(client, spinbot_env, write_voice(tmp_path / "s.wav", 0.2)))
    refused(
        client,
        uploaded,
        spinbot_env,
        "f5_to_tts.narrator_voice lasts 0.20 s",
        params={"f5_to_tts": {"narrator_voice": short_key}},
    )


def test_a_narrator_voice_param_names_one_of_the_keys_voice_uploads_by_its_id(
    client, uploaded, spinbot_env, tmp_path, monkeypatch
):
    """The API answers an upload's id, never its stored key, and refused the id as a narrator_voice: the param took
    only uploads/<hash of the API key>/<id>/voice.<ext>. Now the id is resolved at submission to the owner's stored
    voice, which is checked as the job's own voice is; the job stores the key its task reads, and answers the id."""

    monkeypatch.setattr(client.app.state.services.executor, "submit", lambda job_id: None)  # none runs
    other_voice = upload(client, "voice", write_voice(tmp_path / "other.wav", 3.0))
    r = submit(client, uploaded, params={"f5_to_tts": {"narrator_voice": other_voice, "ref_text": "x"}})
    assert r.status_code == 201, r.text
    assert r.json()["params"]["f5_to_tts"]["narrator_voice"] == other_voice  # the id again: no object key answered
    runner = client.app.state.services.runner
    job = runner.jobs.get(r.json()["id"])
    key = stored_key(spinbot_env, other_voice)
    assert key.startswith("uploads/") and key.endswith(f"/{other_voice}/voice.wav")
    assert job.params["f5_to_tts"]["narrator_voice"] == key
    # an input of the job as its own voice is: not deletable while the job names it
    assert client.delete(f"/v1/uploads/{other_voice}", headers=auth()).status_code == 409
    # the task reads the stored param (and not the job's voice: no artifacts given)
    request = TaskRequest(
        job_id=job.id,
        node_id="f5_to_tts",
        task="f5_to_tts",
        params=job.params["f5_to_tts"],
        values={"text": "Hello there. This is the other voice."},
    )
    output = execute_task(request, runner.artifacts, workdir_root=tmp_path)
    assert runner.artifacts.exists(output.artifacts["audio"]) and output.values["audio_duration"] > 0.5


def test_a_narrator_voice_id_of_another_key_is_unknown_as_one_that_never_was(client, uploaded, spinbot_env, tmp_path):
    """No existence oracle across keys: another key's voice upload, one's own portrait upload and an id no upload
    has are refused with the same line."""
    others = upload(client, "voice", voice_path(), key=KEY_B)
    never = "0123456789abcdef" * 2
    lines = {
        upload_id: refused(
            client,
            uploaded,
            spinbot_env,
            f"f5_to_tts.narrator_voice: unknown voice upload '{upload_id}'",
            params={"f5_to_tts": {"narrator_voice": upload_id}},
        ).replace(upload_id, "ID")
        for upload_id in (others, uploaded["image"], never)
    }
    assert len(set(lines.values())) == 1
    # the voice is checked like the job's own: a sample too short to clone is refused by its id too
    short = upload_changed_since(client, spinbot_env, write_voice(tmp_path / "short.wav", 0.2))
    refused(
        client,
        uploaded,
        spinbot_env,
        "f5_to_tts.narrator_voice lasts 0.20 s",
        params={"f5_to_tts": {"narrator_voice": short}},
    )


def test_the_cli_takes_a_local_file_as_narrator_voice_and_the_api_never_does(spinbot_env, tmp_path):
    """`spinbot run --set f5_to_tts.narrator_voice=FILE`: the file is checked and copied into the job's inputs as
    --voice is, and the param stored as its key. A request that is not the CLI's (the API) cannot name a file of
    the server's."""
    from spinbot.cli import _new_job_request
    from spinbot.control.runner import Runner

    runner = Runner()
    voice = write_voice(tmp_path / "narrator.wav", 3.0)
    params = {"f5_to_tts": {"narrator_voice": str(voice)}}
    request = _new_job_request("p", portrait_path(tmp_path), voice_path(), "x", "f5tts_infinitetalk", params, None)
    assert request.local_files
    job = runner.jobs.get(runner.create_job(request))
    key = f"jobs/{job.id}/inputs/f5_to_tts.narrator_voice.wav"
    assert job.params["f5_to_tts"]["narrator_voice"] == key
    assert runner.artifacts.path(key).read_bytes() == voice.read_bytes()
    with pytest.raises(ParamsError, match=r"^f5_to_tts\.narrator_voice: artifact key .* is not a relative key$"):
        runner.create_job(request.model_copy(update={"local_files": False}))
    with pytest.raises(ParamsError, match=r"^f5_to_tts\.narrator_voice: no file, voice upload or stored key is named"):
        runner.create_job(request.model_copy(update={"params": {"f5_to_tts": {"narrator_voice": "nowhere.wav"}}}))
    short = write_voice(tmp_path / "short.wav", 0.2)
    result = CliRunner().invoke(
        cli_app,
        ["run", "--prompt", "p", "--image", str(portrait_path(tmp_path)), "--voice", str(voice_path())]
        + ["--set", f"f5_to_tts.narrator_voice={short}"],
    )
    assert result.exit_code == 2 and "f5_to_tts.narrator_voice lasts 0.20 s" in result.output
    assert len(runner.jobs.list()[0]) == 1  # the first job only


def test_a_job_request_is_one_object(spinbot_env, tmp_path):
    from spinbot.control.runner import Runner

    runner = Runner()
    request = JobRequest(
        prompt="p",
        image=portrait_path(tmp_path),
        voice=voice_path(),
        ref_text="x",
        priority=2,
        params={"infinite_talk": {"fps": "10"}},
    )
    job = runner.jobs.get(runner.create_job(request))
    assert job.priority == 2 and job.params == {"infinite_talk": {"fps": 10}}
    assert job.inputs["values"]["ref_text"] == "x"
    with pytest.raises(ParamsError, match="infinite_talk: motion_frame"):
        runner.create_job(request.model_copy(update={"params": {"infinite_talk": {"frame_window_size": "3"}}}))
    with pytest.raises(InputError, match="prompt is empty"):
        runner.create_job(request.model_copy(update={"prompt": "  "}))
    assert len(runner.jobs.list()[0]) == 1


def test_missing_native_model_files_refuse_the_job_before_any_node_runs(
    client, uploaded, spinbot_env, use_settings, tmp_path
):
    """The embedded queue runs tasks in this process: a native backend without its files is refused at submission
    (CLI: one line, exit 2; API: 503 with the server's path taken out), not at its node after the others ran."""
    models = tmp_path / "models"
    models.mkdir()
    use_settings(talk_backend="native", models_dir=models)
    expected = "infinite_talk: the native backend lacks model files in SPINBOT_MODELS_DIR="
    pull = "(`spinbot models pull` fetches them)"
    with local_client(create_app()) as native:
        before = stored(spinbot_env)
        r = submit(native, uploaded)
        assert r.status_code == 503, r.text
        message = r.json()["error"]
        assert "infinite_talk: the native backend lacks model files" in message and pull in message
        assert str(tmp_path) not in message and "\n" not in message
        assert stored(spinbot_env) == before
    result = CliRunner().invoke(
        cli_app, ["run", "--prompt", "p", "--image", str(portrait_path(tmp_path)), "--voice", str(voice_path())]
    )
    assert result.exit_code == 2
    assert expected + str(models) in result.output and "and 8 more" in result.output


def test_workers_check_their_own_model_files_so_submission_with_redis_does_not(spinbot_env, use_settings, tmp_path):
    from spinbot.control.admission import Admission
    from spinbot.pipelines.spec import load_pipelines
    from spinbot.tasks.catalog import load_task

    use_settings(talk_backend="native", models_dir=tmp_path / "models", redis_url="redis://127.0.0.1:6379/0")
    from spinbot.settings import get_settings

    spec = load_pipelines()["f5tts_infinitetalk"]
    nodes = {n.id: load_task(n.task).params_model() for n in spec.nodes}
    Admission(get_settings(), LocalStore(tmp_path / "store")).check_model_files(spec, nodes)  # no error: workers do
    use_settings(redis_url="")
    with pytest.raises(BackendUnavailable, match="infinite_talk: the native backend lacks model files"):
        Admission(get_settings(), LocalStore(tmp_path / "store")).check_model_files(spec, nodes)
