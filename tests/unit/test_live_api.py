"""GET /v1/jobs/{id}/live/{node}/index.m3u8 and its segments: the artifacts' auth, a live playlist while the node
runs, ENDLIST once it has ended, the segments' bytes from the store."""

from __future__ import annotations

import pytest

from spinbot.media.segments import ENDLIST, playlist_text
from spinbot.tasks.live import live_key
from tests.support.api_client import api_client, unrun_job

KEY_A, KEY_B = "key-a-123", "key-b-456"
SEGMENT = b"G" + bytes(187)  # one MPEG-TS packet's worth of bytes


@pytest.fixture
def client(spinbot_env, monkeypatch):
    with api_client(monkeypatch, KEY_A, KEY_B) as c:
        yield c


@pytest.fixture
def job_id(client, tmp_path) -> str:
    """A job of key A that is not run: the test plays the talk node's part by writing its live output."""
    return unrun_job(client, tmp_path, KEY_A)


def write_live(client, job_id: str, segments: int, ended: bool) -> None:
    store = client.app.state.services.runner.artifacts
    for index in range(segments):
        store.put_bytes(live_key(job_id, "infinite_talk", f"seg-{index:05d}.ts"), SEGMENT, "video/mp2t")
    store.put_bytes(live_key(job_id, "infinite_talk"), playlist_text([1.0] * segments, 1, ended).encode())


def url(job_id: str, name: str = "index.m3u8", node: str = "infinite_talk") -> str:
    return f"/v1/jobs/{job_id}/live/{node}/{name}"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_the_playlist_is_404_until_the_first_segment_and_then_stays_open_while_the_node_runs(client, job_id):
    missing = client.get(url(job_id), headers=auth(KEY_A))
    assert missing.status_code == 404 and "no live output yet" in missing.json()["error"]
    client.app.state.services.runner.jobs.node_started(job_id, "infinite_talk")
    write_live(client, job_id, segments=2, ended=False)
    got = client.get(url(job_id), headers=auth(KEY_A))
    assert got.status_code == 200
    assert got.headers["content-type"].startswith("application/vnd.apple.mpegurl")
    assert got.headers["cache-control"] == "no-store"
    assert "seg-00001.ts" in got.text and ENDLIST not in got.text


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_a_node_that_ended_early_gets_its_playlist_closed(client, job_id, status):
    write_live(client, job_id, segments=2, ended=False)
    client.app.state.services.runner.jobs.node_status(job_id, "infinite_talk", status, error="stopped")
    text = client.get(url(job_id), headers=auth(KEY_A)).text
    assert text.count(ENDLIST) == 1 and text.rstrip().endswith(ENDLIST)


def test_a_complete_playlist_ends_only_once_the_node_has_ended(client, job_id):
    write_live(client, job_id, segments=3, ended=True)
    client.app.state.services.runner.jobs.node_started(job_id, "infinite_talk")
    assert client.get(url(job_id), headers=auth(KEY_A)).text == playlist_text([1.0] * 3, 1, False)
    client.app.state.services.runner.jobs.node_status(job_id, "infinite_talk", "succeeded")
    assert client.get(url(job_id), headers=auth(KEY_A)).text == playlist_text([1.0] * 3, 1, True)


def test_segments_are_served_with_the_same_auth_as_artifacts(client, job_id):
    write_live(client, job_id, segments=1, ended=False)
    for path in (url(job_id), url(job_id, "seg-00000.ts")):
        client.cookies.clear()
        assert client.get(path).status_code == 401
        assert client.get(path, headers=auth("nope")).status_code == 401
        assert client.get(path, params={"api_key": KEY_A}).status_code == 401  # never a key in a URL
        other = client.get(path, headers=auth(KEY_B))
        assert other.status_code == 404 and "not found" in other.json()["error"]
    client.cookies.clear()
    got = client.get(url(job_id, "seg-00000.ts"), headers=auth(KEY_A))
    assert got.status_code == 200 and got.content == SEGMENT
    assert got.headers["content-type"] == "video/mp2t"


def test_players_that_load_by_url_get_the_playlist_and_segments_by_the_media_cookie(client, job_id):
    """hls.js sends the key in a header; a player that cannot (Safari's own HLS) has the page's media cookie."""
    write_live(client, job_id, segments=2, ended=False)
    client.cookies.clear()
    assert client.get(url(job_id)).status_code == 401
    assert client.get(f"/v1/jobs/{job_id}", headers=auth(KEY_A)).status_code == 200  # sets the media cookie
    playlist = client.get(url(job_id))
    assert playlist.status_code == 200
    segments = [line for line in playlist.text.splitlines() if line and not line.startswith("#")]
    assert segments == ["seg-00000.ts", "seg-00001.ts"], "relative URIs: the cookie goes with them"
    assert client.get(url(job_id, segments[1])).content == SEGMENT


@pytest.mark.parametrize(
    "node, name",
    [
        ("infinite_talk", "seg-00007.ts"),  # not written
        ("infinite_talk", "..%2F..%2Finputs%2Fsource_image.png"),
        ("infinite_talk", "talk.mp4"),  # not a segment name
        ("nope", "seg-00000.ts"),  # no such node
        ("nope", "index.m3u8"),
    ],
)
def test_anything_but_a_written_segment_of_a_node_is_404(client, job_id, node, name):
    write_live(client, job_id, segments=1, ended=False)
    got = client.get(url(job_id, name, node), headers=auth(KEY_A))
    assert got.status_code == 404 and got.json()["error"]


def test_an_unknown_job_is_404(client):
    assert client.get(url("0" * 32), headers=auth(KEY_A)).status_code == 404
    assert client.get(url("not-a-job-id"), headers=auth(KEY_A)).status_code == 404
