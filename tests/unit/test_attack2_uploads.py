"""Second attacker round (2026-12-05): a voice upload that no job can use was stored, holding the key's quota, and
refused only when a job named it. Each test fails on the code before its fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from spinbot.samples import voice_path
from tests.support.api_client import KEY, api_client, stored, upload_file


def tone(path: Path, seconds: float, amplitude: float = 0.3, rate: int = 24000) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (amplitude * np.sin(2 * np.pi * 180 * t)).astype(np.float32), rate, subtype="PCM_16")
    return path


@pytest.mark.parametrize(
    "seconds, amplitude, expected",
    [
        (0.2, 0.3, "the voice upload lasts 0.20 s, under the minimum of 1 s (SPINBOT_MIN_VOICE_SECONDS)"),
        (3.0, 0.0, "the voice upload is silent: nothing in it rises above the noise floor"),
        (61.0, 0.3, "the voice upload is refused: the audio lasts 61.0 s, over the limit of 60 s"),
    ],
    ids=["too-short", "silent", "too-long"],
)
def test_a_voice_no_job_can_use_is_a_400_at_upload_and_nothing_is_stored(
    keyed_client, spinbot_env, tmp_path, seconds, amplitude, expected
):
    # Was a 201 for the short and the silent one: stored, counted against the key's quota, refused only when a job
    # named it (the same checks as at submission now run on every voice upload).
    answer = upload_file(keyed_client, "voice", tone(tmp_path / "voice.wav", seconds, amplitude, rate=8000))
    assert answer.status_code == 400, answer.text
    message = answer.json()["error"]
    assert message.startswith(expected) and "\n" not in message
    assert stored(spinbot_env) == []


def test_a_constant_offset_voice_is_silent_at_upload_too(keyed_client, spinbot_env, tmp_path):
    voice = tmp_path / "dc.wav"
    sf.write(voice, np.full(48_000, 0.25, np.float32), 24_000, subtype="PCM_16")
    answer = upload_file(keyed_client, "voice", voice)
    assert answer.status_code == 400 and "the voice upload is silent" in answer.json()["error"]
    assert stored(spinbot_env) == []


def test_the_minimum_follows_the_setting_and_a_good_voice_still_passes(
    keyed_client, spinbot_env, tmp_path, monkeypatch
):
    assert upload_file(keyed_client, "voice", tone(tmp_path / "two.wav", 2.0)).status_code == 201
    assert upload_file(keyed_client, "voice", voice_path()).status_code == 201
    monkeypatch.setenv("SPINBOT_MIN_VOICE_SECONDS", "2.5")
    with api_client(monkeypatch, KEY) as strict:
        answer = upload_file(strict, "voice", tone(tmp_path / "two.wav", 2.0))
    assert answer.status_code == 400
    assert answer.json()["error"].startswith("the voice upload lasts 2.00 s, under the minimum of 2.5 s")
