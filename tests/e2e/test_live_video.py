"""The job view plays the talking head while it renders (issue 15, point 1), in Debian's Chromium against the real
server with the lite backends: the live HLS output from its first window on, growing window by window, then the
final upscaled video. The timings go to test-artifacts/live-video.json."""

from __future__ import annotations

import json
import re
import urllib.request
from datetime import datetime

from tests.e2e.conftest import SCREENSHOTS
from tests.e2e.test_web import (
    FINAL,
    JOB_SECONDS,
    SHORT_SCRIPT,
    expect,
    fill_the_form,
    job_error,
    open_page,
    param_input,
    wait_for_job_end,
)

ARTIFACTS = SCREENSHOTS.parent
# About 12 s of speech in windows of 25 frames (1 s at 25 fps) with 5 of motion context: 1 s, then 0.8 s a window.
SCRIPT = " ".join([SHORT_SCRIPT] * 3)
WINDOW, MOTION = 25, 5
MAX_SHIFT_S = 0.15  # how far after a window's end the page may see it buffered (under a fifth of a window)

# Runs in the page from just before the submit: what the <video> plays and has buffered every 50 ms, and when the
# first frame of the live stream is presented (requestVideoFrameCallback).
RECORDER = """(finalStates) => {
  const video = document.querySelector("#final-video");
  const t0 = performance.now();
  const seconds = () => (performance.now() - t0) / 1000;
  const record = { samples: [], firstLiveFrame: null, jobEnded: null };
  window.liveRecord = record;
  const isLive = () => video.currentSrc.startsWith("blob:");  // hls.js plays through a MediaSource
  setInterval(() => {
    const buffered = video.buffered;
    const status = document.querySelector("#job-status").dataset.status;
    if (record.jobEnded === null && finalStates.includes(status)) record.jobEnded = seconds();
    record.samples.push({ t: seconds(), live: isLive(), src: video.currentSrc, time: video.currentTime,
      buffered: buffered.length ? buffered.end(buffered.length - 1) : 0, status });
  }, 50);
  const onFrame = () => {
    if (isLive()) record.firstLiveFrame = seconds();
    else video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
}"""


def raw_get(server, path: str) -> bytes:
    request = urllib.request.Request(server.url + path, headers={"Authorization": f"Bearer {server.api_key}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read()


def window_ends(playlist: str) -> list[float]:
    ends, total = [], 0.0
    for seconds in re.findall(r"#EXTINF:([0-9.]+),", playlist):
        total += float(seconds)
        ends.append(total)
    return ends


def steps(values: list[float]) -> list[float]:
    """The distinct values in the order they first appear."""
    seen: list[float] = []
    for value in values:
        if not seen or value != seen[-1]:
            seen.append(value)
    return seen


def seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def test_the_job_view_plays_the_video_while_later_windows_render(page, server, screenshot, tmp_path):
    open_page(page, server)
    fill_the_form(page, tmp_path)
    page.fill("#script_text", SCRIPT)
    page.click("#advanced summary")
    param_input(page, "infinite_talk.frame_window_size").fill(str(WINDOW))
    param_input(page, "infinite_talk.motion_frame").fill(str(MOTION))
    page.click("#advanced summary")
    page.evaluate(RECORDER, list(FINAL))
    page.click("#submit")
    expect(page.locator("#job")).to_be_visible()
    job_id = page.text_content("#job-id")

    page.wait_for_function(
        "() => window.liveRecord.firstLiveFrame !== null || window.liveRecord.jobEnded !== null",
        timeout=JOB_SECONDS * 1000,
    )
    screenshot(page, "job-live")
    assert wait_for_job_end(page) == "succeeded", job_error(page, server)
    job = server.get(f"/v1/jobs/{job_id}")
    final = next(a for a in job["artifacts"] if a["node_id"] == "upscale_video" and a["name"] == "video")
    page.wait_for_function("url => document.querySelector('#final-video').currentSrc.includes(url)", arg=final["url"])
    # the recorder samples every 50 ms: the status the wait above saw may not be in its record yet
    page.wait_for_function("() => window.liveRecord.jobEnded !== null")
    record = page.evaluate("window.liveRecord")

    talk = next(n for n in job["nodes"] if n["id"] == "infinite_talk")
    playlist = raw_get(server, f"/v1/jobs/{job_id}/live/infinite_talk/index.m3u8").decode()
    ends = window_ends(playlist)
    live = [s for s in record["samples"] if s["live"]]
    buffered = steps([s["buffered"] for s in live if s["buffered"] > 0])
    played = steps([s["time"] for s in live if s["time"] > 0])
    timings = {
        "time_to_first_live_frame_s": record["firstLiveFrame"],
        "job_end_seen_by_page_s": record["jobEnded"],
        "job_total_s": seconds_between(job["created_at"], job["finished_at"]),
        "infinite_talk_s": talk["seconds"],
        "windows": talk["meta"]["windows"]["count"],
        "window_ends_s": ends,
        "buffered_steps_s": buffered,
        "played_until_job_end_s": max((s["time"] for s in live if s["t"] <= record["jobEnded"]), default=0),
    }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "live-video.json").write_text(json.dumps(timings, indent=2) + "\n")

    assert talk["meta"]["windows"]["count"] >= 3 and talk["meta"]["live"]["segments"] == len(ends)
    assert record["firstLiveFrame"] is not None, f"the live video never showed a frame: {timings}"
    assert record["firstLiveFrame"] < record["jobEnded"], f"it plays before the job finishes: {timings}"
    # The buffer grows window by window: every buffered end the page saw is a window's end (all shifted alike: hls.js
    # starts its timeline at the audio's AAC priming), each a later window than the one before, at least three of
    # them before the whole talking head. (Once the stream ends, the last end moves to the longer of its audio and
    # video: the last window may be seen twice.)
    nearest = [min(range(len(ends)), key=lambda i: abs(end - ends[i])) for end in buffered]
    offsets = [end - ends[i] for end, i in zip(buffered, nearest)]
    before_last = [i for i in nearest if i < len(ends) - 1]
    assert len(before_last) >= 2 and nearest[-1] == len(ends) - 1, timings
    assert before_last == sorted(set(before_last)), timings
    assert all(-0.02 <= offset < MAX_SHIFT_S for offset in offsets), (offsets, timings)
    assert max(offsets[: len(before_last)]) - min(offsets[: len(before_last)]) < 0.01, (offsets, timings)
    # It played on past the first window while later ones were still rendering or being upscaled.
    assert timings["played_until_job_end_s"] > ends[0], timings
    assert played == sorted(played) and len(played) > 10, timings

    # Then the final video: the upscaled file, as long as the talking head.
    duration = page.eval_on_selector("#final-video", "v => v.duration")
    assert abs(duration - ends[-1]) <= 1 / 25 + 0.05, (duration, ends[-1])
    expect(page.locator("#final-video-link")).to_be_visible()
    expect(page.locator("#video-note")).to_be_hidden()
    screenshot(page, "job-live-handed-over")
