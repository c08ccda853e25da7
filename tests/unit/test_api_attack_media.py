"""Files from an attacker's probe (2026-12-05) that passed the upload check and went on into a job: each test fails on
the code before its fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from spinbot.cli import app as cli_app
from spinbot.samples import portrait_path, voice_path
from tests.support.api_client import stored, upload_file


def float_voice(path: Path, value: float, subtype: str = "FLOAT") -> Path:
    """The sample voice as a float WAV with ten samples set to `value`: a valid header, a decode that works."""
    audio, rate = sf.read(str(voice_path()), dtype="float64")
    audio[len(audio) // 3 : len(audio) // 3 + 10] = value
    sf.write(str(path), audio, rate, subtype=subtype)
    return path


@pytest.mark.parametrize(
    "value, subtype",
    [(np.nan, "FLOAT"), (np.inf, "FLOAT"), (-np.inf, "FLOAT"), (1e200, "DOUBLE")],
    ids=["nan", "inf", "-inf", "past-float32"],
)
def test_a_voice_with_samples_that_are_no_numbers_is_a_400_at_upload_and_nothing_is_stored(
    keyed_client, spinbot_env, tmp_path, value, subtype
):
    # Was a 201: a NaN voice was then refused at submission as "silent", and an infinite one ran the whole job
    # (F5-TTS normalizes its reference by its RMS, infinite: a reference of NaN).
    answer = upload_file(keyed_client, "voice", float_voice(tmp_path / "voice.wav", value, subtype))
    assert answer.status_code == 400, answer.text
    assert answer.json() == {
        "error": "the voice upload is refused: some of its samples are not numbers (NaN or infinity): export it "
        "again as 16-bit PCM WAV or FLAC"
    }
    assert stored(spinbot_env) == []


def test_a_float_voice_of_ordinary_samples_is_accepted(keyed_client, tmp_path):
    answer = upload_file(keyed_client, "voice", float_voice(tmp_path / "voice.wav", 0.5))
    assert answer.status_code == 201, answer.text


def test_the_cli_refuses_a_local_voice_of_nan_samples_with_one_line(spinbot_env, tmp_path):
    # was: "the narrator voice is silent", a sound file of speech
    voice = float_voice(tmp_path / "voice.wav", np.nan)
    args = ["run", "--prompt", "the sea", "--image", str(portrait_path(tmp_path)), "--voice", str(voice)]
    result = CliRunner().invoke(cli_app, args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "some of its samples are not numbers (NaN or infinity)" in lines[0]
    assert not (spinbot_env / "jobs").exists()


@pytest.mark.parametrize("size", [(1, 1), (63, 200), (300, 40)])
def test_a_portrait_too_small_to_show_a_face_is_a_400_at_upload(keyed_client, spinbot_env, tmp_path, size):
    # Was a 201, and a job that succeeded: a video of one colour (the native backend renders it at 480p, as long)
    from PIL import Image

    Image.new("RGB", size, (200, 120, 80)).save(tmp_path / "small.png")
    answer = upload_file(keyed_client, "portrait", tmp_path / "small.png")
    assert answer.status_code == 400, answer.text
    assert answer.json() == {
        "error": f"the portrait upload is refused: the portrait is {size[0]}x{size[1]}: a side under 64 pixels is "
        "too small to show a face (send a larger photo)"
    }
    assert stored(spinbot_env) == []


def test_a_portrait_of_64_pixels_a_side_is_accepted(keyed_client, tmp_path):
    from PIL import Image

    Image.new("RGB", (64, 256), (200, 120, 80)).save(tmp_path / "small.png")
    assert upload_file(keyed_client, "portrait", tmp_path / "small.png").status_code == 201


def test_the_cli_refuses_a_1x1_portrait_with_one_line(spinbot_env, tmp_path):
    from PIL import Image

    Image.new("RGB", (1, 1), "red").save(tmp_path / "dot.png")
    args = ["run", "--prompt", "the sea", "--image", str(tmp_path / "dot.png"), "--voice", str(voice_path())]
    result = CliRunner().invoke(cli_app, args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "the portrait is 1x1: a side under 64 pixels is too small to show a face" in lines[0]
    assert not (spinbot_env / "jobs").exists()
