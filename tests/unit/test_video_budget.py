"""The size limits on a job's video (SPINBOT_MAX_VIDEO_FRAME_PIXELS, SPINBOT_MAX_VIDEO_PIXELS, H.264's sides).

An attacker's probe: nothing bounded the final video. An x8 upscaler (its factor read from its file name) on a
talking head at 120 fps for 300 s of speech asked for hours of CPU and frames the encoder refuses only when it
opens. Now the estimate is refused at submission (API 400, CLI exit 2, one line, nothing stored) and each task
checks its real numbers before it starts work.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from spinbot.backends.talk.animator import AnimatorBackend
from spinbot.backends.talk.infinitetalk.sizing import BUCKETS, fit_portrait
from spinbot.backends.upscale.resample import ResampleUpscaler
from spinbot.control.budgets import derived_videos, estimate_videos, talk_frame_size
from spinbot.control.dispatch import TaskRequest
from spinbot.errors import SettingsError
from spinbot.media.upload_check import portrait_size
from spinbot.media.video import VideoWriter
from spinbot.pipelines.spec import get_pipeline
from spinbot.samples import portrait_path, voice_path
from spinbot.settings import Settings, get_settings
from spinbot.storage.local import LocalStore
from spinbot.tasks.catalog import load_task
from spinbot.tasks.talk import InfiniteTalkParams
from spinbot.tasks.video_budget import (
    H264_MAX_FRAME_PIXELS,
    H264_MAX_SIDE,
    DerivedVideo,
    Upscale,
    VideoTooLarge,
    check_video,
)
from tests.support.api_client import api_client
from tests.support.cli import run_cli, stored_job_files
from tests.support.tasks import run_talk
from tests.unit.test_upscale import upscale as upscale_clip
from tests.unit.test_upscale import write_clip

KEY = "key-budget-1"
SENTENCE = "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better. "  # 72 characters: 4.8 s
SECONDS, FPS = 300, 25  # SPINBOT_MAX_SPEECH_SECONDS at the default fps
NO_LEVERS: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())


def nodes_of(params: dict) -> dict:
    spec = get_pipeline("f5tts_infinitetalk")
    return {n.id: load_task(n.task).params_model.model_validate(params.get(n.id, {})) for n in spec.nodes}


def estimate(params: dict, portrait: tuple[int, int], seconds: float | None = SECONDS) -> dict:
    speech = {} if seconds is None else {"f5_to_tts": seconds}
    spec = get_pipeline("f5tts_infinitetalk")
    return estimate_videos(spec, nodes_of(params), speech, portrait, get_settings())


def big_portrait(folder: Path, side: int = 1024) -> Path:
    """The astronaut at side x side: the lite talking head shrinks it to 624x624 (SPINBOT_TALK_MAX_PIXELS)."""
    path = folder / f"astronaut-{side}.png"
    cv2.imwrite(str(path), cv2.cvtColor(cv2.resize(data.astronaut(), (side, side)), cv2.COLOR_RGB2BGR))
    return path


# ---- the defaults --------------------------------------------------------------------------------------------------


def test_the_defaults_take_every_native_talking_head_at_2x_for_300_s_at_25_fps_and_none_at_8x():
    settings = Settings()
    for resolution, buckets in BUCKETS.items():
        for height, width in buckets.values():
            check_video(resolution, (2 * width, 2 * height), SECONDS * FPS, settings, "", NO_LEVERS)
            with pytest.raises(VideoTooLarge, match="SPINBOT_MAX_VIDEO_FRAME_PIXELS"):
                check_video(resolution, (8 * width, 8 * height), 1, settings, "", NO_LEVERS)
    lite = 832 * 480  # SPINBOT_TALK_MAX_PIXELS
    check_video("lite", (2 * 832, 2 * 480), SECONDS * FPS, settings, "", NO_LEVERS)
    assert settings.talk_max_pixels == lite
    # the seed's own params over 300 s at 120 fps are over the work limit
    with pytest.raises(VideoTooLarge, match="SPINBOT_MAX_VIDEO_PIXELS"):
        check_video("lite", (2 * 832, 2 * 480), SECONDS * 120, settings, "", NO_LEVERS)


def test_the_encoder_opens_16384_a_side_and_no_more(tmp_path):
    """The limits tasks/video_budget.py states, tried on the encoder every video goes through."""
    with VideoWriter(tmp_path / "wide.mp4", 25, H264_MAX_SIDE, 16) as writer:
        writer.write(np.zeros((16, H264_MAX_SIDE, 3), np.uint8))
    for width, height in ((H264_MAX_SIDE + 2, 16), (16, H264_MAX_SIDE + 2), (H264_MAX_SIDE, 16130)):
        with pytest.raises(av.error.FFmpegError), VideoWriter(tmp_path / "no.mp4", 25, width, height) as writer:
            writer.write(np.zeros((2, 2, 3), np.uint8))  # refused as the encoder opens, before the frame is read
    with pytest.raises(VideoTooLarge, match=r"H\.264 \(libx264\) encodes at most 16384 pixels a side"):
        check_video("x", (H264_MAX_SIDE + 2, 16), 1, Settings(), "", NO_LEVERS)


def test_the_frame_setting_stops_at_the_largest_frame_the_encoder_opens(spinbot_env, use_settings):
    use_settings(max_video_frame_pixels=H264_MAX_FRAME_PIXELS + 1)
    with pytest.raises(SettingsError, match="SPINBOT_MAX_VIDEO_FRAME_PIXELS"):
        get_settings()


# ---- the estimate --------------------------------------------------------------------------------------------------


def test_the_estimate_follows_the_portrait_the_talk_sizing_the_factor_and_the_speech(spinbot_env, use_settings):
    videos = estimate({"upscale_video": {"model_name_0": "RealESRGAN_x4plus.pth"}}, (512, 512))
    assert (videos["infinite_talk"].size, videos["infinite_talk"].frames) == ((512, 512), 7500)
    assert (videos["upscale_video"].size, videos["upscale_video"].frames) == ((2048, 2048), 7500)
    videos = estimate({"infinite_talk": {"fps": 120}, "upscale_video": {"frame_load_cap": 100}}, (1024, 1024), 10)
    assert videos["infinite_talk"].size == (624, 624)  # lite: shrunk to SPINBOT_TALK_MAX_PIXELS, multiples of 16
    assert (videos["upscale_video"].size, videos["upscale_video"].frames) == ((1248, 1248), 100)
    assert videos["upscale_video"].about == "upscale_video.frame_load_cap"
    assert estimate({}, (512, 512), None)["upscale_video"].frames is None  # no script: the frame alone
    use_settings(talk_backend="native")
    videos = estimate({"infinite_talk": {"resolution": "720p"}}, (1280, 720))
    assert videos["infinite_talk"].size == (1280, 704)  # the 0.55 bucket
    assert videos["upscale_video"].size == (2560, 1408)


def test_an_upscaler_whose_name_names_no_factor_counts_as_x1(spinbot_env):
    videos = estimate({"upscale_video": {"model_name_0": "my_upscaler.pth"}}, (512, 512))
    assert videos["upscale_video"].size == (512, 512)  # a lower bound: the native task checks its model's own


def write_upscaler(path: Path, scale: int) -> Path:
    """A tiny RealESRGAN checkpoint (RRDBNet, 16 features, 2 blocks) of this factor: .pth under params_ema as
    released, or a flat .safetensors."""
    from safetensors.torch import save_file

    from spinbot.models.synth.upscale import realesrgan_state_dict

    state = realesrgan_state_dict(scale=scale, num_feat=16, num_block=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file(state["params_ema"], path)
    else:
        torch.save(state, path)
    return path


def test_a_native_upscalers_factor_is_read_from_its_files_header_at_submission(spinbot_env, use_settings, tmp_path):
    """A native upscaler's factor is its weights': a file whose name gives none counted as x1 until the task loaded
    it, after the talking head had rendered. Its header is read (spandrel on meta tensors), cached by size and
    modification time; a file that does not read keeps the lower bound."""
    models = tmp_path / "models"
    use_settings(upscale_backend="native", models_dir=models)
    folder = models / "upscale_models"

    def upscaled(name: str) -> tuple[int, int]:
        return estimate({"upscale_video": {"model_name_0": name}}, (512, 512))["upscale_video"].size

    write_upscaler(folder / "my_upscaler.pth", 4)
    write_upscaler(folder / "mine.safetensors", 4)
    assert upscaled("my_upscaler.pth") == upscaled("mine.safetensors") == (2048, 2048)
    write_upscaler(folder / "my_upscaler.pth", 2)  # replaced: read again
    assert upscaled("my_upscaler.pth") == (1024, 1024)
    write_upscaler(folder / "RealESRGAN_x8.pth", 2)  # the weights' factor, which the native task scales by
    assert upscaled("RealESRGAN_x8.pth") == (1024, 1024)
    (folder / "broken.pth").write_bytes(b"<html>not found</html>")
    assert upscaled("broken.pth") == upscaled("absent.pth") == (512, 512)
    assert upscaled("broken_x4.pth") == (2048, 2048)  # unread, its name's factor as before
    use_settings(redis_url="redis://127.0.0.1:9")  # a worker's upscaler: this process imports no torch for it
    assert upscaled("my_upscaler.pth") == (512, 512)


@pytest.mark.parametrize("size", [(512, 512), (1000, 600), (300, 900), (2000, 500), (333, 777)])
def test_the_talk_frame_estimate_is_what_the_backends_make(size, spinbot_env):
    image = np.zeros((size[1], size[0], 3), np.uint8)
    params = InfiniteTalkParams()
    lite, _ = AnimatorBackend().fit_portrait(image, params)
    assert talk_frame_size("lite", size, params, get_settings()) == (lite.shape[1], lite.shape[0])
    for resolution, buckets in BUCKETS.items():
        native = fit_portrait(image, buckets)
        params = InfiniteTalkParams(resolution=resolution)
        assert talk_frame_size("native", size, params, get_settings()) == (native.shape[1], native.shape[0])


def test_the_portrait_size_is_upright_as_its_exif_turns_it(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # turned a quarter clockwise: a phone held upright
    Image.new("RGB", (600, 400)).save(tmp_path / "turned.jpg", exif=exif)
    Image.new("RGB", (600, 400)).save(tmp_path / "plain.jpg")
    assert portrait_size(str(tmp_path / "turned.jpg"), 10**6) == (400, 600)
    assert portrait_size(str(tmp_path / "plain.jpg"), 10**6) == (600, 400)


# ---- refused at submission -----------------------------------------------------------------------------------------


def upload(client, kind: str, path: Path) -> str:
    with open(path, "rb") as f:
        r = client.post("/v1/uploads", data={"kind": kind}, files={"file": (path.name, f)}, headers=AUTH)
    assert r.status_code == 201, r.text
    return r.json()["id"]


AUTH = {"Authorization": f"Bearer {KEY}"}
X8 = {"upscale_video": {"model_name_0": "RealESRGAN_x8.pth"}}
X8_LINE = (
    "upscale_video: the video would have 4992x4992 frames (24,920,064 pixels), over the limit of 16,777,216 pixels "
    "a frame (SPINBOT_MAX_VIDEO_FRAME_PIXELS); to get under it: use an upscaler of a smaller factor "
    "(upscale_video.model_name_0 is x8) or use a smaller portrait"
)
# 3,960 characters: about 264 s at 120 fps, 31,680 frames of 1024x1024 (the astronaut at x2)
FAST = {"script": {"text": SENTENCE * 55}, "infinite_talk": {"fps": 120}}
FAST_LINE = (
    "upscale_video: the video would be 31,680 frames of 1024x1024 (about 264 s of speech at 120 fps): "
    "33,218,887,680 pixels, over the limit of 30,000,000,000 (SPINBOT_MAX_VIDEO_PIXELS); to get under it: lower "
    "infinite_talk.fps, make the script shorter, use an upscaler of a smaller factor (upscale_video.model_name_0 is "
    "x2) or use a smaller portrait"
)


def test_the_api_refuses_a_video_over_a_limit_with_one_line_and_stores_nothing(spinbot_env, monkeypatch, tmp_path):
    with api_client(monkeypatch, KEY) as client:
        voice = upload(client, "voice", voice_path())
        for portrait, params, line in (
            (big_portrait(tmp_path), X8, X8_LINE),
            (portrait_path(tmp_path), FAST, FAST_LINE),
        ):
            image = upload(client, "portrait", portrait)
            body = {"prompt": "the sea", "image": image, "voice": voice, "params": params}
            r = client.post("/v1/jobs", json=body, headers=AUTH)
            assert r.status_code == 400, r.text
            assert r.json()["error"] == line
        assert client.get("/v1/jobs", headers=AUTH).json()["total"] == 0
        assert stored_job_files(spinbot_env) == []
        body = {"prompt": "the sea", "image": image, "voice": voice, "params": {"script": {"text": SENTENCE}}}
        assert client.post("/v1/jobs", json=body, headers=AUTH).status_code == 201  # the defaults pass


def test_the_cli_refuses_a_video_over_a_limit_with_one_line(spinbot_env, tmp_path):
    code, lines = run_cli(
        "run",
        "--prompt",
        "the sea",
        "--image",
        str(big_portrait(tmp_path)),
        "--voice",
        str(voice_path()),
        "--set",
        "upscale_video.model_name_0=RealESRGAN_x8.pth",
    )
    assert (code, lines) == (2, [f"error: {X8_LINE}"])
    assert stored_job_files(spinbot_env) == []


# ---- checked again by the tasks --------------------------------------------------------------------------------------


def test_the_talk_task_checks_its_real_video_before_it_renders(spinbot_env, use_settings, tmp_path, monkeypatch):
    def prepare(*args):
        raise AssertionError("infinite_talk began its work")

    monkeypatch.setattr(AnimatorBackend, "prepare", prepare)
    use_settings(max_video_pixels=512 * 512 * 100)  # 4 s at 25 fps of the astronaut; the Beckett sample is 10 s
    with pytest.raises(VideoTooLarge, match=r"^infinite_talk: the video would be 2\d\d frames of 512x512 \(") as err:
        run_talk(tmp_path, portrait_path(tmp_path), voice_path())
    assert str(err.value).endswith(
        "over the limit of 26,214,400 (SPINBOT_MAX_VIDEO_PIXELS); to get under it: lower infinite_talk.fps, make the "
        "script shorter or use a smaller portrait"
    )
    assert LocalStore(tmp_path / "store").list("jobs/") == []


def test_the_talk_task_checks_the_upscaled_video_on_its_real_speech_before_it_renders(
    spinbot_env, use_settings, tmp_path, monkeypatch
):
    """Admission estimates "Ever tried. Ever failed." at 1.6 s (15 characters a second); espeak says it in about
    3.5 s. The upscaled video that real speech makes was refused only by upscale_video, after infinite_talk had
    rendered: now infinite_talk holds it to the limit with its own, before it renders."""
    from spinbot.control.requests import JobRequest
    from spinbot.control.runner import Runner

    def prepare(*args):
        raise AssertionError("infinite_talk began its work")

    monkeypatch.setattr(AnimatorBackend, "prepare", prepare)
    use_settings(max_video_pixels=1024 * 1024 * 60)  # 2.4 s at 25 fps of the astronaut at x2; 9.6 s of the talk
    runner = Runner()
    params = {"script": {"text": "Ever tried. Ever failed."}}
    request = JobRequest(prompt="x", image=portrait_path(tmp_path), voice=voice_path(), ref_text="x", params=params)
    job = runner.run(runner.create_job(request))  # admission passed it: 40 frames estimated
    assert job.status == "failed"
    assert re.fullmatch(
        r"node 'infinite_talk' \(infinite_talk\) failed: upscale_video: the video would be \d\d frames of 1024x1024 "
        r"\(\d\.\d s of speech at 25 fps\): [\d,]+ pixels, over the limit of 62,914,560 \(SPINBOT_MAX_VIDEO_PIXELS\); "
        r"to get under it: lower infinite_talk.fps, make the script shorter, use an upscaler of a smaller factor "
        r"\(upscale_video.model_name_0 is x2\) or use a smaller portrait",
        job.error or "",
    ), job.error
    assert [(n.node_id, n.status) for n in job.nodes][2:] == [("infinite_talk", "failed"), ("upscale_video", "pending")]
    assert not (spinbot_env / "jobs" / job.id / "infinite_talk").exists()


def test_the_videos_after_a_talking_head_travel_with_its_task_request(spinbot_env):
    """What the control plane sends infinite_talk (Runner._request), through the queue's JSON as a worker reads it."""
    spec = get_pipeline("f5tts_infinitetalk")
    params = {"upscale_video": {"model_name_0": "4x-UltraSharp.pth", "frame_load_cap": 10}}
    derived = derived_videos(spec, params, "infinite_talk", get_settings())
    assert derived == [DerivedVideo(upscales=(Upscale(node_id="upscale_video", scale=4, frame_load_cap=10),))]
    assert derived_videos(spec, params, "upscale_video", get_settings()) == []
    request = TaskRequest(job_id="j", node_id="infinite_talk", task="infinite_talk", derived_videos=derived)
    assert TaskRequest.model_validate(json.loads(request.model_dump_json())) == request


def upscale(folder: Path, **params):
    """upscale_video on a 20-frame 96x96 clip (test_upscale's helpers)."""
    return upscale_clip(write_clip(folder / "talk.mp4", frames=20, side=96), folder / "store", **params)


def test_the_upscale_task_checks_its_real_video_before_its_first_batch(
    spinbot_env, use_settings, tmp_path, monkeypatch
):
    def upscale_batch(*args):
        raise AssertionError("upscale_video began its work")

    monkeypatch.setattr(ResampleUpscaler, "upscale_batch", upscale_batch)
    x4 = "RealESRGAN_x4plus.pth"
    use_settings(max_video_frame_pixels=384 * 384 - 1)
    with pytest.raises(VideoTooLarge) as err:
        upscale(tmp_path, model_name_0=x4)
    assert str(err.value) == (
        "upscale_video: the upscaled video would have 384x384 frames (147,456 pixels), over the limit of 147,455 "
        "pixels a frame (SPINBOT_MAX_VIDEO_FRAME_PIXELS); to get under it: use an upscaler of a smaller factor "
        "(upscale_video.model_name_0 is x4)"
    )
    use_settings(max_video_frame_pixels=384 * 384, max_video_pixels=384 * 384 * 19)
    with pytest.raises(VideoTooLarge, match=r"would be 20 frames of 384x384 \(0.8 s of video at 25 fps\)"):
        upscale(tmp_path, model_name_0=x4)
    assert LocalStore(tmp_path / "store").list("jobs/") == []


def test_a_running_job_runs_its_nodes_on_its_graphs_pipeline_not_the_file_read_again(
    spinbot_env, use_settings, tmp_path
):
    # the control plane read the pipelines file again for each node's request: a running job whose pipeline was
    # renamed in it failed with an unclear error before its next node started
    from spinbot.control.requests import JobRequest
    from spinbot.control.runner import Runner
    from spinbot.samples import portrait_path, voice_path

    runner = Runner()
    job = runner.jobs.get(runner.create_job(JobRequest(prompt="hi", image=portrait_path(tmp_path), voice=voice_path())))
    spec = get_pipeline(job.pipeline)
    other = tmp_path / "pipelines.json"
    other.write_text(
        json.dumps({"other": {"nodes": [{"id": "s", "task": "script.generateScript", "plane": "node"}], "edges": []}})
    )
    use_settings(pipelines=other)
    assert runner._request(job, job.node("infinite_talk"), {}, spec).derived_videos  # the job's pipeline: one upscale
    output = runner.run_node(job.id, "script", {}, spec=spec)
    assert output["values"]["text"] and runner.jobs.get(job.id).node("script").status == "succeeded"
