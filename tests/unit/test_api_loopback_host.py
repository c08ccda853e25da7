"""Without API keys the server answers only requests addressed to the loopback (a probe of 2026-12-05: a keyless
`spinbot serve` on 127.0.0.1 answered `Host: attacker.example:8000` in full, so a web page that rebinds its own name
to 127.0.0.1 could list the jobs and download the portraits, voice samples and videos, and upload and submit)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from spinbot.api.app import create_app
from spinbot.api.loopback import loopback_host
from spinbot.watch import _serve
from tests.support.api_client import local_client

ELSEWHERE = ["attacker.example", "attacker.example:8000", "127.0.0.1.nip.io", "localhost.attacker.example", "10.0.0.1"]


# `user@host`, a query, a port that is none and an IPv6 zone passed as the loopback when the Host was parsed as a
# URL's authority (a probe of 2026-12-05); no browser sends them, and none names the loopback alone
MALFORMED = ["evil.example@localhost", "localhost?x=evil.example", "localhost:evil", "localhost:99999999", "[::1%25x]"]


@pytest.mark.parametrize("host", ELSEWHERE + MALFORMED + ["[::2]:8000", "[x]:80", "", "::1", "[127.0.0.1]"])
def test_a_host_that_is_not_loopback_is_refused(host):
    assert not loopback_host(host)


@pytest.mark.parametrize(
    "host",
    ["localhost", "localhost:8000", "LOCALHOST", "a.localhost:1", "127.0.0.1:8000", "127.1.2.3", "[::1]:8000", "[::1]"],
)
def test_loopback_names_and_addresses_are_answered(host):
    assert loopback_host(host)


@pytest.mark.parametrize("host", ELSEWHERE)
def test_a_keyless_server_refuses_a_request_to_another_host(spinbot_env, host):
    with TestClient(create_app(), base_url=f"http://{host}") as client:
        for answer in (client.get("/v1/jobs"), client.get("/healthz"), client.post("/v1/jobs", json={})):
            assert answer.status_code == 400
            assert answer.json()["error"] == (
                f"Host '{host}' is not this machine's loopback: without API keys (SPINBOT_API_KEYS) the server "
                "answers only requests to localhost or 127.0.0.1"
            )


def test_a_keyless_server_answers_its_loopback_names(spinbot_env):
    app = create_app()
    for base in ("http://localhost", "http://127.0.0.1:8000", "http://[::1]:8000"):
        with TestClient(app, base_url=base) as client:
            assert client.get("/v1/jobs").status_code == 200


def test_with_keys_any_host_may_ask(spinbot_env, use_settings):
    """Keys decide there (and a server with keys may sit behind any name)."""
    use_settings(api_keys="key-a-123")
    with TestClient(create_app(), base_url="http://spinbot.example.com") as client:
        assert client.get("/v1/jobs", headers={"Authorization": "Bearer key-a-123"}).status_code == 200


def test_the_watch_server_refuses_another_host_too(spinbot_env):
    import httpx

    from spinbot.control.runner import Runner

    with _serve(Runner(), 0) as url:
        port = url.rsplit(":", 1)[1]
        job = "0" * 32
        refused = httpx.get(
            f"{url}/v1/jobs/{job}/live/infinite_talk/index.m3u8", headers={"Host": f"evil.example:{port}"}
        )
        assert refused.status_code == 400 and "is not this machine's loopback" in refused.json()["error"]
        assert httpx.get(f"{url}/v1/jobs/{job}/live/infinite_talk/index.m3u8").status_code == 404  # asked as it is


def test_local_client_is_answered(spinbot_env):
    with local_client(create_app()) as client:
        assert client.get("/healthz").status_code == 200
