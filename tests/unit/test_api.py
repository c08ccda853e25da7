"""The HTTP API on embedded defaults (SQLite, local store, in-process queue), through FastAPI's TestClient."""

import json
import time
from pathlib import Path

import pytest
from PIL import Image

from spinbot.api.app import create_app
from spinbot.samples import portrait_path, voice_path
from spinbot.settings import reset_settings
from tests.support.api_client import local_client, stored

KEY_A, KEY_B = "key-a-123", "key-b-456"


@pytest.fixture
def client(spinbot_env, monkeypatch):
    monkeypatch.setenv("SPINBOT_API_KEYS", f"{KEY_A},{KEY_B}")
    monkeypatch.setenv("SPINBOT_MAX_UPLOAD_BYTES", str(2 * 1024 * 1024))
    reset_settings()
    with local_client(create_app()) as c:
        yield c


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def upload(client, kind: str, path: Path, key: str = KEY_A, name: str | None = None):
    with open(path, "rb") as f:
        return client.post(
            "/v1/uploads", data={"kind": kind}, files={"file": (name or path.name, f)}, headers=auth(key)
        )


def test_health_pipelines_and_metrics(client):
    assert client.get("/healthz").json()["status"] == "ok"
    names = [p["name"] for p in client.get("/v1/pipelines", headers=auth(KEY_A)).json()["pipelines"]]
    assert names == ["f5tts_infinitetalk"]
    assert "spinbot_http_requests_total" in client.get("/metrics", headers=auth(KEY_B)).text


def test_requests_without_a_known_key_are_refused(client):
    r = client.get("/v1/jobs")
    assert r.status_code == 401 and "API key" in r.json()["error"]
    assert client.get("/v1/jobs", headers=auth("nope")).status_code == 401


def test_uploads_are_checked_by_content_and_bad_ones_write_nothing(client, spinbot_env, tmp_path):
    text = tmp_path / "portrait.png"
    text.write_text("this is text pretending to be a png")
    r = upload(client, "portrait", text)
    assert r.status_code == 400 and "not an image" in r.json()["error"]
    r = upload(client, "voice", text, name="voice.wav")
    assert r.status_code == 400 and "not audio" in r.json()["error"]
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * (3 * 1024 * 1024))
    r = upload(client, "portrait", big)
    assert r.status_code == 413 and "limit" in r.json()["error"]
    strip = tmp_path / "strip.png"
    Image.new("RGB", (20000, 64)).save(strip)
    r = upload(client, "portrait", strip)
    assert r.status_code == 400 and r.json()["error"] == (
        "the portrait upload is refused: the portrait is 20000x64: one side is more than 4x the other "
        "(crop it closer to the face)"
    )
    r = client.post("/v1/uploads", data={"kind": "video"}, files={"file": ("a.png", b"x")}, headers=auth(KEY_A))
    assert r.status_code == 422 and r.json()["error"].startswith("kind:")
    assert stored(spinbot_env) == []
    # a real portrait named .txt is accepted: the name does not matter
    good = upload(client, "portrait", portrait_path(tmp_path), name="portrait.txt")
    assert good.status_code == 201
    assert len(stored(spinbot_env)) == 1


def test_bad_job_requests_get_4xx_json_and_write_nothing(client, spinbot_env, tmp_path):
    image = upload(client, "portrait", portrait_path(tmp_path)).json()["id"]
    voice = upload(client, "voice", voice_path()).json()["id"]
    before = stored(spinbot_env)
    body = {"prompt": "hi", "image": image, "voice": voice}
    cases = [
        (b"{not json", 400, "malformed JSON"),
        (json.dumps({**body, "pipeline": "nope"}).encode(), 400, "unknown pipeline 'nope'"),
        (
            json.dumps({**body, "params": {"infinite_talk": {"fsp": 3}}}).encode(),
            400,
            "infinite_talk.fsp: unknown param",
        ),
        (json.dumps({**body, "params": {"f5_to_tts": {"nfe_step": "x"}}}).encode(), 400, "f5_to_tts.nfe_step"),
        (json.dumps({**body, "image": voice}).encode(), 400, "unknown portrait upload"),
        (json.dumps({"prompt": "hi"}).encode(), 422, "image: Field required"),
    ]
    for raw, status, message in cases:
        r = client.post("/v1/jobs", content=raw, headers={**auth(KEY_A), "Content-Type": "application/json"})
        assert r.status_code == status, (raw, r.text)
        assert message in r.json()["error"]
    # Key B cannot use key A's uploads
    r = client.post("/v1/jobs", json=body, headers=auth(KEY_B))
    assert r.status_code == 400 and "unknown portrait upload" in r.json()["error"]
    assert stored(spinbot_env) == before
    assert client.get("/v1/jobs", headers=auth(KEY_A)).json()["total"] == 0


def test_a_job_runs_and_other_keys_get_404(client, tmp_path):
    image = upload(client, "portrait", portrait_path(tmp_path)).json()["id"]
    voice = upload(client, "voice", voice_path()).json()["id"]
    r = client.post(
        "/v1/jobs",
        json={"prompt": "the sea", "image": image, "voice": voice, "params": {"script": {"text": "Hello there."}}},
        headers=auth(KEY_A),
    )
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    assert [n["id"] for n in r.json()["nodes"]] == ["script", "f5_to_tts", "infinite_talk", "upscale_video"]
    assert client.get(f"/v1/jobs/{job_id}", headers=auth(KEY_B)).status_code == 404
    assert client.get("/v1/jobs", headers=auth(KEY_B)).json()["total"] == 0
    listed = client.get("/v1/jobs", headers=auth(KEY_A)).json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == job_id
    deadline = time.time() + 120
    while time.time() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", headers=auth(KEY_A)).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.2)
    assert job["nodes"][0]["status"] == "succeeded" and job["script"] == "Hello there."
    for art in job["artifacts"]:
        assert client.get(art["url"], headers=auth(KEY_B)).status_code == 404
        got = client.get(art["url"], headers=auth(KEY_A))
        assert got.status_code == 200 and len(got.content) == art["size"]
