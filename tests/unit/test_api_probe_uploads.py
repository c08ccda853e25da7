"""Requests of a black-box probe of the API (2026-12-05) that reached further than they should: each test fails on the
code before its fix."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from fastapi.testclient import TestClient

from spinbot.api.app import create_app
from spinbot.samples import voice_path

KEY = "key-a-123"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def client(spinbot_env, use_settings):
    use_settings(api_keys=KEY)
    with TestClient(create_app()) as c:
        yield c


def upload(client, kind: str, name: str, data: bytes, content_type: str = "application/octet-stream"):
    return client.post("/v1/uploads", data={"kind": kind}, files={"file": (name, data, content_type)}, headers=AUTH)


def m4a(path: Path, seconds: float = 3.0, rate: int = 16000) -> Path:
    """AAC in an mp4 container: a file the server holds (another job's video, say)."""
    noise = (np.random.default_rng(0).standard_normal(int(seconds * rate)) * 0.1).astype(np.float32)
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(noise[None, :], format="flt", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return path


def test_a_voice_that_is_a_playlist_of_a_file_on_the_server_is_refused(client, tmp_path):
    # FFmpeg's HLS demuxer opens the segments a playlist names: this "voice" was decoded as another file's audio
    other = m4a(tmp_path / "jobs-other-talk.mp4")
    playlist = f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{other}\n#EXT-X-ENDLIST\n".encode()
    answer = upload(client, "voice", "voice.m3u8", playlist)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "the voice upload is not audio that can be decoded"
    assert upload(client, "voice", "voice.m4a", other.read_bytes()).status_code == 201  # the file itself is fine
    assert upload(client, "voice", "voice.wav", voice_path().read_bytes()).status_code == 201
