"""Requests of a black-box probe of the API (2026-12-05) that got a 500, grew the server's memory or reached files
they should not: each test fails on the code before its fix."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from spinbot.api.app import create_app
from spinbot.samples import voice_path
from tests.support.api_client import local_client

KEY = "key-a-123"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def client(spinbot_env, use_settings):
    use_settings(api_keys=KEY)
    with local_client(create_app()) as c:
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


def test_a_multipart_boundary_over_the_parsers_limit_is_a_400_not_a_500(client):
    boundary = "b" * 300  # RFC 2046 allows 70; python-multipart refuses more than 256 when the parser is made
    answer = client.post(
        "/v1/uploads",
        headers={**AUTH, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        content=f"--{boundary}\r\n".encode(),
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"].startswith("malformed multipart body: Boundary length 300 exceeds")


def test_requests_with_invented_methods_add_no_metric_series(client):
    for n in range(3):
        assert client.request(f"PROBE{n}{'X' * 1000}", "/healthz").status_code == 405
    metrics = client.get("/metrics", headers=AUTH).text
    assert "PROBE" not in metrics
    assert 'spinbot_http_requests_total{method="other",route="/healthz",status="405"} 3.0' in metrics


def test_uploads_sent_at_once_stay_within_the_keys_quota(spinbot_env, use_settings):
    """Each measured what the key held before any of them was stored: four at once all passed a quota of one."""
    quota = 1024 * 1024  # the least the setting takes
    buffer = io.BytesIO()
    sf.write(buffer, np.random.default_rng(0).standard_normal(22 * 16000) * 0.1, 16000, format="WAV")
    voice = buffer.getvalue()  # 704 KB: one fits the quota, two do not
    use_settings(api_keys=KEY, max_upload_storage_bytes=quota)
    with local_client(create_app()) as client:

        async def send_four() -> list[int]:
            transport = httpx.ASGITransport(app=client.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                answers = await asyncio.gather(
                    *(
                        http.post("/v1/uploads", data={"kind": "voice"}, files={"file": ("v.wav", voice)}, headers=AUTH)
                        for _ in range(4)
                    )
                )
            return [a.status_code for a in answers]

        statuses = asyncio.run(send_four())
        store = client.app.state.services.runner.artifacts
        assert store.usage("uploads/").bytes <= quota
        assert statuses.count(201) <= 1 and set(statuses) <= {201, 413}, statuses


def test_an_upload_is_stored_by_its_content_not_the_clients_name_or_type(client, monkeypatch):
    """The client's Content-Type went onto the S3 object (presigned for SPINBOT_S3_PUBLIC_URL, a portrait that was
    also HTML was served as text/html there) and its file name's suffix into the stored name."""
    store, stored = client.app.state.services.runner.artifacts, []
    real_upload = store.upload

    def recording_upload(src, key, content_type=None):
        stored.append((key.rsplit("/", 1)[1], content_type))
        real_upload(src, key, content_type)

    monkeypatch.setattr(store, "upload", recording_upload)
    jpeg = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(jpeg, format="JPEG")
    html = b"<html><script>alert(document.domain)</script></html>"
    assert upload(client, "portrait", "page.html", jpeg.getvalue() + html, "text/html").status_code == 201
    assert upload(client, "voice", "voice.svg", voice_path().read_bytes(), "image/svg+xml").status_code == 201
    assert stored == [("portrait.jpg", "image/jpeg"), ("voice.wav", "audio/x-wav")]
