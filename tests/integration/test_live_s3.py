"""The live output with artifacts in S3 (moto on loopback): the talk task writes its segments and playlist through
the task context into the bucket, and the API serves them from there."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import pytest

from spinbot.api.app import create_app
from spinbot.api.auth import owner_of
from spinbot.control.dispatch import TaskRequest, execute_task
from spinbot.control.requests import JobRequest
from spinbot.media.audio import load_audio, write_wav
from spinbot.media.segments import ENDLIST
from spinbot.media.video import iter_frames
from spinbot.samples import portrait_path, voice_path
from spinbot.settings import reset_settings
from tests.support import services
from tests.support.api_client import local_client

pytestmark = pytest.mark.integration

KEY = "live-s3-key"


@pytest.fixture
def s3_app(spinbot_env, monkeypatch):
    with services.moto_s3() as endpoint:
        for name, value in services.TEST_AWS_ENV.items():
            monkeypatch.setenv(name, value)
        bucket = f"spinbot-live-{uuid.uuid4().hex[:8]}"
        monkeypatch.setenv("SPINBOT_S3_ENDPOINT_URL", endpoint)
        monkeypatch.setenv("SPINBOT_STORAGE_URL", f"s3://{bucket}")
        monkeypatch.setenv("SPINBOT_API_KEYS", KEY)
        monkeypatch.setenv("SPINBOT_TALK_MAX_PIXELS", str(192 * 192))
        reset_settings()
        app = create_app()
        app.state.services.runner.artifacts.ensure_bucket()
        with local_client(app) as client:
            yield client


def test_the_talk_tasks_live_output_goes_to_s3_and_plays_from_the_api(s3_app, tmp_path: Path):
    runner = s3_app.app.state.services.runner
    audio, rate = load_audio(voice_path())
    speech = write_wav(tmp_path / "speech.wav", audio[: int(2.5 * rate)], rate)
    job_id = runner.create_job(
        JobRequest(prompt="the sea", image=portrait_path(tmp_path), voice=speech, owner=owner_of(KEY))
    )
    inputs = runner.jobs.get(job_id).inputs["artifacts"]
    request = TaskRequest(
        job_id=job_id,
        node_id="infinite_talk",
        task="infinite_talk",
        params={"frame_window_size": 20, "motion_frame": 4},
        artifacts={"source_image": inputs["source_image"], "audio": inputs["narrator_voice"]},
    )
    output = execute_task(request, runner.artifacts, workdir_root=tmp_path)
    assert output.meta["live"]["segments"] == output.meta["windows"]["count"] >= 3

    headers = {"Authorization": f"Bearer {KEY}"}
    base = f"/v1/jobs/{job_id}/live/infinite_talk"
    playlist = s3_app.get(f"{base}/index.m3u8", headers=headers)
    assert playlist.status_code == 200 and ENDLIST not in playlist.text  # the node has not been recorded as ended
    runner.jobs.node_status(job_id, "infinite_talk", "succeeded")  # (the runner's part, which this test plays)
    playlist = s3_app.get(f"{base}/index.m3u8", headers=headers)
    assert playlist.text.rstrip().endswith(ENDLIST)
    names = re.findall(r"^seg-\d{5}\.ts$", playlist.text, flags=re.MULTILINE)
    assert len(names) == output.meta["live"]["segments"]
    joined = tmp_path / "joined.ts"
    with open(joined, "wb") as out:
        for name in names:
            got = s3_app.get(f"{base}/{name}", headers=headers)
            assert got.status_code == 200 and got.headers["content-type"] == "video/mp2t"
            out.write(got.content)
    talk = tmp_path / "talk.mp4"
    runner.artifacts.download(output.artifacts["video"], talk)
    assert sum(1 for _ in iter_frames(joined)) == sum(1 for _ in iter_frames(talk))


def test_run_watch_serves_the_live_playlist_from_s3_while_the_job_runs(s3_app, tmp_path: Path):
    import threading

    import httpx

    from spinbot.watch import watch

    runner = s3_app.app.state.services.runner
    job_id = runner.create_job(
        JobRequest(
            prompt="the sea",
            image=portrait_path(tmp_path),
            voice=voice_path(),
            params={
                "script": {"text": "Ever tried. Ever failed. No matter. Try again."},
                "infinite_talk": {"frame_window_size": 10, "motion_frame": 2},
            },
        )
    )
    said: list[str] = []
    seen: list[str] = []
    with watch(runner, job_id, said.append) as places:
        assert [line.split(":")[0] for line in said] == ["live infinite_talk", "live upscale_video"]
        assert "served by this command" in said[0]
        job = threading.Thread(target=runner.run, args=(job_id,))
        job.start()
        while job.is_alive() or not seen or ENDLIST not in seen[-1]:
            got = httpx.get(places[0], timeout=10)
            if got.status_code == 200:
                seen.append(got.text)
            elif not job.is_alive():
                break
            time.sleep(0.05)
        job.join()
        segment = httpx.get(places[0].replace("index.m3u8", "seg-00000.ts"), timeout=10)
        assert segment.status_code == 200 and segment.content[:1] == b"G"  # an MPEG-TS sync byte
    assert runner.jobs.get(job_id).status == "succeeded"
    assert any(ENDLIST not in text and "seg-00000.ts" in text for text in seen), "seen while still growing"
    assert ENDLIST in seen[-1]
    with pytest.raises(httpx.TransportError):
        httpx.get(places[0], timeout=2)  # served only while the command runs
