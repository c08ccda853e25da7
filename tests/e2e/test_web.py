"""The web page at / in a real headless browser (Debian's Chromium through Playwright) against the real server."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from spinbot.media.audio import load_audio
from spinbot.media.video import VideoWriter
from spinbot.samples import BECKETT_TRANSCRIPT, portrait_path, voice_path
from tests.e2e.views import check_view

try:
    from playwright.sync_api import Page, expect
except ImportError:  # every test needs the page fixture, which fails (CI) or skips with the install hint
    Page = expect = None

JOB_SECONDS = 300
SHORT_SCRIPT = "Ever tried. Ever failed. No matter. Try again."
LONG_SCRIPT = SHORT_SCRIPT + " Fail again. Fail better." * 60  # minutes of speech: a job long enough to cancel
FINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture(autouse=True)
def no_script_errors(page):
    yield
    assert page.script_errors == [], f"the page threw: {page.script_errors}"


def open_page(page: Page, server) -> None:
    """Load the page; the server wants a key, so the page asks for one first."""
    page.goto(server.url)
    expect(page.locator("#key-panel")).to_be_visible()
    expect(page.locator("#key-reason")).to_contain_text("needs an API key")
    page.fill("#api-key", server.api_key)
    page.click("#key-form button[type=submit]")
    expect(page.locator("#key-panel")).to_be_hidden()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")


def param_input(page: Page, key: str):
    return page.locator(f'[data-param="{key}"]:is(input, select)')


def fill_the_form(page: Page, folder: Path) -> None:
    page.fill("#prompt", "why failing is part of learning anything new")
    page.set_input_files("#portrait", str(portrait_path(folder)))
    page.set_input_files("#voice", str(voice_path()))
    page.fill("#ref_text", BECKETT_TRANSCRIPT)
    expect(page.locator(".upload-state[data-state-for=image]")).to_contain_text("uploaded")
    expect(page.locator(".upload-state[data-state-for=voice]")).to_contain_text("uploaded")
    expect(page.locator("#portrait-preview")).to_be_visible()
    expect(page.locator("#voice-player")).to_be_visible()
    page.fill("#script_text", SHORT_SCRIPT)  # a short script keeps the job short


def node_states(page: Page) -> list[dict]:
    return page.eval_on_selector_all(
        "#nodes .node",
        """rows => rows.map(row => ({
        node: row.dataset.node, status: row.dataset.status,
        progress: row.querySelector('progress').value, error: row.querySelector('.node-error').textContent}))""",
    )


def expect_nodes(page: Page, states: dict[str, str]) -> None:
    """The page lists exactly these nodes, in this order, each showing its state (the page may still be updating)."""
    expect(page.locator("#nodes .node")).to_have_count(len(states))
    for row, (node, status) in zip(page.locator("#nodes .node").all(), states.items()):
        expect(row).to_have_attribute("data-node", node)
        expect(row).to_have_attribute("data-status", status)


def wait_for_node(page: Page, node: str, states: tuple[str, ...] = FINAL) -> str:
    """Wait until the node shows one of the states, or the job ends without it; returns the node's state."""
    row = f'#nodes .node[data-node="{node}"]'
    page.wait_for_function(
        f"""row => {list(states)}.includes(document.querySelector(row)?.dataset.status)
        || {list(FINAL)}.includes(document.querySelector('#job-status').dataset.status)""",
        arg=row,
        timeout=JOB_SECONDS * 1000,
    )
    return page.get_attribute(row, "data-status")


def wait_for_job_end(page: Page) -> str:
    page.wait_for_function(
        f"() => {list(FINAL)}.includes(document.querySelector('#job-status').dataset.status)",
        timeout=JOB_SECONDS * 1000,
    )
    return page.get_attribute("#job-status", "data-status")


def job_error(page: Page, server) -> str:
    return (
        f"the page shows: {page.text_content('#job-error')!r}\nnodes: {node_states(page)}\n"
        f"server log:\n{server.log_tail()}"
    )


def frame_seconds(server, job: dict) -> float:
    fps = job["params"].get("infinite_talk", {}).get("fps")
    return 1 / (fps or server.get("/v1/params")["infinite_talk"]["properties"]["fps"]["default"])


def media_duration(page: Page, selector: str) -> float:
    page.wait_for_function(
        "selector => { const m = document.querySelector(selector); return m.readyState >= 1 && isFinite(m.duration) }",
        arg=selector,
    )
    return page.eval_on_selector(selector, "media => media.duration")


def shown_value(field):
    """What an Advanced input shows, as the JSON value it stands for (empty: unset)."""
    if field.get_attribute("type") == "checkbox":
        return field.is_checked()
    text = field.input_value()
    if field.evaluate("e => e.tagName") == "SELECT":
        return text
    if field.get_attribute("inputmode") in ("numeric", "decimal"):
        return float(text)
    return text or None


def test_the_advanced_section_shows_every_param_with_its_default(page, server):
    open_page(page, server)
    schemas = server.get("/v1/params")
    nodes = server.get("/v1/pipelines")["pipelines"][0]["nodes"]
    for node in nodes:
        for name, schema in schemas[node["task"]]["properties"].items():
            if f"{node['id']}.{name}" in ("script.text", "f5_to_tts.narrator_voice"):
                # the own-script field and the narrator voice's file field stand for these
                expect(param_input(page, f"{node['id']}.{name}")).to_have_count(0)
                continue
            field = param_input(page, f"{node['id']}.{name}")
            expect(field).to_have_count(1)
            assert shown_value(field) == schema.get("default"), (node["id"], name)

    page.click("#advanced summary")
    cases = [  # what the API answers for each, after the node and param names
        ("f5_to_tts.nfe_step", "0", "Input should be greater than or equal to 1"),
        ("f5_to_tts.nfe_step", "1.5", "Input should be a valid integer, got a number with a fractional part"),
        ("f5_to_tts.speed", "0.1", "Input should be greater than 0.1"),
        ("f5_to_tts.speed", "fast", "Input should be a valid number, unable to parse string as a number"),
        ("script.words", "2001", "Input should be less than or equal to 2000"),
    ]
    for key, text, message in cases:
        param_input(page, key).fill(text)
        expect(page.locator(f'.field-error[data-for="{key}"]')).to_have_text(message)
    page.click("#advanced summary")  # folded: submitting opens it again to show the errors
    page.click("#submit")
    expect(page.locator("#advanced")).to_have_attribute("open", "")
    expect(page.locator('.field-error[data-for="prompt"]')).to_have_text(
        "prompt is empty: give a prompt, or your own script"
    )
    param_input(page, "script.words").fill("60")
    expect(page.locator('.field-error[data-for="script.words"]')).to_be_empty()


def test_a_job_made_on_the_page_runs_to_a_video_as_long_as_its_speech(page, server, screenshot, tmp_path):
    open_page(page, server)
    fill_the_form(page, tmp_path)
    screenshot(page, "form")

    with page.expect_request(lambda r: r.url.endswith("/v1/jobs") and r.method == "POST") as sent:
        page.click("#submit")
    assert sent.value.post_data_json["params"] == {"script": {"text": SHORT_SCRIPT}}, "only changed params are sent"
    expect(page.locator("#job")).to_be_visible()
    expect(page.locator("#nodes .node")).to_have_count(4)
    job_id = page.text_content("#job-id")

    page.wait_for_function(
        """() => document.querySelector('#nodes .node[data-status=running]')
        || ['succeeded', 'failed', 'cancelled'].includes(document.querySelector('#job-status').dataset.status)""",
        timeout=JOB_SECONDS * 1000,
    )
    screenshot(page, "job-started")

    if wait_for_node(page, "f5_to_tts") == "succeeded":
        expect(page.locator("#job-speech")).to_be_visible()  # the speech plays as soon as its node is done

    status = wait_for_job_end(page)
    screenshot(page, "job-finished")  # taken again below once the thumbnail is in; this one is for failures
    assert status == "succeeded", f"the job {status}: {job_error(page, server)}"
    expect_nodes(page, dict.fromkeys(["script", "f5_to_tts", "infinite_talk", "upscale_video"], "succeeded"))
    assert all(state["progress"] == 1 for state in node_states(page)), node_states(page)
    expect(page.locator("#job-elapsed")).to_contain_text(" s")

    job = server.get(f"/v1/jobs/{job_id}")
    expect(page.locator("#job-script-text")).to_have_text(job["script"])
    expect(page.locator("#job-speech")).to_be_visible()
    expect(page.locator("#job-video")).to_be_visible()

    audio_seconds = media_duration(page, "#tts-audio")
    video_seconds = media_duration(page, "#final-video")
    tts = next(n for n in job["nodes"] if n["id"] == "f5_to_tts")
    assert abs(audio_seconds - tts["values"]["audio_duration"]) < 0.01
    assert abs(video_seconds - audio_seconds) <= frame_seconds(server, job), (video_seconds, audio_seconds)

    item = page.locator(f'#jobs .job-item[data-job="{job_id}"]')
    expect(item).to_have_attribute("data-status", "succeeded")
    page.wait_for_function("v => v.readyState >= 2", arg=item.locator("video.thumb").element_handle())
    screenshot(page, "job-finished")


def test_a_text_file_as_portrait_shows_the_api_error_and_sends_no_job(page, server, screenshot, tmp_path):
    jobs_before = server.get("/v1/jobs")["total"]
    open_page(page, server)
    not_an_image = tmp_path / "portrait.png"
    not_an_image.write_text("this is text pretending to be a png")
    page.fill("#prompt", "a portrait that is not one")
    page.set_input_files("#portrait", str(not_an_image))
    page.set_input_files("#voice", str(voice_path()))
    portrait_error = page.locator('.field-error[data-for="image"]')
    expect(portrait_error).to_have_text("the portrait upload is not an image that can be decoded")
    expect(page.locator("#portrait-preview")).to_be_hidden()

    page.click("#submit")
    expect(page.locator('.field-error[data-for="form"]')).to_contain_text("see the upload errors")
    expect(portrait_error).to_have_text("the portrait upload is not an image that can be decoded")
    expect(page.locator('.field-error[data-for="voice"]')).to_be_empty()
    expect(page.locator("#job")).to_be_hidden()
    screenshot(page, "upload-error")
    assert server.get("/v1/jobs")["total"] == jobs_before


def test_a_submit_while_the_form_still_loads_waits_for_it(page, server, tmp_path):
    """After the key is given the form's data loads again: a click before it came said "the server's pipelines did
    not load" (they were loading), the message vanished when they came, and nothing was sent."""
    held = []
    page.goto(server.url)
    expect(page.locator("#key-panel")).to_be_visible()
    page.route(
        "**/v1/params/form",
        lambda route: held.append(route) if route.request.headers.get("authorization") else route.continue_(),
    )
    page.fill("#api-key", server.api_key)
    page.click("#key-form button[type=submit]")
    while not held:
        page.wait_for_timeout(50)
    not_an_image = tmp_path / "portrait.png"
    not_an_image.write_text("this is text pretending to be a png")
    page.fill("#prompt", "a click before the form is ready")
    page.set_input_files("#portrait", str(not_an_image))
    page.set_input_files("#voice", str(voice_path()))
    page.click("#submit")
    page.wait_for_timeout(300)
    expect(page.locator('.field-error[data-for="form"]')).not_to_contain_text("did not load")
    held[0].continue_()
    expect(page.locator('.field-error[data-for="form"]')).to_contain_text("see the upload errors")


def test_the_voice_picker_offers_videos_whose_sound_is_read(page, server, tmp_path):
    """The server reads a video's sound track as the voice (a phone's recording is often a video): the picker
    offered audio files only, so such a recording could not be chosen on the page."""
    open_page(page, server)
    assert set(page.get_attribute("#voice", "accept").split(",")) == {"audio/*", "video/*"}
    speech, rate = load_audio(voice_path())
    clip = tmp_path / "recording.mp4"
    with VideoWriter(clip, 25, 64, 64, audio=(speech, rate)) as writer:
        for _ in range(int(len(speech) / rate * 25)):
            writer.write(np.zeros((64, 64, 3), np.uint8))
    page.set_input_files("#voice", str(clip))
    expect(page.locator(".upload-state[data-state-for=voice]")).to_contain_text("uploaded")


def test_a_running_job_shows_its_progress_and_can_be_cancelled(page, server, screenshot, tmp_path):
    open_page(page, server)
    fill_the_form(page, tmp_path)
    page.fill("#script_text", LONG_SCRIPT)
    page.click("#submit")
    expect(page.locator("#job")).to_be_visible()
    assert wait_for_node(page, "infinite_talk", ("running",)) == "running", job_error(page, server)
    expect(page.locator("#job-speech")).to_be_visible()  # the speech is there while the video is being made
    expect(page.locator("#cancel-job")).to_be_visible()
    # The overall time estimate, from the time the windows measured so far took.
    eta = page.locator("#overall-eta")
    expect(eta).to_have_text(
        re.compile(
            r"^About .+ left for infinite_talk \(\d+\.\d s a window, \d+ of \d+ windows "
            r"done\), then upscale_video\.$"
        ),
        timeout=JOB_SECONDS * 1000,
    )
    overall = page.locator("#overall-progress").evaluate("bar => bar.value")
    assert 0.05 <= overall < 0.85, overall  # script and speech done (5% of the work), the talking head under way
    screenshot(page, "job-running")
    check_view(page, screenshot, "job-running")

    page.click("#cancel-job")
    assert wait_for_job_end(page) == "cancelled", job_error(page, server)
    expect_nodes(
        page,
        {"script": "succeeded", "f5_to_tts": "succeeded", "infinite_talk": "cancelled", "upscale_video": "cancelled"},
    )
    expect(page.locator("#cancel-job")).to_be_hidden()
    expect(page.locator("#retry-job")).to_be_hidden()  # only failed jobs can be retried
    # Cancelled while the talking head was being made: no video file (the live output may still show what was
    # rendered), only the speech to download.
    expect(page.locator("#final-video-link")).to_be_hidden()
    expect(page.locator("#downloads a")).to_have_text(["Speech"])
    screenshot(page, "job-cancelled")


# The page's own OverallProgress fed events as the server sends them: an upscale that reports "models loaded", loads
# for ten minutes, then works. Measured from the first event it saw, the page said "About 180 min 0 s left" for a job
# of seconds; it now shows the server's estimate (each running node event's seconds_left, the number the CLI shows).
THE_SERVERS_ESTIMATE = """async () => {
  const { OverallProgress } = await import("/web/progress.js");
  const root = document.createElement("div");
  root.innerHTML = '<progress id="overall-progress"></progress><span id="overall-percent"></span><p id="overall-eta">';
  const overall = new OverallProgress(root);
  overall.reset(["f5_to_tts", "upscale_video"]);
  const states = new Map([["f5_to_tts", { status: "succeeded", progress: 1 }]]);
  const shown = [];
  const at = (now, progress, secondsLeft) => {
    const event = { node_id: "upscale_video", status: "running", progress, message: "upscaling",
      seconds_left: secondsLeft };
    states.set("upscale_video", { status: "running", progress });
    overall.onNodeEvent(event, now);
    overall.show(states, "running", 0.9, now);
    shown.push(overall.eta.textContent);
  };
  at(0, 0.05, null);
  at(600_000, 0.1, null);
  at(610_000, 0.15, 90);
  overall.show(states, "running", 0.9, 650_000);
  shown.push(overall.eta.textContent);
  return shown;
}"""


def test_the_time_left_is_the_servers_estimate_counted_down_not_one_from_the_first_event(page, server):
    open_page(page, server)
    assert page.evaluate(THE_SERVERS_ESTIMATE) == [
        "Estimating the time left for upscale_video…",
        "Estimating the time left for upscale_video…",  # all that was measured is the model load
        "About 1 min 30 s left for upscale_video.",
        "About 50.0 s left for upscale_video.",  # counted down between events
    ]
