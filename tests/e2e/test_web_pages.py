"""The page's items of issue 15 at desktop (1280x800) and phone (390x844) size, in Debian's Chromium: the form
(own script, Advanced grouped per node with descriptions and selects, errors tied to their fields), a job from
start to finish (overall progress, backends and ignored params, script origin, downloads, inputs and settings,
reuse, delete), the history's status filter, settings refused at submission and a failed job's talking head and
"edit and resubmit". Every view is checked for horizontal overflow and with axe-core (no serious violations)."""

from __future__ import annotations

from pathlib import Path

import pytest

from spinbot.samples import BECKETT_TRANSCRIPT, portrait_path, voice_path
from tests.e2e.conftest import API_KEY, running_server, server_env
from tests.e2e.test_web import JOB_SECONDS, SHORT_SCRIPT, job_error, open_page, param_input, wait_for_job_end
from tests.e2e.views import check_view

try:
    from playwright.sync_api import Page, expect
except ImportError:  # every test needs the page fixture, which fails (CI) or skips with the install hint
    Page = expect = None


@pytest.fixture(autouse=True)
def no_script_errors(page):
    yield
    assert page.script_errors == [], f"the page threw: {page.script_errors}"


def choose_inputs(page: Page, folder: Path) -> None:
    page.set_input_files("#portrait", str(portrait_path(folder)))
    page.set_input_files("#voice", str(voice_path()))
    page.fill("#ref_text", BECKETT_TRANSCRIPT)
    expect(page.locator(".upload-state[data-state-for=image]")).to_contain_text("uploaded")
    expect(page.locator(".upload-state[data-state-for=voice]")).to_contain_text("uploaded")


def error_of(page: Page, key: str):
    return page.locator(f'.field-error[data-for="{key}"]')


def expect_tied_error(page: Page, control, key: str, text: str) -> None:
    """The message is shown under its field, and the field says it is invalid and is described by it."""
    slot = error_of(page, key)
    expect(slot).to_contain_text(text)
    expect(control).to_have_attribute("aria-invalid", "true")
    assert slot.get_attribute("id") in control.get_attribute("aria-describedby").split()


def submit_and_get_request(page: Page) -> dict:
    with page.expect_request(lambda r: r.url.endswith("/v1/jobs") and r.method == "POST") as sent:
        page.click("#submit")
    return sent.value.post_data_json


def wait_for_new_job(page: Page, old: str | None = None) -> str:
    expect(page.locator("#job")).to_be_visible()
    page.wait_for_function(
        "old => document.querySelector('#job-id').textContent && document.querySelector('#job-id').textContent !== old",
        arg=old or "",
    )
    return page.text_content("#job-id")


# ---- the form -------------------------------------------------------------------------------------------------


def test_the_form_groups_params_per_node_with_descriptions_selects_and_tied_errors(page, server, screenshot):
    open_page(page, server)
    form = server.get("/v1/params/form")
    nodes = server.get("/v1/pipelines")["pipelines"][0]["nodes"]
    page.click("#advanced summary")
    fieldsets = page.locator("#params fieldset.node-params")
    expect(fieldsets).to_have_count(len(nodes))
    for fieldset, node in zip(fieldsets.all(), nodes):
        about = form[node["task"]]
        description = fieldset.locator(".node-description")
        expect(description).to_contain_text(about["description"])
        if "backend" in about:
            expect(description).to_contain_text(f"runs on the {about['backend']} backend ({about['setting']})")
    for row in page.locator("#params .param").all():  # every param has its one-line description
        assert row.locator(".description").text_content().strip(), row.get_attribute("data-param")
    scheduler = param_input(page, "infinite_talk.sampling_scheduler")
    assert scheduler.evaluate("e => e.tagName") == "SELECT"
    assert scheduler.locator("option").all_text_contents() == ["euler", "unipc", "dpm++_sde"]
    expect(scheduler).to_have_value("dpm++_sde")
    assert param_input(page, "upscale_video.facedetection").evaluate("e => e.tagName") == "SELECT"
    expect(page.locator("#script_text")).to_be_visible()  # the own script is a field of its own, not in Advanced
    expect(param_input(page, "script.text")).to_have_count(0)
    check_view(page, screenshot, "form")

    page.click("#submit")  # nothing filled in
    expect_tied_error(page, page.locator("#prompt"), "prompt", "prompt is empty: give a prompt, or your own script")
    param_input(page, "f5_to_tts.nfe_step").fill("0")
    expect_tied_error(
        page,
        param_input(page, "f5_to_tts.nfe_step"),
        "f5_to_tts.nfe_step",
        "Input should be greater than or equal to 1",
    )
    check_view(page, screenshot, "form-errors")
    param_input(page, "f5_to_tts.nfe_step").fill("32")
    expect(param_input(page, "f5_to_tts.nfe_step")).not_to_have_attribute("aria-invalid", "true")


# ---- a job from start to finish, reused and deleted --------------------------------------------------------------


def test_a_job_with_its_own_script_shows_everything_it_did_and_can_be_reused_and_deleted(
    page, server, screenshot, tmp_path
):
    open_page(page, server)
    choose_inputs(page, tmp_path)
    page.fill("#script_text", SHORT_SCRIPT)  # and no prompt
    page.click("#advanced summary")
    param_input(page, "upscale_video.batch_size").fill("8")
    page.click("#advanced summary")
    sent = submit_and_get_request(page)
    assert sent["prompt"] == "" and sent["params"] == {
        "script": {"text": SHORT_SCRIPT},
        "upscale_video": {"batch_size": 8},
    }
    job_id = wait_for_new_job(page)

    overall = page.locator("#overall-progress")
    expect(overall).to_have_attribute("aria-labelledby", "overall-label")
    expect(page.locator("#overall-label")).to_have_text("Overall progress")
    expect(page.locator("#job-status")).to_have_attribute("aria-live", "polite")
    expect(page.locator("#overall-eta")).to_have_attribute("aria-live", "polite")
    for row in page.locator("#nodes .node").all():
        name = row.get_attribute("data-node")
        expect(row.locator("progress")).to_have_attribute("aria-label", f"{name} progress")

    status = wait_for_job_end(page)
    assert status == "succeeded", f"the job {status}: {job_error(page, server)}"
    job = server.get(f"/v1/jobs/{job_id}")
    expect(overall).to_have_js_property("value", 1)
    expect(page.locator("#overall-percent")).to_have_text("100%")
    expect(page.locator("#job-script-source")).to_have_text("Script: your own script.")
    for node in job["nodes"][1:]:  # the python-plane nodes: the backend that ran each, the params it ignored
        meta = node["meta"]
        ignored = ", ".join(meta["ignored_params"]) or None
        expected = f"backend {meta['backend']} · " + (f"ignored: {ignored}" if ignored else "no param ignored")
        expect(page.locator(f'.node[data-node="{node["id"]}"] .node-details')).to_have_text(expected)
    expect(page.locator('.node[data-node="script"] .node-details')).to_have_text("your own script")

    links = page.locator("#downloads a")
    expect(links).to_have_text(["Speech", "Talking head before upscaling", "Final video"])
    sizes = {a["node_id"]: a["size"] for a in job["artifacts"]}
    for link, node in zip(links.all(), ["f5_to_tts", "infinite_talk", "upscale_video"]):
        answer = page.request.get(server.url + link.get_attribute("href"))
        assert answer.ok and len(answer.body()) == sizes[node], (node, answer.status)

    page.click("#job-inputs summary")
    expect(page.locator("#job-input-values")).to_contain_text("(none: own script)")
    expect(page.locator("#job-input-values")).to_contain_text(BECKETT_TRANSCRIPT)
    expect(page.locator("#job-settings li")).to_have_count(2)
    expect(page.locator('#job-settings li[data-param="upscale_video.batch_size"]')).to_have_text(
        "upscale_video.batch_size = 8"
    )
    page.wait_for_function("() => document.querySelector('#job-portrait').naturalWidth === 512")
    check_view(page, screenshot, "job-finished-details")

    # History: filter by status.
    page.select_option("#jobs-status", "succeeded")
    expect(page.locator(f'#jobs .job-item[data-job="{job_id}"]')).to_be_visible()
    expect(page.locator("#jobs .job-item:not([data-status=succeeded])")).to_have_count(0)
    page.select_option("#jobs-status", "failed")
    expect(page.locator(f'#jobs .job-item[data-job="{job_id}"]')).to_have_count(0)
    expect(page.locator("#jobs")).to_contain_text("No failed jobs.")
    check_view(page, screenshot, "history-filtered")
    page.select_option("#jobs-status", "")

    # Reuse: the same settings and inputs in the form, sent again as a new job.
    page.click("#reuse-job")
    expect(page.locator("#form-note")).to_contain_text(f"Reusing the settings of job {job_id}")
    expect(page.locator("#script_text")).to_have_value(SHORT_SCRIPT)
    expect(page.locator("#ref_text")).to_have_value(BECKETT_TRANSCRIPT)
    expect(param_input(page, "upscale_video.batch_size")).to_have_value("8")
    expect(page.locator(".upload-state[data-state-for=image]")).to_have_text("uploaded portrait.png")
    expect(page.locator(".upload-state[data-state-for=voice]")).to_contain_text("uploaded voice.")
    assert submit_and_get_request(page)["params"] == sent["params"]
    second = wait_for_new_job(page, job_id)
    assert wait_for_job_end(page) == "succeeded", job_error(page, server)

    # Delete the first job (DELETE /v1/jobs/{id}).
    page.goto(f"{server.url}/#job={job_id}")
    expect(page.locator("#job-id")).to_have_text(job_id)
    expect(page.locator("#delete-job")).to_be_visible()
    with page.expect_response(lambda r: r.url.endswith(f"/v1/jobs/{job_id}") and r.request.method == "DELETE") as d:
        page.click("#delete-job")
    assert d.value.status == 204
    expect(page.locator("#job")).to_be_hidden()
    expect(page.locator(f'#jobs .job-item[data-job="{job_id}"]')).to_have_count(0)
    expect(page.locator(f'#jobs .job-item[data-job="{second}"]')).to_be_visible()
    answer = page.request.get(f"{server.url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {API_KEY}"})
    assert answer.status == 404


# ---- settings refused at submission; a failed job -----------------------------------------------------------------


@pytest.fixture(scope="module")
def native_upscale_server(tmp_path_factory):
    """A second server whose upscaler is `native`, with a models folder that lacks the default RealESRGAN_x2.pth
    and holds a RealESRGAN_x4plus.pth that is no checkpoint: a job that names it passes submission (the file is
    there) and fails in upscale_video, after its talking head was made."""
    folder = tmp_path_factory.mktemp("native-upscale-server")
    models = folder / "models"
    for name in (
        "upscale_models/RealESRGAN_x4plus.pth",
        "facerestore_models/codeformer.pth",
        "facedetection/detection_Resnet50_Final.pth",
    ):
        (models / name).parent.mkdir(parents=True, exist_ok=True)
        (models / name).write_bytes(b"not a checkpoint")
    env = server_env(folder / "data") | {"SPINBOT_UPSCALE_BACKEND": "native", "SPINBOT_MODELS_DIR": str(models)}
    with running_server(folder, env) as server:
        yield server


def test_a_missing_model_file_is_refused_and_a_failed_job_keeps_its_talking_head(
    page, native_upscale_server, screenshot, tmp_path
):
    server = native_upscale_server
    open_page(page, server)
    choose_inputs(page, tmp_path)
    page.fill("#script_text", SHORT_SCRIPT)
    model = param_input(page, "upscale_video.model_name_0")
    assert model.evaluate("e => e.tagName") == "SELECT"
    assert model.locator("option").all_text_contents() == [
        "RealESRGAN_x2.pth (default; not in the models folder)",
        "RealESRGAN_x4plus.pth",
    ]
    jobs_before = server.get("/v1/jobs")["total"]

    page.click("#submit")  # the default upscaler file is not in the models folder
    expect_tied_error(
        page,
        model,
        "upscale_video.model_name_0",
        "upscale_video.model_name_0: 'RealESRGAN_x2.pth' is not in the models folder",
    )
    expect(page.locator("#advanced")).to_have_attribute("open", "")
    expect(page.locator("#job")).to_be_hidden()
    assert server.get("/v1/jobs")["total"] == jobs_before
    model.scroll_into_view_if_needed()
    check_view(page, screenshot, "refused-at-submission")

    model.select_option("RealESRGAN_x4plus.pth")
    job_id = (submit_and_get_request(page), wait_for_new_job(page))[1]
    assert wait_for_job_end(page) == "failed"
    expect(page.locator('.node[data-node="upscale_video"]')).to_have_attribute("data-status", "failed")
    expect(page.locator("#job-video")).to_be_visible()
    expect(page.locator("#job-video-title")).to_have_text("Talking head (before upscaling)")
    expect(page.locator("#final-video-link")).to_have_text("Download the talking head")
    page.wait_for_function("() => document.querySelector('#final-video').readyState >= 1", timeout=JOB_SECONDS * 1000)
    expect(page.locator("#downloads a")).to_have_text(["Speech", "Talking head before upscaling"])
    expect(page.locator("#edit-job")).to_be_visible()
    expect(page.locator("#retry-job")).to_be_visible()
    check_view(page, screenshot, "job-failed")

    page.click("#edit-job")
    expect(page.locator("#form-note")).to_contain_text(f"Editing the settings of job {job_id}")
    expect(page.locator("#script_text")).to_have_value(SHORT_SCRIPT)
    expect(model).to_have_value("RealESRGAN_x4plus.pth")
    expect(page.locator(".upload-state[data-state-for=image]")).to_have_text("uploaded portrait.png")
    screenshot(page, "edit-and-resubmit-desktop")
