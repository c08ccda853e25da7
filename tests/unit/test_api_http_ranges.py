"""Range requests on every file the API serves (spinbot/api/files.py): one range served, an unsatisfiable one a JSON
416 with `Content-Range: bytes */SIZE`, anything else ignored (the whole file, 200), and If-Range honoured; for a local
store's artifacts, live segments and the page's files, and for S3 objects streamed through the API."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from spinbot.api.app import create_app
from spinbot.api.auth import owner_of
from spinbot.settings import reset_settings
from spinbot.tasks.live import live_key
from tests.support import services as test_services
from tests.support.api_client import local_client

KEY = "key-a-123"
DATA = bytes(range(256)) * 40  # 10,240 bytes
SIZE = len(DATA)
NODES = [("f5_to_tts", "f5_to_tts", "python"), ("infinite_talk", "infinite_talk", "python")]


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


def make_client(monkeypatch, **env: str) -> TestClient:
    monkeypatch.setenv("SPINBOT_API_KEYS", KEY)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reset_settings()
    return local_client(create_app())


def artifact_url(client: TestClient) -> str:
    """A job of KEY with one artifact (DATA) and one live segment (DATA), written straight to the store."""
    runner = client.app.state.services.runner
    job_id = runner.jobs.new_id()
    runner.jobs.create_job(job_id, "f5tts_infinitetalk", NODES, {"values": {}, "artifacts": {}}, {}, owner_of(KEY))
    key = f"jobs/{job_id}/f5_to_tts/speech.wav"
    runner.artifacts.put_bytes(key, DATA, content_type="audio/wav")
    runner.artifacts.put_bytes(live_key(job_id, "infinite_talk", "seg-00000.ts"), DATA, "video/mp2t")
    record = {"name": "speech.wav", "key": key, "size": SIZE, "content_type": "audio/wav"}
    runner.jobs.node_succeeded(job_id, "f5_to_tts", {"values": {}, "artifacts": {"audio": key}, "meta": {}}, [record])
    return f"/v1/jobs/{job_id}/artifacts/f5_to_tts/speech.wav"


@pytest.fixture
def client(spinbot_env, monkeypatch):
    with make_client(monkeypatch) as c:
        yield c


@pytest.fixture
def url(client) -> str:
    return artifact_url(client)


def get(client: TestClient, url: str, range_header: str, **headers: str):
    return client.get(url, headers={**auth(), "Range": range_header, **headers})


# (Range header, the bytes expected: a slice for a 206, None for the whole file with 200)
SERVED = [
    ("bytes=0-0", slice(0, 1)),
    ("bytes=10-19", slice(10, 20)),
    ("bytes=10-", slice(10, SIZE)),
    ("bytes=-5", slice(SIZE - 5, SIZE)),
    ("bytes=-99999999999", slice(0, SIZE)),  # a suffix longer than the file: all of it
    ("bytes=0-" + "9" * 5000, slice(0, SIZE)),  # a last byte past the end (and past int()'s 4,300 digits)
    ("BYTES=0-3", slice(0, 4)),  # the unit is case-insensitive
]
IGNORED = [
    "items=0-3",  # an unknown unit MUST be ignored (RFC 9110 section 14.2); Starlette answered 400
    "bytes=abc",
    "bytes=5-3",  # last before first: an invalid range
    "bytes=-",
    "bytes=--5",  # Starlette read a suffix of -5 bytes: 416
    "bytes=1_0-2_0",  # int() reads 1_0 as 10; the grammar has digits only
    "bytes=0-1,2-3",  # several ranges: no multipart answer
    "bytes=0-1,99999999-",  # Starlette: 416 for the whole header
    "bytes=" + ",".join(f"{i}-{i}" for i in range(0, 200, 2)),  # 100 one-byte ranges: 100 part headers
]
UNSATISFIABLE = ["bytes=10240-", "bytes=999999999-", "bytes=" + "9" * 5000 + "-", "bytes=-0"]


@pytest.mark.parametrize(("header", "part"), SERVED)
def test_one_range_is_served_as_a_206(client, url, header, part):
    answer = get(client, url, header)
    assert answer.status_code == 206, answer.text
    assert answer.content == DATA[part]
    assert answer.headers["content-range"] == f"bytes {part.start}-{part.stop - 1}/{SIZE}"


@pytest.mark.parametrize("header", IGNORED)
def test_any_other_range_header_is_ignored_and_the_whole_file_sent(client, url, header):
    answer = get(client, url, header)
    assert answer.status_code == 200, answer.text
    assert answer.content == DATA and "content-range" not in answer.headers


@pytest.mark.parametrize("header", UNSATISFIABLE)
def test_an_unsatisfiable_range_is_a_json_416_with_the_size(client, url, header):
    answer = get(client, url, header)
    assert answer.status_code == 416
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["content-range"] == f"bytes */{SIZE}"
    assert answer.json() == {"error": f"range not satisfiable: the file has {SIZE:,} bytes"}


def test_if_range_keeps_the_range_only_while_its_validator_is_current(client, url):
    whole = client.get(url, headers=auth())
    etag, modified = whole.headers["etag"], whole.headers["last-modified"]
    for current in (etag, modified):
        assert get(client, url, "bytes=0-9", **{"If-Range": current}).status_code == 206
    for stale in ('"other"', f"W/{etag}", "Mon, 01 Jan 2001 00:00:00 GMT"):
        answer = get(client, url, "bytes=0-9", **{"If-Range": stale})
        assert answer.status_code == 200 and answer.content == DATA
    # a stale validator drops the Range before it is judged: the new whole file, not a 416
    assert get(client, url, "bytes=999999-", **{"If-Range": '"other"'}).status_code == 200


def test_live_segments_and_the_page_s_files_answer_ranges_the_same_way(client, url):
    segment = url.replace("artifacts/f5_to_tts/speech.wav", "live/infinite_talk/seg-00000.ts")
    for target in (segment, "/web/app.js", "/"):
        bad = get(client, target, "bytes=999999999-")
        assert bad.status_code == 416 and bad.headers["content-type"] == "application/json", target
        assert bad.json()["error"].startswith("range not satisfiable")
        assert get(client, target, "items=0-3").status_code == 200
        assert get(client, target, "bytes=0-3").status_code == 206
    assert get(client, segment, "bytes=0-3").content == DATA[:4]


def test_a_page_file_the_browser_has_is_a_304_before_its_range_is_judged(client):
    etag = client.get("/web/app.js").headers["etag"]
    answer = client.get("/web/app.js", headers={"If-None-Match": etag, "Range": "bytes=999999999-"})
    assert answer.status_code == 304


def test_an_artifact_whose_file_is_gone_is_a_json_404_not_a_500(client, url, spinbot_env):
    (file,) = (spinbot_env / "jobs").rglob("speech.wav")
    file.unlink()
    answer = client.get(url, headers=auth())
    assert answer.status_code == 404
    assert answer.json() == {"error": "file speech.wav is no longer stored"}


# ---- S3: the object streamed through the API ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint():
    with test_services.moto_s3() as endpoint:
        yield endpoint


@pytest.fixture
def s3_client(spinbot_env, monkeypatch, s3_endpoint):
    bucket = f"spinbot-{uuid.uuid4().hex[:12]}"
    for name, value in test_services.TEST_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    test_services.create_bucket(s3_endpoint, bucket)
    env = {"SPINBOT_STORAGE_URL": f"s3://{bucket}", "SPINBOT_S3_ENDPOINT_URL": s3_endpoint}
    with make_client(monkeypatch, **env) as c:
        yield c


@pytest.mark.parametrize(("header", "part"), SERVED[:5])
def test_s3_one_range_is_served_as_a_206(s3_client, header, part):
    answer = get(s3_client, artifact_url(s3_client), header)
    assert answer.status_code == 206 and answer.content == DATA[part]
    assert answer.headers["content-range"] == f"bytes {part.start}-{part.stop - 1}/{SIZE}"


@pytest.mark.parametrize("header", ["bytes=5-3", "bytes=-", "bytes=0-1,2-3", "items=0-3"])
def test_s3_other_range_headers_get_the_whole_object(s3_client, header):
    answer = get(s3_client, artifact_url(s3_client), header)
    assert answer.status_code == 200 and answer.content == DATA


@pytest.mark.parametrize("header", UNSATISFIABLE)
def test_s3_an_unsatisfiable_range_is_a_416_with_the_size(s3_client, header):
    answer = get(s3_client, artifact_url(s3_client), header)
    assert answer.status_code == 416 and answer.headers["content-range"] == f"bytes */{SIZE}"
    assert answer.json() == {"error": f"range not satisfiable: the file has {SIZE:,} bytes"}


def test_s3_a_range_with_if_range_gets_the_whole_object(s3_client):
    # the streamed answer carries no validator, so no If-Range can name the current object
    answer = get(s3_client, artifact_url(s3_client), "bytes=0-9", **{"If-Range": '"an-old-etag"'})
    assert answer.status_code == 200 and answer.content == DATA


def test_s3_an_artifact_whose_object_is_gone_is_a_json_404_not_a_500(s3_client):
    url = artifact_url(s3_client)
    job_id = url.split("/")[3]
    s3_client.app.state.services.runner.artifacts.delete_prefix(f"jobs/{job_id}/")
    answer = s3_client.get(url, headers=auth())
    assert answer.status_code == 404
    assert answer.json() == {"error": "file speech.wav is no longer stored"}


def test_s3_a_live_segment_is_streamed_with_ranges_not_read_whole(s3_client, monkeypatch):
    """A live segment (a window, an upscaler's batch: megabytes) was read whole into the server's memory for each
    request and written at once, so every client that read slowly held a copy; and it ignored Range on S3."""
    from spinbot.storage.s3 import S3Store

    segment = artifact_url(s3_client).replace("artifacts/f5_to_tts/speech.wav", "live/infinite_talk/seg-00000.ts")
    read_whole = []
    monkeypatch.setattr(S3Store, "get_bytes", lambda self, key: read_whole.append(key))
    answer = get(s3_client, segment, "bytes=0-3")
    assert answer.status_code == 206 and answer.content == DATA[:4]
    assert answer.headers["content-type"] == "video/mp2t"
    whole = s3_client.get(segment, headers=auth())
    assert whole.status_code == 200 and whole.content == DATA and read_whole == []
    gone = s3_client.get(segment.replace("seg-00000", "seg-00001"), headers=auth())
    assert gone.status_code == 404 and gone.json()["error"].startswith("no live segment 'seg-00001.ts'")
