"""A new user's first visit to the page: what it says before a key is given, what an incomplete or oversized form
tells, and a job followed on a phone-sized screen."""

from __future__ import annotations

from spinbot.api.upload_body import too_large_message
from spinbot.samples import portrait_path
from spinbot.settings import Settings
from tests.e2e.test_web import (  # noqa: F401 (no_script_errors: autouse)
    fill_the_form,
    job_error,
    no_script_errors,
    open_page,
    wait_for_job_end,
    wait_for_node,
)
from tests.e2e.views import at_size

try:
    from playwright.sync_api import expect
except ImportError:  # every test needs the page fixture, which fails (CI) or skips with the install hint
    expect = None

DEFAULTS = Settings.model_fields  # the server's limits: the e2e server sets none of them


def error_for(page, key: str):
    return page.locator(f'#job-form .field-error[data-for="{key}"]')


def test_a_first_visit_without_a_key_asks_for_one_and_shows_no_api_errors(page, server, screenshot):
    """The 401s of the form's and the list's first loads said "missing or unknown API key (send 'Authorization:
    Bearer KEY' ...)" twice in red, under the panel that already asked for the key."""
    page.goto(server.url)
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(page.locator("#key-panel")).to_be_visible()
    expect(error_for(page, "form")).to_be_empty()
    expect(page.locator('#history .field-error[data-for="history"]')).to_be_empty()
    screenshot(page, "first-visit-no-key")

    page.click("#submit")
    expect(error_for(page, "form")).to_have_text("give the API key above first: the form loads with it")

    page.fill("#api-key", server.api_key)
    page.click("#key-form button[type=submit]")
    expect(page.locator("#pipeline option")).not_to_have_count(0)
    expect(error_for(page, "form")).to_be_empty()


def test_an_empty_form_names_every_missing_input_at_once(page, server):
    """The prompt's error came alone; the missing portrait and voice were told only on the next try."""
    open_page(page, server)
    page.click("#submit")
    expect(error_for(page, "prompt")).to_have_text("prompt is empty: give a prompt, or your own script")
    expect(error_for(page, "image")).to_have_text("choose a portrait file")
    expect(error_for(page, "voice")).to_have_text("choose a voice file")
    expect(page.locator("#job")).to_be_hidden()


def test_a_script_or_transcript_over_its_limit_is_shown_under_its_field_and_kept(page, server, tmp_path):
    """The server's "script.text has N characters, over the limit ..." was shown under the button, far from the
    field it is about."""
    jobs_before = server.get("/v1/jobs")["total"]
    open_page(page, server)
    fill_the_form(page, tmp_path)
    long_script = "Fail better. " * (DEFAULTS["max_script_chars"].default // 10)
    page.fill("#script_text", long_script)
    page.click("#submit")
    expect(error_for(page, "script.text")).to_contain_text("over the limit of")
    expect(error_for(page, "form")).to_be_empty()
    assert page.input_value("#script_text") == long_script

    page.fill("#script_text", "Ever tried.")
    page.fill("#ref_text", "y" * (DEFAULTS["max_ref_text_chars"].default + 1))
    page.click("#submit")
    expect(error_for(page, "ref_text")).to_contain_text("SPINBOT_MAX_REF_TEXT_CHARS")
    expect(error_for(page, "script.text")).to_be_empty()
    expect(error_for(page, "form")).to_be_empty()
    assert server.get("/v1/jobs")["total"] == jobs_before


def test_a_phone_shows_the_jobs_overall_percent(page, server, screenshot, tmp_path):
    """At phone width the rule that hides each node's percent hid the overall one too, leaving its column empty."""
    open_page(page, server)
    fill_the_form(page, tmp_path)
    page.click("#submit")
    assert wait_for_job_end(page) == "succeeded"
    at_size(page, "phone")
    expect(page.locator("#overall-percent")).to_be_visible()
    expect(page.locator("#overall-percent")).to_have_text("100%")
    expect(page.locator("#nodes .node-percent").first).to_be_hidden()
    screenshot(page, "job-phone")


def test_a_pasted_prompt_over_its_limit_is_kept_whole_counted_and_refused_under_its_field(page, server, tmp_path):
    """maxlength=4000 cut a pasted 5,000-character prompt to 4,000 without a word; no box said its limit."""
    limit = DEFAULTS["max_prompt_chars"].default
    jobs_before = server.get("/v1/jobs")["total"]
    open_page(page, server)
    fill_the_form(page, tmp_path)
    expect(page.locator("#script_text-count")).to_have_text(f"46 / {DEFAULTS['max_script_chars'].default:,} characters")
    expect(page.locator("#ref_text-count")).to_contain_text(f" / {DEFAULTS['max_ref_text_chars'].default:,} characters")
    page.fill("#script_text", "")
    page.fill("#prompt", "")
    pasted = "Fail better. " * ((limit + 1000) // 13)
    page.focus("#prompt")
    page.keyboard.insert_text(pasted)  # what a paste does: a maxlength cuts it
    assert page.input_value("#prompt") == pasted
    over = len(pasted) - limit
    expect(page.locator("#prompt-count")).to_have_text(
        f"{len(pasted):,} / {limit:,} characters: {over:,} over the limit, shorten it to send the job"
    )
    expect(page.locator("#prompt-count")).to_have_class("char-count muted over")
    page.click("#submit")
    expect(error_for(page, "prompt")).to_have_text(
        f"prompt has {len(pasted)} characters, over the limit of {limit} (SPINBOT_MAX_PROMPT_CHARS)"
    )
    expect(error_for(page, "form")).to_be_empty()
    assert page.input_value("#prompt") == pasted
    assert server.get("/v1/jobs")["total"] == jobs_before


def test_a_file_over_the_upload_limit_is_refused_before_it_is_sent(page, server, tmp_path):
    """The page was not told the limit: a 50 MiB file was sent whole, to be refused with a 413 after the wait."""
    limit = DEFAULTS["max_upload_bytes"].default
    big = tmp_path / "portrait.png"
    big.write_bytes(portrait_path(tmp_path).read_bytes())
    with big.open("r+b") as out:
        out.truncate(limit + 1)
    uploads = []
    page.on(
        "request",
        lambda request: uploads.append((request.method, request.url)) if "/v1/uploads" in request.url else None,
    )
    open_page(page, server)
    expect(page.locator("#pipeline option")).not_to_have_count(0)  # the form's data, with the limit, has loaded
    page.fill("#prompt", "a portrait one byte over the limit")
    page.set_input_files("#portrait", str(big))
    expect(error_for(page, "image")).to_have_text(too_large_message(limit))
    page.click("#submit")
    expect(error_for(page, "image")).to_have_text(too_large_message(limit))
    expect(error_for(page, "voice")).to_have_text("choose a voice file")
    assert uploads == []


def test_the_fallback_scripts_reason_is_shown_once(page, server, tmp_path):
    """ "Script: the fallback script: the LLM could not be used (...)" repeated the long reason the script step
    showed a few lines above."""
    open_page(page, server)
    fill_the_form(page, tmp_path)
    page.fill("#script_text", "")  # no LLM listens (conftest): the fallback script is written from the prompt
    page.click("#submit")
    assert wait_for_node(page, "script") == "succeeded", job_error(page, server)
    details = page.locator('.node[data-node="script"] .node-details')
    expect(details).to_contain_text("the fallback script: the LLM could not be used (")
    reason = details.text_content().split("could not be used (", 1)[1]
    assert len(reason) > 20, reason
    expect(page.locator("#job-script-source")).to_have_text(
        "Script: the fallback script: the LLM could not be used (why: see the script step)."
    )
    assert page.locator("#job").text_content().count(reason[:-1]) == 1
    page.click("#cancel-job")
    assert wait_for_job_end(page) in ("cancelled", "succeeded")
