"""Regression tests for the API defects of the hardening issue (one or more per defect, each failing on the code
before the fix), through FastAPI's TestClient or the ASGI app itself, on embedded defaults.

(Past 400 lines: one test or more per defect of one issue, numbered as the issue numbers them, so that each
fix's regression test is found next to the others.)"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from pathlib import Path

import pytest

from spinbot.api.app import create_app
from spinbot.api.auth import MEDIA_COOKIE, RedactQuerySecrets, media_token, owner_of
from spinbot.api.web import WEB_DIR
from spinbot.samples import portrait_path, voice_path
from spinbot.settings import reset_settings
from spinbot.state.store import JobStore
from tests.support.api_client import local_client
from tests.support.hostile_media import png_claiming, silent_flac

KEY_A, KEY_B, METRICS_KEY = "key-a-123", "key-b-456", "scraper-789"
LIMIT = 2 * 1024 * 1024
NODES = [("script", "script.generateScript", "node"), ("f5_to_tts", "f5_to_tts", "python")]


@pytest.fixture
def client(spinbot_env, monkeypatch):
    monkeypatch.setenv("SPINBOT_API_KEYS", f"{KEY_A},{KEY_B}")
    monkeypatch.setenv("SPINBOT_METRICS_KEY", METRICS_KEY)
    monkeypatch.setenv("SPINBOT_MAX_UPLOAD_BYTES", str(LIMIT))
    monkeypatch.setenv("SPINBOT_MAX_VOICE_SECONDS", "20")
    reset_settings()
    with local_client(create_app()) as c:
        yield c


def auth(key: str = KEY_A) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def upload(client, kind: str, path: Path, key: str = KEY_A):
    with open(path, "rb") as f:
        return client.post("/v1/uploads", data={"kind": kind}, files={"file": (path.name, f)}, headers=auth(key))


def stored_files(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "uploads").rglob("*") if p.is_file()] if (data_dir / "uploads").exists() else []


def services(client):
    return client.app.state.services


def make_job(client, key: str = KEY_A, status: str = "failed", error: str | None = None) -> str:
    """A job row straight in the store (no run), owned by `key`."""
    jobs: JobStore = services(client).runner.jobs
    job_id = jobs.new_id()
    jobs.create_job(
        job_id, "f5tts_infinitetalk", NODES, {"values": {"prompt": "p"}, "artifacts": {}}, {}, owner_of(key)
    )
    jobs.set_job_status(job_id, status, error)
    return job_id


def add_artifact(client, job_id: str, data: bytes = b"RIFF-fake-wav-bytes") -> str:
    store, jobs = services(client).runner.artifacts, services(client).runner.jobs
    key = f"jobs/{job_id}/f5_to_tts/speech.wav"
    store.put_bytes(key, data)
    jobs.node_succeeded(
        job_id,
        "f5_to_tts",
        {"values": {}, "artifacts": {"audio": key}, "meta": {}},
        [{"name": "speech.wav", "key": key, "size": len(data), "content_type": "audio/wav"}],
    )
    return f"/v1/jobs/{job_id}/artifacts/f5_to_tts/speech.wav"


# ---- 1. uploads: the key and the size before the body --------------------------------------------------------
def call_upload_asgi(app, headers: dict[str, str], chunks: int, chunk_size: int = 256 * 1024) -> tuple[int, int]:
    """POST /v1/uploads through the ASGI app with a body of `chunks` chunks; returns (status, body bytes the app
    pulled before it answered)."""
    pulled, status = 0, None
    first = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
    body = b"x" * chunk_size

    async def receive():
        nonlocal pulled
        if pulled >= chunks * chunk_size:
            return {"type": "http.disconnect"}
        pulled += chunk_size
        data = first + body[len(first) :] if pulled == chunk_size else body
        return {"type": "http.request", "body": data, "more_body": pulled < chunks * chunk_size}

    async def send(message):
        nonlocal status
        if message["type"] == "http.response.start" and status is None:
            status = message["status"]
            sent_at[0] = pulled

    sent_at = [0]
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/uploads",
        "raw_path": b"/v1/uploads",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "scheme": "http",
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1234),
        "root_path": "",
        "http_version": "1.1",
        "asgi": {"version": "3.0"},
        "state": {},
    }
    asyncio.run(app(scope, receive, send))
    return status, sent_at[0]


def test_upload_without_a_key_is_refused_before_its_body_is_read(client):
    multipart = {"Content-Type": "multipart/form-data; boundary=xyz"}
    status, pulled = call_upload_asgi(client.app, {**multipart, "Content-Length": str(1 << 30)}, chunks=4096)
    assert (status, pulled) == (401, 0)


def test_upload_over_the_limit_is_refused_from_its_content_length_before_its_body_is_read(client):
    headers = {**auth(), "Content-Type": "multipart/form-data; boundary=xyz", "Content-Length": str(1 << 30)}
    status, pulled = call_upload_asgi(client.app, headers, chunks=4096)
    assert (status, pulled) == (413, 0)


def test_upload_over_the_limit_names_the_limit_in_mib_as_json(client):
    r = client.post(
        "/v1/uploads", headers=auth(), data={"kind": "portrait"}, files={"file": ("a.png", b"0" * (LIMIT + 1))}
    )
    assert r.status_code == 413
    assert r.json()["error"] == f"upload is larger than the limit of 2 MiB ({LIMIT} bytes, SPINBOT_MAX_UPLOAD_BYTES)"


def test_upload_without_a_length_stops_reading_once_past_the_limit(client, spinbot_env):
    headers = {**auth(), "Content-Type": "multipart/form-data; boundary=xyz", "Transfer-Encoding": "chunked"}
    status, pulled = call_upload_asgi(client.app, headers, chunks=4096)  # 1 GiB offered
    assert status == 413 and pulled <= LIMIT + 512 * 1024
    assert stored_files(spinbot_env) == []


def test_refused_upload_answers_with_connection_close(client, tmp_path):
    r = client.post(
        "/v1/uploads", headers={"Content-Type": "multipart/form-data; boundary=x"}, content=b"--x\r\n" + b"a" * 1000
    )
    assert r.status_code == 401 and r.headers["connection"] == "close"


# ---- 2 and 3. decompression bombs and decoder failures -------------------------------------------------------
def never_decoded(monkeypatch, module, name: str) -> None:
    """The decoder `name` of `module` fails the test if called: a refusal from the header alone (checked by what was
    called, not by how long it took, which a loaded machine stretches)."""

    def refuse(*args, **kwargs):
        pytest.fail(f"{name} was called: the file was decoded")

    monkeypatch.setattr(module, name, refuse)


def test_png_claiming_30000x30000_is_refused_from_its_header_naming_the_limit(
    client, tmp_path, spinbot_env, monkeypatch
):
    from spinbot.media import image

    bomb = png_claiming(tmp_path / "bomb.png", 30000, 30000)
    assert bomb.stat().st_size < 100_000
    never_decoded(monkeypatch, image, "_decode")
    r = upload(client, "portrait", bomb)
    assert r.status_code == 400, r.text
    assert "900,000,000 pixels" in r.json()["error"] and "SPINBOT_MAX_IMAGE_PIXELS" in r.json()["error"]
    assert stored_files(spinbot_env) == []


def test_png_over_the_limit_is_refused_with_its_size(client, tmp_path):
    r = upload(client, "portrait", png_claiming(tmp_path / "big.png", 8000, 6000))
    assert r.status_code == 400 and "8000x6000 (48,000,000 pixels), over the limit of 40,000,000" in r.json()["error"]


def test_png_claiming_60000x60000_is_a_400_json_error_not_a_500(client, tmp_path):
    r = upload(client, "portrait", png_claiming(tmp_path / "huge.png", 60000, 60000))
    assert r.status_code == 400 and r.headers["content-type"] == "application/json"
    assert "SPINBOT_MAX_IMAGE_PIXELS" in r.json()["error"]


def test_image_with_a_good_header_and_broken_pixels_is_a_400_json_error(client, tmp_path):
    broken = png_claiming(tmp_path / "broken.png", 64, 64, payload=10)  # IDAT far too short for 64x64
    r = upload(client, "portrait", broken)
    assert r.status_code == 400 and "not an image that can be decoded" in r.json()["error"]


def test_silent_flac_of_two_hours_is_refused_from_its_header_naming_the_limit(
    client, tmp_path, spinbot_env, monkeypatch
):
    from spinbot.media import audio

    bomb = silent_flac(tmp_path / "silence.flac", 2 * 3600)
    assert bomb.stat().st_size < 1_500_000
    never_decoded(monkeypatch, audio, "load_audio")
    r = upload(client, "voice", bomb)
    assert r.status_code == 400, r.text
    assert "7200.0 s" in r.json()["error"] and "SPINBOT_MAX_VOICE_SECONDS" in r.json()["error"]
    assert stored_files(spinbot_env) == []


def test_voice_over_the_limit_is_refused_and_a_real_voice_is_accepted(client, tmp_path):
    r = upload(client, "voice", silent_flac(tmp_path / "long.flac", 25))  # the fixture's limit is 20 s
    assert r.status_code == 400 and "SPINBOT_MAX_VOICE_SECONDS" in r.json()["error"]
    assert upload(client, "voice", voice_path()).status_code == 201
    assert upload(client, "portrait", portrait_path(tmp_path)).status_code == 201


# ---- 8. no key in URLs or logs; the media cookie -------------------------------------------------------------
def test_api_key_in_the_query_string_is_refused_on_every_keyed_route(client):
    job_id = make_job(client)
    for path in (
        "/v1/jobs",
        f"/v1/jobs/{job_id}",
        f"/v1/jobs/{job_id}/events",
        "/v1/pipelines",
        "/metrics",
        f"/v1/jobs/{job_id}/artifacts/f5_to_tts/speech.wav",
    ):
        client.cookies.clear()
        r = client.get(f"{path}?api_key={KEY_A}")
        assert r.status_code == 401, path
        assert "not accepted in the URL" in r.json()["error"] or path == "/metrics"


def test_access_log_masks_a_key_in_a_query_string():
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        "",
        0,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1", "GET", f"/v1/jobs?limit=2&api_key={KEY_A}", "1.1", 401),
        None,
    )
    RedactQuerySecrets().filter(record)
    assert KEY_A not in record.getMessage() and "api_key=***" in record.getMessage()


def test_media_cookie_opens_events_and_artifacts_of_its_owner_only(client):
    job_id = make_job(client, status="succeeded")
    url = add_artifact(client, job_id)
    client.cookies.clear()
    assert client.get(url).status_code == 401
    assert client.get(f"/v1/jobs/{job_id}", headers=auth()).status_code == 200  # any keyed call sets the cookie
    cookie = client.cookies.get(MEDIA_COOKIE)
    assert cookie and KEY_A not in cookie
    assert client.get(url).content == b"RIFF-fake-wav-bytes"
    events = client.get(f"/v1/jobs/{job_id}/events")
    assert events.status_code == 200 and "event: snapshot" in events.text
    # the cookie opens only the routes elements load by URL
    assert client.get("/v1/jobs").status_code == 401
    # key B's cookie does not open key A's job
    client.cookies.clear()
    client.get("/v1/jobs", headers=auth(KEY_B))
    assert client.get(url).status_code == 404


def test_forged_and_expired_media_cookies_are_refused(client):
    job_id = make_job(client, status="succeeded")
    url = add_artifact(client, job_id)
    expired = media_token(KEY_A, int(time.time()) - 1)
    forged = media_token("not-a-configured-key", int(time.time()) + 600)
    owner, expires, _ = media_token(KEY_A, int(time.time()) + 600).split(".")
    tampered = f"{owner}.{int(expires) + 10**6}.{media_token(KEY_A, int(time.time()) + 600).split('.')[2]}"
    for token in (expired, forged, tampered, "garbage"):
        client.cookies.clear()
        client.cookies.set(MEDIA_COOKIE, token)
        assert client.get(url).status_code == 401, token


def test_page_script_puts_no_key_in_urls():
    script = (WEB_DIR / "api.js").read_text()
    assert "api_key" not in script


# ---- 9. auth decided per route -------------------------------------------------------------------------------
def test_each_route_asks_for_what_it_documents(client):
    for path in ("/v1/pipelines", "/v1/params", "/metrics", "/v1/jobs"):
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers=auth()).status_code == 200, path
    assert client.get("/metrics", headers=auth(METRICS_KEY)).status_code == 200
    assert client.get("/v1/jobs", headers=auth(METRICS_KEY)).status_code == 401  # the metrics key is only that
    for path in ("/healthz", "/readyz", "/docs", "/openapi.json", "/"):
        assert client.get(path).status_code == 200, path


# ---- 10. nothing internal reaches clients --------------------------------------------------------------------
def test_job_errors_reach_clients_without_endpoints_keys_or_paths(client):
    s3_failure = (
        "node 'upscale_video' (upscale_video) failed: cannot reach the S3 endpoint for s3://spinbot-it: "
        'Could not connect to the endpoint URL: "http://10.1.2.3:9000/spinbot-it/jobs/abc/upscale_video/'
        'video.mp4"'
    )
    job_id = make_job(client, error=s3_failure)
    services(client).runner.jobs.node_status(
        job_id,
        "f5_to_tts",
        "failed",
        error="[Errno 2] No such file: '/srv/spinbot/data/jobs/abc/x/speech.wav' (key AKIAABCDEFGHIJKLMNOP)",
    )
    body = client.get(f"/v1/jobs/{job_id}", headers=auth()).text
    for internal in ("10.1.2.3", "http://", "s3://", "jobs/abc", "/srv/", "AKIA"):
        assert internal not in body, internal
    job = json.loads(body)
    assert job["error"] == (
        "node 'upscale_video' (upscale_video) failed: the artifact storage could not be used; retry the job later"
    )
    assert "speech.wav" in job["nodes"][1]["error"]


# ---- 11. readiness of every dependency -----------------------------------------------------------------------
def test_readyz_reports_each_dependency_and_503_when_one_is_down(client, monkeypatch):
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready"
    assert set(ready["dependencies"]) == {"database", "redis", "storage", "backends"}
    assert ready["dependencies"]["redis"]["detail"] == "not configured"
    assert ready["dependencies"]["backends"]["detail"] == "not configured"  # lite backends: nothing to import
    readiness = services(client).readiness
    monkeypatch.setattr(readiness.settings, "redis_url", "redis://127.0.0.1:9/0")  # nothing listens there
    started = time.monotonic()
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["dependencies"]["redis"] == {
        **r.json()["dependencies"]["redis"],
        "ok": False,
        "detail": "unreachable",
    }
    assert r.json()["dependencies"]["database"]["ok"] and time.monotonic() - started < 5


# ---- 12. concurrent retries, security headers, offline docs --------------------------------------------------
def test_concurrent_retries_of_a_failed_job_give_one_202_and_409s(client, monkeypatch):
    job_id = make_job(client, error="boom")
    submitted = []
    monkeypatch.setattr(services(client).executor, "submit", submitted.append)
    barrier, statuses = threading.Barrier(8), []

    def retry():
        barrier.wait()
        statuses.append(client.post(f"/v1/jobs/{job_id}/retry", headers=auth()).status_code)

    threads = [threading.Thread(target=retry) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [202] + [409] * 7 and submitted == [job_id]
    r = client.post(f"/v1/jobs/{job_id}/retry", headers=auth())
    assert r.status_code == 409 and "only failed jobs" in r.json()["error"]


def test_page_and_api_answers_carry_security_headers(client):
    for path in ("/", "/web/app.js", "/healthz", "/docs"):
        r = client.get(path)
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY", path
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"], path
    page_csp = client.get("/").headers["content-security-policy"]
    assert "script-src 'self';" in page_csp and "unsafe-inline" not in page_csp


def test_docs_load_swagger_from_this_server_only(client):
    html = client.get("/docs").text
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any(url.endswith("swagger-ui-bundle.js") for url in urls)
    assert all(url.startswith("/") for url in urls), urls  # no CDN
    for url in urls:
        assert client.get(url).status_code == 200, url
    assert client.get("/openapi.json").json()["info"]["title"] == "SpinBot"


# ---- typed responses ------------------------------------------------------------------------------------------
def test_openapi_documents_every_body_and_error_code(client):
    spec = client.get("/openapi.json").json()
    expected = {
        ("post", "/v1/uploads"): {"201", "400", "401", "413", "422"},
        ("post", "/v1/jobs"): {"201", "400", "401", "422"},
        ("get", "/v1/jobs/{job_id}"): {"200", "401", "404", "422"},
        ("post", "/v1/jobs/{job_id}/retry"): {"202", "401", "404", "409", "422"},
        ("delete", "/v1/jobs/{job_id}"): {"204", "401", "404", "409", "422"},
        ("get", "/v1/jobs/{job_id}/artifacts/{node_id}/{name}"): {"200", "401", "404"},
    }
    for (method, path), codes in expected.items():
        responses = spec["paths"][path][method]["responses"]
        assert codes <= set(responses), (method, path, sorted(responses))
        for code in codes - {"200", "201", "202", "204"}:
            assert responses[code]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            ok = next(c for c in op["responses"] if c.startswith("2"))
            assert ok == "204" or op["responses"][ok].get("content"), (method, path)
    assert "HTTPValidationError" not in json.dumps(spec)
    assert spec["paths"]["/v1/uploads"]["post"]["requestBody"]["content"]["multipart/form-data"]


# ---- DELETE /v1/jobs/{id} ------------------------------------------------------------------------------------
def test_delete_calls_the_runner_for_the_owner_only(client, monkeypatch):
    job_id = make_job(client, status="succeeded")
    deleted = []
    monkeypatch.setattr(services(client).runner, "delete_job", deleted.append)
    assert client.delete(f"/v1/jobs/{job_id}", headers=auth(KEY_B)).status_code == 404
    assert deleted == []
    r = client.delete(f"/v1/jobs/{job_id}", headers=auth())
    assert r.status_code == 204 and deleted == [job_id]
