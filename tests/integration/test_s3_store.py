"""S3Store against a real S3-speaking server: moto on a free loopback port, started by the tests themselves.

No skips: boto3 and moto are test dependencies, and the server needs nothing from the machine, so these run
everywhere (CI included).
"""

from __future__ import annotations

import hashlib
import os
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from spinbot.errors import StorageKeyError
from spinbot.settings import get_settings, reset_settings
from spinbot.storage.base import open_store
from spinbot.storage.s3 import BucketMissing, S3Store
from tests.support import services

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
BAD_KEYS = ["../x", "/abs", "jobs/../../x", "jobs//x"]


@pytest.fixture(scope="module")
def s3_endpoint():
    with services.moto_s3() as endpoint:
        yield endpoint


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch: pytest.MonkeyPatch) -> str:
    """Settings and fake AWS credentials pointing at the moto server; returns its endpoint."""
    for name, value in services.TEST_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    for name in (
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "SPINBOT_S3_REGION",
        "SPINBOT_S3_MULTIPART_THRESHOLD",
        "SPINBOT_S3_MULTIPART_CHUNKSIZE",
        "SPINBOT_S3_PRESIGN_SECONDS",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SPINBOT_S3_ENDPOINT_URL", s3_endpoint)
    reset_settings()
    yield s3_endpoint
    reset_settings()


def new_bucket() -> str:
    # moto keeps one state for the whole module: a bucket per test keeps the tests independent.
    return f"spinbot-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def store(s3_env) -> S3Store:
    store = S3Store.from_url(f"s3://{new_bucket()}")
    assert store.ensure_bucket() is True
    yield store
    store.close()


def count_requests(store: S3Store) -> list:
    sent: list = []
    store.client.meta.events.register("before-send.s3", lambda request, **_: sent.append(request.url))
    return sent


def test_roundtrip_put_get_upload_download_list_delete(store: S3Store, tmp_path: Path):
    src = tmp_path / "a.wav"
    src.write_bytes(b"RIFF....")
    store.upload(src, "jobs/job1/tts/speech.wav", content_type="audio/wav")
    store.put_bytes("jobs/job1/script/script.txt", b"hello", content_type="text/plain")
    store.put_bytes("jobs/job10/script/script.txt", b"other job")

    assert store.exists("jobs/job1/tts/speech.wav") and store.size("jobs/job1/tts/speech.wav") == 8
    assert store.get_bytes("jobs/job1/script/script.txt") == b"hello"
    head = store.client.head_object(Bucket=store.bucket, Key="jobs/job1/tts/speech.wav")
    assert head["ContentType"] == "audio/wav"
    store.download("jobs/job1/tts/speech.wav", tmp_path / "out" / "copy.wav")
    assert (tmp_path / "out" / "copy.wav").read_bytes() == b"RIFF...."

    # A prefix names a folder, as in LocalStore: job1 never lists job10.
    assert store.list("jobs/job1") == ["jobs/job1/script/script.txt", "jobs/job1/tts/speech.wav"]
    assert store.list("jobs/job1/") == store.list("jobs/job1")
    assert len(store.list("")) == 3
    assert store.delete_prefix("jobs/job1") == 2
    assert store.list("jobs/job1") == [] and store.list("jobs") == ["jobs/job10/script/script.txt"]
    assert not store.exists("jobs/job1/tts/speech.wav")


def test_delete_prefix_pages_past_one_batch(store: S3Store):
    # More keys than one ListObjects page or one DeleteObjects call (1000 each).
    for i in range(1005):
        store.client.put_object(Bucket=store.bucket, Key=f"jobs/big/n/{i:04d}", Body=b"")
    assert len(store.list("jobs/big")) == 1005
    assert store.delete_prefix("jobs/big") == 1005
    assert store.list("") == []


def test_prefix_inside_the_bucket(s3_env):
    bucket = new_bucket()
    store = S3Store.from_url(f"s3://{bucket}/tenant-a/")
    store.ensure_bucket()
    assert store.url == f"s3://{bucket}/tenant-a"
    store.put_bytes("jobs/j/n/x.txt", b"x")
    raw = store.client.list_objects_v2(Bucket=bucket)["Contents"]
    assert [o["Key"] for o in raw] == ["tenant-a/jobs/j/n/x.txt"]
    assert store.list("") == ["jobs/j/n/x.txt"] and store.get_bytes("jobs/j/n/x.txt") == b"x"
    assert store.delete_prefix("") == 1
    with pytest.raises(StorageKeyError):
        S3Store.from_url(f"s3://{bucket}/../escape")


def test_large_file_goes_up_in_parts_and_comes_back_identical(s3_env, monkeypatch, tmp_path: Path):
    monkeypatch.setenv("SPINBOT_S3_MULTIPART_THRESHOLD", str(5 * MiB))
    monkeypatch.setenv("SPINBOT_S3_MULTIPART_CHUNKSIZE", str(5 * MiB))
    reset_settings()
    store = S3Store.from_url(f"s3://{new_bucket()}")
    store.ensure_bucket()
    big = tmp_path / "big.mp4"
    big.write_bytes(os.urandom(11 * MiB))
    store.upload(big, "jobs/j/upscale/video.mp4", content_type="video/mp4")
    store.put_bytes("jobs/j/script/small.txt", b"small")

    etag = store.client.head_object(Bucket=store.bucket, Key="jobs/j/upscale/video.mp4")["ETag"].strip('"')
    assert etag.endswith("-3"), f"expected a 3-part multipart ETag, got {etag}"  # 5 + 5 + 1 MiB
    small = store.client.head_object(Bucket=store.bucket, Key="jobs/j/script/small.txt")["ETag"]
    assert "-" not in small
    assert store.size("jobs/j/upscale/video.mp4") == 11 * MiB
    store.download("jobs/j/upscale/video.mp4", tmp_path / "back.mp4")
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert digest(tmp_path / "back.mp4") == digest(big)


def test_presigned_get_url_serves_the_bytes(store: S3Store):
    store.put_bytes("jobs/j/talk/video.mp4", b"\x00\x01video bytes")
    url = store.presigned_url("jobs/j/talk/video.mp4", 60)
    assert "X-Amz-Expires=60" in url and "X-Amz-Signature=" in url
    with urllib.request.urlopen(url, timeout=10) as reply:
        assert reply.read() == b"\x00\x01video bytes"
    assert f"X-Amz-Expires={get_settings().s3_presign_seconds}" in store.presigned_url("jobs/j/talk/video.mp4")
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(store.presigned_url("jobs/j/talk/nothing.mp4"), timeout=10)
    assert missing.value.code == 404
    with pytest.raises(ValueError):
        store.presigned_url("jobs/j/talk/video.mp4", 8 * 24 * 3600)


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_refused_before_any_request(store: S3Store, tmp_path: Path, key: str):
    sent = count_requests(store)
    src = tmp_path / "src.bin"
    src.write_bytes(b"data")
    calls = [
        lambda: store.upload(src, key),
        lambda: store.download(key, tmp_path / "out"),
        lambda: store.put_bytes(key, b"x"),
        lambda: store.get_bytes(key),
        lambda: store.exists(key),
        lambda: store.size(key),
        lambda: store.list(key),
        lambda: store.delete_prefix(key),
        lambda: store.presigned_url(key),
    ]
    for call in calls:
        with pytest.raises(StorageKeyError):
            call()
    assert sent == []
    assert not (tmp_path / "out").exists()


def test_missing_key_is_file_not_found(store: S3Store, tmp_path: Path):
    for call in (
        lambda: store.get_bytes("jobs/j/n/none"),
        lambda: store.size("jobs/j/n/none"),
        lambda: store.download("jobs/j/n/none", tmp_path / "d" / "none"),
    ):
        with pytest.raises(FileNotFoundError, match="artifact 'jobs/j/n/none' not found"):
            call()
    assert store.exists("jobs/j/n/none") is False
    assert list((tmp_path / "d").iterdir()) == []  # no partial download left behind
    assert store.list("jobs/j") == [] and store.delete_prefix("jobs/j") == 0


def test_missing_bucket_is_one_clear_error_until_created(s3_env, tmp_path: Path):
    bucket = new_bucket()
    store = S3Store.from_url(f"s3://{bucket}")
    src = tmp_path / "src.bin"
    src.write_bytes(b"data")
    calls = [
        store.check_bucket,
        lambda: store.put_bytes("a/b", b"x"),
        lambda: store.get_bytes("a/b"),
        lambda: store.upload(src, "a/b"),
        lambda: store.download("a/b", tmp_path / "out"),
        lambda: store.exists("a/b"),
        lambda: store.size("a/b"),
        lambda: store.list(""),
        lambda: store.delete_prefix("a"),
    ]
    for call in calls:
        with pytest.raises(BucketMissing) as err:
            call()
        message = str(err.value)
        assert f"S3 bucket '{bucket}' does not exist at {s3_env}" in message and "\n" not in message
        assert message.endswith(
            f"create it first (aws s3 mb s3://{bucket} --endpoint-url {s3_env}; MinIO: mc mb ALIAS/{bucket})"
        )
    assert store.ensure_bucket() is True
    assert store.ensure_bucket() is False
    store.put_bytes("a/b", b"x")
    assert store.get_bytes("a/b") == b"x"


def test_open_store_uses_the_endpoint_setting(s3_env, monkeypatch):
    bucket = new_bucket()
    monkeypatch.setenv("SPINBOT_STORAGE_URL", f"s3://{bucket}")
    reset_settings()
    store = open_store(get_settings().resolved_storage_url)
    assert isinstance(store, S3Store)
    assert store.endpoint_url == s3_env and store.url == f"s3://{bucket}"
    assert store.client.meta.config.s3["addressing_style"] == "path"  # MinIO-style servers need path-style
    store.ensure_bucket()
    store.put_bytes("jobs/j/n/f.txt", b"via open_store")
    assert store.get_bytes("jobs/j/n/f.txt") == b"via open_store"


def test_invalid_bucket_names_are_refused_without_a_request():
    for url in ("s3://", "s3://UPPER", "s3://a", "s3://bad_bucket"):
        with pytest.raises(StorageKeyError, match="invalid S3 bucket name"):
            S3Store.from_url(url)


def test_a_refused_connection_is_retried_with_backoff_until_the_server_is_back(s3_env, use_settings):
    """The S3 server is down (its port refuses connections) when a node writes, and back 2 s later: the write
    waits it out. botocore's old 5 attempts at 50 ms steps gave up within about half a second."""
    from moto.server import ThreadedMotoServer

    bucket = new_bucket()
    S3Store(bucket, endpoint_url=s3_env).ensure_bucket()  # moto keeps one state per process, shared by its servers
    port = services.free_port()
    assert not services.port_open(port)
    use_settings(s3_endpoint_url=f"http://127.0.0.1:{port}")
    store = S3Store.from_url(f"s3://{bucket}")
    sent = count_requests(store)
    restarted = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    timer = threading.Timer(2.0, restarted.start)
    timer.start()
    try:
        store.put_bytes("jobs/j1/node/out.bin", b"written after the outage")
        assert store.get_bytes("jobs/j1/node/out.bin") == b"written after the outage"
    finally:
        timer.cancel()
        timer.join()
        restarted.stop() if services.port_open(port) else None
        store.close()
    assert len(sent) > 2, "the write went through without any retry: the server was not down"


def test_retry_mode_and_attempts_come_from_settings(s3_env, use_settings):
    use_settings(s3_retry_mode="adaptive", s3_max_attempts=3)
    store = S3Store.from_url(f"s3://{new_bucket()}")
    retries = store.client.meta.config.retries
    assert retries["mode"] == "adaptive" and retries["total_max_attempts"] == 3
    use_settings(s3_endpoint_url="http://127.0.0.1:9")  # nothing listens on the discard port
    store = S3Store.from_url(f"s3://{new_bucket()}")
    sent = count_requests(store)
    with pytest.raises(Exception, match="cannot reach the S3 endpoint"):
        store.put_bytes("jobs/j1/node/out.bin", b"x")
    assert len(sent) == 3


def test_usage_sums_the_bytes_under_a_prefix(store: S3Store):
    store.put_bytes("uploads/a/1/voice.wav", b"x" * 300)
    store.put_bytes("uploads/a/2/portrait.png", b"y" * 20)
    store.put_bytes("uploads/b/3/voice.wav", b"z" * 5000)
    assert store.usage("uploads/a/") == (320, 2) and store.usage("uploads/b/") == (5000, 1)
    assert store.usage("uploads/c/") == (0, 0)


@pytest.mark.parametrize("client_leaves", [True, False])
def test_a_streamed_answer_closes_the_object_body_whether_or_not_the_client_stays(store, monkeypatch, client_leaves):
    import asyncio

    from starlette.requests import Request

    from spinbot.api.routes.artifacts import streamed

    store.put_bytes("jobs/j/n/big.bin", b"x" * (3 * 1024 * 1024))
    closed = []
    real = store.client.get_object

    def get_object(**kwargs):
        reply = real(**kwargs)
        body = reply["Body"]
        close = body.close
        body.close = lambda: (closed.append(True), close())
        return reply

    monkeypatch.setattr(store.client, "get_object", get_object)
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}
    response = streamed(store, "jobs/j/n/big.bin", "application/octet-stream", Request(scope))
    sent: list[dict] = []

    async def receive():
        if client_leaves:
            return {"type": "http.disconnect"}  # gone before the first chunk
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    asyncio.run(response(scope, receive, send))
    assert closed == [True]
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert (len(body) < 3 * 1024 * 1024) if client_leaves else len(body) == 3 * 1024 * 1024


def test_a_streamed_answer_abandoned_by_the_send_timeout_closes_the_object_body(store, monkeypatch):
    import asyncio

    from starlette.requests import Request

    from spinbot.api.limits import StalledClient
    from spinbot.api.routes.artifacts import streamed

    store.put_bytes("jobs/j/n/big.bin", b"x" * (3 * 1024 * 1024))
    closed = []
    real = store.client.get_object

    def get_object(**kwargs):
        reply = real(**kwargs)
        close = reply["Body"].close
        reply["Body"].close = lambda: (closed.append(True), close())
        return reply

    monkeypatch.setattr(store.client, "get_object", get_object)
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}
    response = streamed(store, "jobs/j/n/big.bin", "application/octet-stream", Request(scope))

    async def receive():
        await asyncio.sleep(3600)

    async def send(message):
        if message["type"] == "http.response.body":
            raise StalledClient  # what SlowReaderLimit's bounded send raises once a write waited too long

    with pytest.raises(StalledClient):
        asyncio.run(response(scope, receive, send))
    assert closed == [True]
