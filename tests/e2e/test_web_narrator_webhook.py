"""The page's narrator voice (the speech node's `narrator_voice` param, uploaded like the voice sample) and webhook
(`callback_url`, `callback_secret`) in Debian's Chromium against the real server: what the page sends, what the
server made of it, the webhook's call, and the server's refusals shown under their fields."""

from __future__ import annotations

import re
import shutil
import wave
from pathlib import Path

import pytest

from spinbot.control.callback_signing import verify
from spinbot.control.callback_url import CallbackRefused, parse_callback_url
from spinbot.errors import InputError
from spinbot.samples import voice_path
from tests.e2e.test_web import JOB_SECONDS, SHORT_SCRIPT, job_error, open_page, wait_for_job_end
from tests.e2e.test_web_pages import choose_inputs, error_of, expect_tied_error, submit_and_get_request
from tests.e2e.views import check_view
from tests.support.webhook_receiver import Receiver

try:
    from playwright.sync_api import Page, expect
except ImportError:  # every test needs the page fixture, which fails (CI) or skips with the install hint
    Page = expect = None

UPLOADS = "/v1/uploads"


@pytest.fixture(autouse=True)
def no_script_errors(page):
    yield
    assert page.script_errors == [], f"the page threw: {page.script_errors}"


def is_post(path: str):
    return lambda r: r.url.endswith(path) and (getattr(r, "request", r)).method == "POST"


def choose_narrator(page: Page, path: Path) -> str:
    """Choose the narrator voice file; its upload id, as the server answered it."""
    with page.expect_response(is_post(UPLOADS)) as answer:
        page.set_input_files("#narrator", str(path))
    expect(page.locator(".upload-state[data-state-for=narrator_voice]")).to_have_text(f"uploaded {path.name}")
    assert answer.value.status == 201, answer.value.text()
    return answer.value.json()["id"]


def jobs_total(server) -> int:
    return server.get("/v1/jobs")["total"]


def test_a_job_with_a_narrator_voice_and_a_webhook_gets_both_and_its_call_arrives_signed(
    page, server, screenshot, tmp_path
):
    narrator_file = tmp_path / "narrator.wav"
    shutil.copy(voice_path(), narrator_file)
    with Receiver() as receiver:
        open_page(page, server)
        choose_inputs(page, tmp_path)
        page.fill("#script_text", SHORT_SCRIPT)
        narrator_id = choose_narrator(page, narrator_file)
        expect(page.locator("#narrator-remove")).to_be_visible()
        hook = f"{receiver.url}/hooks/spinbot?token=t0k3n"
        page.click("#webhook summary")
        page.fill("#callback_url", hook)
        sent = submit_and_get_request(page)

        assert sent["params"] == {"script": {"text": SHORT_SCRIPT}, "f5_to_tts": {"narrator_voice": narrator_id}}
        assert sent["callback_url"] == hook and "callback_secret" not in sent
        expect(page.locator("#job-id")).not_to_be_empty()
        job_id = page.text_content("#job-id")
        job = server.get(f"/v1/jobs/{job_id}")
        assert job["params"]["f5_to_tts"] == {"narrator_voice": narrator_id}
        assert job["callback"]["url_host"] == f"127.0.0.1:{receiver.port}"
        expect(page.locator("#job-webhook-secret")).to_be_visible()  # the server made it: shown, once
        secret = page.locator("#job-webhook-secret-value")
        expect(secret).to_have_text(re.compile(r"^whsec_[A-Za-z0-9+/]{43}=$"))
        check_view(page, screenshot, "webhook-secret")

        status = wait_for_job_end(page)
        assert status == "succeeded", f"the job {status}: {job_error(page, server)}"
        call = receiver.wait(1, timeout=JOB_SECONDS)[0]
        assert call.path == "/hooks/spinbot?token=t0k3n"
        assert verify(secret.text_content(), call.headers, call.body), "signed with the secret the page showed"
        page.click("#job-inputs summary")
        expect(page.locator("#job-input-values")).to_contain_text(f"127.0.0.1:{receiver.port}: ")

        # Opened again (from the history), the job no longer carries its secret.
        page.goto(f"{server.url}/#job={job_id}")
        page.reload()
        expect(page.locator("body")).to_have_attribute("data-ready", "true")
        expect(page.locator("#job-id")).to_have_text(job_id)
        expect(page.locator("#job-webhook-secret")).to_be_hidden()

        # Reused: the narrator voice is the same upload, sent again as the param (not shown in Advanced).
        page.click("#reuse-job")
        expect(page.locator(".upload-state[data-state-for=narrator_voice]")).to_have_text(
            f"the narrator voice of job {job_id} (upload {narrator_id})"
        )
        expect(page.locator(".upload-state[data-state-for=voice]")).to_contain_text("uploaded voice.")
        page.route("**/v1/jobs", lambda route: route.abort() if route.request.method == "POST" else route.continue_())
        assert submit_and_get_request(page)["params"]["f5_to_tts"] == {"narrator_voice": narrator_id}
        expect(error_of(page, "form")).to_contain_text("cannot reach the server")

        # Removed: the param is not sent at all.
        page.click("#narrator-remove")
        expect(page.locator(".upload-state[data-state-for=narrator_voice]")).to_be_empty()
        assert "f5_to_tts" not in submit_and_get_request(page)["params"]


def silent_wav(path: Path, seconds: float = 4.0, rate: int = 16000) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\0\0" * int(seconds * rate))
    return path


def test_a_narrator_voice_the_server_refuses_is_shown_under_its_field_and_makes_no_job(page, server, tmp_path):
    open_page(page, server)
    choose_inputs(page, tmp_path)
    page.fill("#script_text", SHORT_SCRIPT)
    before = jobs_total(server)
    # It decodes, but no job could use it: refused at upload (it was stored, and refused only by the job)
    with page.expect_response(is_post(UPLOADS)) as answer:
        page.set_input_files("#narrator", str(silent_wav(tmp_path / "silence.wav")))
    assert answer.value.status == 400
    message = answer.value.json()["error"]
    assert message.startswith("the voice upload is silent"), message
    expect_tied_error(page, page.locator("#narrator"), "narrator_voice", message)
    sent = []
    page.on("request", lambda r: sent.append(r) if is_post("/v1/jobs")(r) else None)
    with page.expect_response(is_post(UPLOADS)) as again:  # the submit tries the upload again, and stops there
        page.click("#submit")
    assert again.value.status == 400
    expect_tied_error(page, page.locator("#narrator"), "narrator_voice", message)
    assert sent == []
    expect(error_of(page, "form")).to_have_text("the job was not sent: see the upload errors above")
    expect(page.locator("#job")).to_be_hidden()
    assert jobs_total(server) == before


def test_a_webhook_url_the_server_refuses_is_shown_in_one_line_and_makes_no_job(page, server, tmp_path):
    open_page(page, server)
    choose_inputs(page, tmp_path)
    page.fill("#script_text", SHORT_SCRIPT)
    page.click("#webhook summary")
    page.fill("#callback_url", "http://10.0.0.1/hooks/spinbot")  # well-formed, so only the server can refuse it
    page.click("#webhook summary")  # folded: the server's error opens it again
    before = jobs_total(server)
    with page.expect_response(is_post("/v1/jobs")) as answer:
        page.click("#submit")
    assert answer.value.status == 400
    assert answer.value.json() == {"error": "callback_url: 10.0.0.1 is not a public address"}
    expect(page.locator("#webhook")).to_have_attribute("open", "")  # opened to show the error
    expect_tied_error(page, page.locator("#callback_url"), "callback_url", "callback_url: 10.0.0.1 is not a public")
    assert "\n" not in error_of(page, "callback_url").text_content()
    expect(page.locator("#job")).to_be_hidden()
    assert jobs_total(server) == before


URLS = [
    "https://hooks.example.com/spinbot?token=1",
    "http://hooks.example.com:8080/",
    "HTTPS://Hooks.Example.COM./x",
    "http://[::1]/x",
    "ftp://hooks.example.com/",
    "hooks.example.com/x",
    "localhost:8000/x",
    "//hooks.example.com/x",
    "http://user:pw@hooks.example.com/",
    "http://hooks.example.com:0/",
    "http://hooks.example.com:99999/",
    "http://hooks.example.com:80:80/",
    "http://hooks.example.com:http/",
    "http:hooks.example.com",
    "http:///x",
    "http://localhost/",
    "http://api.localhost:3000/",
    "http://2130706433/",
    "http://0x7f.1/",
    "http://0177.0.0.1/",
    "http://127.1/",
    "http://10.0.0.1/",
    "http://exa mple.com/",
    "http://exämple.com/",
    "http://example.com\\x",
    "http://-bad-.example.com/",
    "http://under_score.example.com/",
    "javascript:alert(1)",
    "http://" + "a" * 64 + ".com/",
    "x" * 90 + "://example.com/",
]
SECRETS = [
    "whsec_" + "A" * 32,  # 24 bytes
    "whsec_" + "A" * 86 + "==",  # 64 bytes
    "whsec_" + "A" * 88,  # 66 bytes
    "whsec_" + "A" * 28,  # 21 bytes
    "whsec_" + "A" * 31,  # no padding
    "whsec_" + "A" * 31 + "=",
    "whsec_" + "A" * 30 + "-_",  # base64url
    "WHSEC_" + "A" * 32,
    "A" * 32,
]


def server_url_error(url: str) -> str | None:
    try:
        parse_callback_url(url, 2048)
    except CallbackRefused as err:
        return str(err)
    return None


def server_secret_error(secret: str) -> str | None:
    from spinbot.control.callback_signing import check_secret

    try:
        check_secret(secret)
    except InputError as err:
        return str(err)
    return None


CHECKS = """async ([urls, secrets]) => {
  const { callbackUrlError, callbackSecretError } = await import("/web/webhook.js");
  return [urls.map(callbackUrlError), secrets.map(callbackSecretError)];
}"""


def test_the_page_checks_a_webhook_as_the_server_does_before_sending_it(page, server, tmp_path):
    open_page(page, server)
    url_errors, secret_errors = page.evaluate(CHECKS, [URLS, SECRETS])
    assert len([error for error in url_errors if error]) == 24 and len([e for e in secret_errors if e]) == 7
    for url, error in zip(URLS, url_errors):
        assert error == server_url_error(url), url
    for secret, error in zip(SECRETS, secret_errors):
        assert error == server_secret_error(secret), secret

    choose_inputs(page, tmp_path)
    page.fill("#script_text", SHORT_SCRIPT)
    page.click("#webhook summary")
    page.fill("#callback_url", "ftp://hooks.example.com/")  # shown as it is typed
    expect_tied_error(
        page, page.locator("#callback_url"), "callback_url", "callback_url: only http and https URLs can be called"
    )
    page.fill("#callback_url", "")
    page.fill("#callback_secret", "whsec_short")
    sent = []
    page.on("request", lambda r: sent.append(r) if is_post("/v1/jobs")(r) else None)
    page.click("#submit")
    expect_tied_error(
        page, page.locator("#callback_secret"), "callback_secret", "callback_secret: given without a callback_url"
    )
    page.fill("#callback_url", "https://hooks.example.com/spinbot")
    page.click("#submit")
    expect(error_of(page, "callback_secret")).to_have_text(
        "callback_secret: must be whsec_ and the base64 of 24 to 64 random bytes"
    )
    page.wait_for_timeout(300)
    assert sent == [], "a webhook the server would refuse is not sent"
