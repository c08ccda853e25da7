"""`spinbot models pull` against a hub-speaking server on loopback (tests/support/fake_hub.py, HF_ENDPOINT pointed
at it): files fetched through huggingface_hub and plain HTTP, sha256-verified, a cut download resumed with a Range
request, a file whose hash differs refused with nothing left under its final name, HF_TOKEN sent."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import in_ci

if not in_ci():  # CI installs the gpu extra (huggingface_hub): its absence is a failure there, not a skip
    pytest.importorskip("huggingface_hub")

from spinbot.cli import app
from spinbot.models import manifest
from spinbot.models.manifest import Source
from spinbot.models.pull import STAGING
from tests.support.fake_hub import COMMIT, start_fake_hub

MB = 1024 * 1024
UPSCALER, RESTORER, DETECTOR = (
    "upscale_models/RealESRGAN_x2.pth",
    "facerestore_models/codeformer.pth",
    "facedetection/detection_Resnet50_Final.pth",
)


def blob(size: int, seed: int) -> bytes:
    return hashlib.sha256(str(seed).encode()).digest() * (size // 32) + b"x" * (size % 32)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def hub(monkeypatch):
    server_hub, server = start_fake_hub()
    monkeypatch.setenv("HF_ENDPOINT", server_hub.url)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    yield server_hub
    server.shutdown()


@pytest.fixture
def sources(monkeypatch):
    """An empty manifest (no test ever reaches a real source) and a setter for the sources a test serves."""
    table: dict[str, Source] = {}
    monkeypatch.setattr(manifest, "SOURCES", table)

    def put(relpath: str, source: Source) -> None:
        table[relpath] = source

    return put


def pull(models: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["models", "pull", "--task", "upscale_video", "--models-dir", str(models), *extra])
    return result.exit_code, result.output


def test_pull_fetches_verifies_and_resumes_a_cut_download(hub, sources, tmp_path):
    # 24 MB, cut after 16: huggingface_hub has written its first 10 MB chunk and resumes with a Range request;
    # the plain-URL file likewise resumes after its first 8 MB chunk.
    upscaler, restorer, detector = blob(24 * MB, 1), blob(20 * MB, 2), blob(3000, 3)
    hub.add_hub_file("test/upscale", "weights/RealESRGAN_x2.pth", upscaler, cut_at=16 * MB)
    hub.add_hub_file("test/detect", "detection_Resnet50_Final.pth", detector)
    url = hub.add_url_file("codeformer.pth", restorer, cut_at=12 * MB)
    sources(UPSCALER, Source("test/upscale", COMMIT, "weights/RealESRGAN_x2.pth", sha256=sha(upscaler)))
    sources(DETECTOR, Source("test/detect", "main", "detection_Resnet50_Final.pth"))  # hash from the hub's etag
    sources(RESTORER, Source(url=url, sha256=sha(restorer), size=len(restorer)))

    code, output = pull(tmp_path)

    assert code == 0, output
    for relpath, data in ((UPSCALER, upscaler), (RESTORER, restorer), (DETECTOR, detector)):
        assert (tmp_path / relpath).read_bytes() == data
    assert f"sha256 {sha(upscaler)}, verified against the manifest, commit {COMMIT}" in output
    assert f"sha256 {sha(detector)}, verified against the hub etag" in output
    assert hub.ranged_gets("RealESRGAN_x2.pth") == [f"bytes={10 * MB}-"]  # resumed, not restarted
    assert hub.ranged_gets("codeformer.pth") == [f"bytes={8 * MB}-"]
    hub_requests = [r for r in hub.requests if "/resolve/" in r.path]
    assert hub_requests and all(r.authorization == "Bearer hf_test_token" for r in hub_requests)
    assert not (tmp_path / STAGING).exists()
    assert not list(tmp_path.rglob("*.part")) and not list(tmp_path.rglob("*.incomplete"))

    code, output = pull(tmp_path)  # everything present: nothing fetched again
    assert code == 0 and "pulled" not in output


def test_a_hash_that_differs_is_refused_and_leaves_no_file(hub, sources, tmp_path):
    good, corrupt = blob(2 * MB, 4), blob(2 * MB, 5)
    # The hub's etag agrees with the manifest but the bytes served differ (a corrupted transfer or mirror).
    hub.add_hub_file("test/upscale", "RealESRGAN_x2.pth", corrupt, etag=sha(good))
    # The hub says the file is another one than the manifest pins: refused before any download.
    hub.add_hub_file("test/detect", "detection_Resnet50_Final.pth", corrupt)
    url = hub.add_url_file("codeformer.pth", corrupt)
    sources(UPSCALER, Source("test/upscale", COMMIT, "RealESRGAN_x2.pth", sha256=sha(good)))
    sources(DETECTOR, Source("test/detect", COMMIT, "detection_Resnet50_Final.pth", sha256=sha(good)))
    sources(RESTORER, Source(url=url, sha256=sha(good)))

    code, output = pull(tmp_path)

    assert code == 1
    assert f"RealESRGAN_x2.pth: downloaded file has sha256 {sha(corrupt)}, expected {sha(good)}; removed" in output
    assert f"codeformer.pth: downloaded file has sha256 {sha(corrupt)}, expected {sha(good)}; removed" in output
    assert f"has sha256 {sha(corrupt)} on the hub, the manifest pins {sha(good)}; not downloaded" in output
    assert not [r for r in hub.requests if r.method == "GET" and r.path.endswith("detection_Resnet50_Final.pth")]
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert leftovers == [], leftovers


def test_a_plain_url_download_cut_short_in_an_earlier_run_resumes(hub, sources, tmp_path):
    data, detector = blob(5 * MB, 6), blob(1000, 7)
    sources(RESTORER, Source(url=hub.add_url_file("codeformer.pth", data), sha256=sha(data), size=len(data)))
    sources(DETECTOR, Source(url=hub.add_url_file("detector.pth", detector), sha256=sha(detector)))
    part = tmp_path / (RESTORER + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(data[: 3 * MB])

    code, output = pull(tmp_path, "--set", "upscale_video.model_name_0=mine.pth")

    assert (tmp_path / RESTORER).read_bytes() == data
    assert hub.ranged_gets("codeformer.pth") == [f"bytes={3 * MB}-"]
    assert not part.exists()
    assert (tmp_path / DETECTOR).read_bytes() == detector
    assert code == 1 and "upscale_models/mine.pth: no known source" in output  # the override names no seed file


def test_a_file_missing_from_the_hub_is_one_line(hub, sources, tmp_path):
    sources(UPSCALER, Source("test/upscale", COMMIT, "nope.pth", sha256="0" * 64))
    code, output = pull(tmp_path)
    assert code == 1
    line = next(line for line in output.splitlines() if "RealESRGAN_x2.pth" in line)
    assert f"hf://test/upscale@{COMMIT}/nope.pth: 404" in line
    assert not (tmp_path / UPSCALER).exists()


def test_sources_that_cannot_be_reached_are_one_line_for_all_files(sources, tmp_path, monkeypatch):
    """Offline, `pull` printed one error per file (17 for the native set, and progress bars for the GitHub files
    after 5 retries each): now the hosts that take no connection are one line, their other files not tried."""
    from tests.support.services import free_port

    hub_port, url_port = free_port(), free_port()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{hub_port}")  # nothing listens there
    sources(UPSCALER, Source("test/upscale", COMMIT, "RealESRGAN_x2.pth", sha256="0" * 64))
    sources(RESTORER, Source(url=f"http://127.0.0.1:{url_port}/codeformer.pth", sha256="1" * 64, size=10))
    sources(DETECTOR, Source(url=f"http://127.0.0.1:{url_port}/detector.pth", sha256="2" * 64, size=10))
    models = tmp_path / "models"

    code, output = pull(models)

    assert code == 1, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith(f"error: cannot reach 127.0.0.1:{hub_port}, 127.0.0.1:{url_port} (")
    assert f"3 files not downloaded ({UPSCALER}, ...)" in lines[0]
    assert "HF_ENDPOINT" in lines[0] and "spinbot models list" in lines[0]
    assert not models.exists()  # no empty folders left behind


def test_the_manifest_pins_every_seed_default():
    """Every file the default params name has a source, Hub files with a revision and every big file a sha256."""
    from spinbot.models.layouts import LAYOUTS, layout_for
    from spinbot.tasks.catalog import load_task

    for task in LAYOUTS:
        for f in layout_for(task).files(load_task(task).params_model(), Path("/models")):
            if not f.required and f.source is None:
                continue
            assert f.source is not None, f.relpath
            assert f.source.url or f.source.revision, f.relpath
    assert all(len(s.sha256) == 64 for s in manifest.SOURCES.values() if s.sha256)
