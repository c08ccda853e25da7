"""What one key's uploads may hold (SPINBOT_MAX_UPLOAD_STORAGE_BYTES), and deleting an upload no job uses. Before
these, a key could upload 50 MB at a time without end, and an upload no job named stayed forever."""

from __future__ import annotations

import pytest

from spinbot.api.app import create_app
from spinbot.samples import voice_path
from tests.support.api_client import local_client

KEY_A, KEY_B = "key-a-123", "key-b-456"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def client(spinbot_env, use_settings):
    quota = int(voice_path().stat().st_size * 2.5)  # room for two voice samples
    use_settings(api_keys=f"{KEY_A},{KEY_B}", max_upload_storage_bytes=max(quota, 1024 * 1024))
    with local_client(create_app()) as c:
        yield c


def upload_voice(client, key: str = KEY_A):
    with open(voice_path(), "rb") as f:
        return client.post("/v1/uploads", data={"kind": "voice"}, files={"file": ("v.wav", f)}, headers=auth(key))


def test_a_keys_uploads_stop_at_their_quota_and_deleting_one_makes_room(client, use_settings):
    size = voice_path().stat().st_size
    quota = client.app.state.settings.max_upload_storage_bytes
    accepted = []
    for _ in range(quota // size + 2):
        answer = upload_voice(client)
        if answer.status_code != 201:
            break
        accepted.append(answer.json()["id"])
    assert len(accepted) == quota // size
    assert answer.status_code == 413 and "SPINBOT_MAX_UPLOAD_STORAGE_BYTES" in answer.json()["error"]
    assert upload_voice(client, KEY_B).status_code == 201  # another key's quota is its own
    assert client.delete(f"/v1/uploads/{accepted[0]}", headers=auth(KEY_A)).status_code == 204
    assert upload_voice(client).status_code == 201


def test_an_upload_a_job_uses_is_not_deleted_and_another_keys_is_not_found(client):
    voice = upload_voice(client).json()["id"]
    jobs = client.app.state.services.runner.jobs
    job_id = jobs.new_id()
    key = next(k for k in client.app.state.services.runner.artifacts.list("uploads/") if voice in k)
    owner = key.split("/")[1]
    jobs.create_job(job_id, "f5tts_infinitetalk", [], {"values": {}, "artifacts": {"narrator_voice": key}}, {}, owner)
    answer = client.delete(f"/v1/uploads/{voice}", headers=auth(KEY_A))
    assert answer.status_code == 409 and "deleting that job deletes it" in answer.json()["error"]
    assert client.delete(f"/v1/uploads/{voice}", headers=auth(KEY_B)).status_code == 404
    assert client.delete(f"/v1/uploads/{'x' * 5000}", headers=auth(KEY_A)).status_code == 404


def test_a_key_keeps_at_most_its_limit_of_uploads_however_small(spinbot_env, use_settings, tmp_path):
    """Bytes alone let one key keep millions of 69-byte portraits (2 GiB / 69), and every upload's quota check lists
    them all: with 100,000 of them each next upload took 10 s. The number is bounded too."""
    from PIL import Image

    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (64, 64), (200, 100, 50)).save(tiny)  # the smallest portrait
    use_settings(api_keys=f"{KEY_A},{KEY_B}", max_upload_files=3)

    def upload(key: str = KEY_A):
        with open(tiny, "rb") as f:
            return client.post(
                "/v1/uploads", data={"kind": "portrait"}, files={"file": ("t.png", f)}, headers=auth(key)
            )

    with local_client(create_app()) as client:
        ids = [upload().json()["id"] for _ in range(3)]
        answer = upload()
        assert answer.status_code == 413
        assert answer.json() == {
            "error": "you have 3 uploads, the limit (SPINBOT_MAX_UPLOAD_FILES=3); delete uploads or jobs you no "
            "longer need"
        }
        assert len(client.app.state.services.runner.artifacts.list("uploads/")) == 3  # nothing more stored
        assert upload(KEY_B).status_code == 201  # another key's limit is its own
        assert client.delete(f"/v1/uploads/{ids[0]}", headers=auth(KEY_A)).status_code == 204
        assert upload().status_code == 201
