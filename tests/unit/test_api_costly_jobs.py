"""Requests from an attacker's probe (2026-12-05) that the API took although they cost far more than any limit meant
to allow, or that it refused with a line that named the wrong thing: each test fails on the code before its fix."""

from __future__ import annotations

import pytest

from spinbot.samples import portrait_path
from spinbot.tasks.talk import DenoisingWork, InfiniteTalkParams, denoising_work, guidance_passes
from tests.support.api_client import AUTH, KEY, api_client
from tests.unit.test_api_hostile_input import upload_both

SCRIPT = "Hello there my friend. " * 180  # about 276 s of speech: within SPINBOT_MAX_SPEECH_SECONDS


@pytest.fixture
def uploads(keyed_client, tmp_path) -> dict[str, str]:
    return upload_both(keyed_client, portrait_path(tmp_path))


def submit(client, uploads, talk: dict):
    body = {"image": uploads["portrait"], "voice": uploads["voice"], "params": {"script": {"text": SCRIPT}}}
    body["params"]["infinite_talk"] = talk
    return client.post("/v1/jobs", json=body, headers=AUTH)


def test_guidance_params_in_range_that_together_cost_days_are_a_400_before_anything_is_stored(keyed_client, uploads):
    # Each in range, and the video within SPINBOT_MAX_VIDEO_PIXELS: 123 windows x 200 steps x 3 model passes a
    # step, 73,800 transformer passes (about 40 hours of an H100 at 1.95 s a pass) for one job of a key that may
    # have 20 waiting. Was a 201.
    costly = {"sampling_steps": 200, "sampling_cfg": 5, "audio_cfg_scale": 4}
    answer = submit(keyed_client, uploads, costly)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == (
        "infinite_talk: 123 windows of 81 frames x 200 sampling_steps x 3 model passes a step (sampling_cfg and "
        "audio_cfg_scale not 1) is 5,977,800 frame-steps of denoising (about 276 s of speech at 25 fps), over the "
        "limit of 2,000,000 (SPINBOT_MAX_TALK_FRAME_STEPS): lower sampling_steps, set sampling_cfg or "
        "audio_cfg_scale to 1, or make the script shorter"
    )
    assert keyed_client.get("/v1/jobs", headers=AUTH).json()["total"] == 0


def test_the_official_40_step_recipe_with_both_guidance_passes_is_still_accepted(keyed_client, uploads):
    answer = submit(keyed_client, uploads, {"sampling_steps": 40, "sampling_cfg": 5, "audio_cfg_scale": 4})
    assert answer.status_code == 201, answer.text
    keyed_client.post(f"/v1/jobs/{answer.json()['id']}/cancel", headers=AUTH)


def test_the_limit_is_the_setting(spinbot_env, monkeypatch, tmp_path):
    monkeypatch.setenv("SPINBOT_MAX_TALK_FRAME_STEPS", "100000")
    with api_client(monkeypatch, KEY) as client:
        uploads = upload_both(client, portrait_path(tmp_path))
        answer = submit(client, uploads, {"sampling_steps": 11})  # 123 windows x 81 frames x 11: 109,593
        assert answer.status_code == 400 and "is 109,593 frame-steps" in answer.json()["error"]
        assert "over the limit of 100,000 (SPINBOT_MAX_TALK_FRAME_STEPS)" in answer.json()["error"]


@pytest.mark.parametrize("text, audio", [(1.0, 1.0), (5.0, 1.0), (1.0, 4.0), (5.0, 4.0), (0.0, 0.0)])
def test_the_passes_counted_are_the_samplers(text, audio):
    from spinbot.backends.talk.infinitetalk.sampler import Guidance

    assert guidance_passes(text, audio) == len(Guidance(text, audio).passes)


def test_the_work_counts_each_window_whole_context_included():
    params = InfiniteTalkParams(frame_window_size=81, motion_frame=25, sampling_steps=6)
    # the seed's recipe for 300 s at 25 fps: 65,124, one model pass a step (both guidance scales 1)
    assert denoising_work(7500, params) == (134, 1, 134 * 81 * 6)
    guided = params.model_copy(update={"sampling_cfg": 5.0, "audio_cfg_scale": 4.0})
    assert denoising_work(7500, guided) == DenoisingWork(windows=134, passes=3, frame_steps=134 * 81 * 6 * 3)


def test_f5_tts_on_the_cpu_with_many_steps_over_long_speech_is_a_400(spinbot_env, monkeypatch, tmp_path):
    # device=cpu runs the native F5-TTS in float32 on the worker's CPU: nfe_step 256 over 276 s held it for hours
    monkeypatch.setenv("SPINBOT_TTS_BACKEND", "native")
    with api_client(monkeypatch, KEY) as client:
        uploads = upload_both(client, portrait_path(tmp_path))
        body = {"image": uploads["portrait"], "voice": uploads["voice"], "params": {"script": {"text": SCRIPT}}}
        body["params"]["f5_to_tts"] = {"device": "cpu", "nfe_step": 256}
        answer = client.post("/v1/jobs", json=body, headers=AUTH)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"] == (
            "f5_to_tts: nfe_step 256 on device=cpu over about 276 s of speech (script.text) is 70,656 step-seconds, "
            "over the CPU's 9,600 (nfe_step 32 over SPINBOT_MAX_SPEECH_SECONDS): lower nfe_step or the script, or "
            "run it on a GPU (device=cuda)"
        )
        assert client.get("/v1/jobs", headers=AUTH).json()["total"] == 0


def test_the_cpu_budget_counts_only_the_cpu_and_allows_the_default_steps_over_the_longest_speech():
    from spinbot.errors import ParamsError
    from spinbot.tasks.tts import refuse_cpu_overwork

    refuse_cpu_overwork("tts", "cpu", 32, 300, 300, "300 s")  # the default steps over the longest speech
    refuse_cpu_overwork("tts", "cuda:1", 256, 300, 300, "300 s")  # a GPU: minutes, no budget
    refuse_cpu_overwork("tts", "cpu", 256, 37, 300, "37 s")  # more steps, shorter speech
    with pytest.raises(ParamsError, match="nfe_step 256 on device=cpu over 38 s is 9,728 step-seconds"):
        refuse_cpu_overwork("tts", "cpu:0", 256, 38, 300, "38 s")
