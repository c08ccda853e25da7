"""Requests an attacker sent to the API (a black-box probe of 2026-12-04), each of which got a 500, stored a value
other than the one the API showed, or echoed a megabyte back: each test fails on the code before its fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from spinbot.api.app import create_app
from spinbot.api.auth import owner_of
from spinbot.samples import portrait_path, voice_path
from spinbot.tasks.base import MAX_PARAM_CHARS
from tests.support.api_client import AUTH, KEY, local_client

MEGABYTE = "Q" * 1_000_000


@pytest.fixture(scope="module")
def portrait(tmp_path_factory) -> Path:
    return portrait_path(tmp_path_factory.mktemp("portrait"))


@pytest.fixture
def uploads(keyed_client, portrait) -> dict[str, str]:
    return upload_both(keyed_client, portrait)


def upload_both(client, portrait: Path) -> dict[str, str]:
    ids = {}
    for kind, path in (("portrait", portrait), ("voice", voice_path())):
        with open(path, "rb") as f:
            answer = client.post("/v1/uploads", data={"kind": kind}, files={"file": (path.name, f)}, headers=AUTH)
        assert answer.status_code == 201, answer.text
        ids[kind] = answer.json()["id"]
    return ids


def submit(client, uploads, body_text: str | None = None, **fields):
    """POST /v1/jobs; `body_text` sends raw JSON (what json.dumps cannot write: NaN, Infinity)."""
    body = {"image": uploads["portrait"], "voice": uploads["voice"], "params": {"script": {"text": "Hello there."}}}
    body.update(fields)
    if body_text is not None:
        headers = AUTH | {"content-type": "application/json"}
        return client.post("/v1/jobs", content=body_text % body, headers=headers)
    return client.post("/v1/jobs", json=body, headers=AUTH)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("param", ["f5_to_tts.temperature", "infinite_talk.sampling_cfg"])
def test_nan_and_infinity_in_a_float_param_are_a_400_naming_it(keyed_client, uploads, constant, param):
    node, name = param.split(".")
    body = (
        '{"image": "%(image)s", "voice": "%(voice)s", "params": {"script": {"text": "Hello there."}, '
        f'"{node}": {{"{name}": {constant}}}}}}}'
    )
    answer = submit(keyed_client, uploads, body_text=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"].startswith(f"{param}: Input should be a finite number")
    assert keyed_client.get("/v1/jobs", headers=AUTH).json()["total"] == 0


def test_an_offset_past_a_database_integer_is_a_422_not_a_500(keyed_client):
    answer = keyed_client.get("/v1/jobs?offset=9223372036854775808", headers=AUTH)
    assert answer.status_code == 422 and answer.json()["error"].startswith("query.offset:")


@pytest.mark.parametrize("param", ["infinite_talk.negative_prompt", "f5_to_tts.device", "upscale_video.model_name_1"])
def test_every_text_param_has_a_length_limit(keyed_client, uploads, param):
    node, name = param.split(".")
    answer = submit(
        keyed_client, uploads, params={"script": {"text": "Hi."}, node: {name: "p" * (MAX_PARAM_CHARS + 1)}}
    )
    assert answer.status_code == 400
    assert answer.json()["error"].startswith(f"{param}: at most {MAX_PARAM_CHARS:,} characters")
    assert len(answer.text) < 400


def test_a_long_script_is_bounded_by_its_own_setting_not_the_param_limit(spinbot_env, use_settings, portrait):
    use_settings(api_keys=KEY, max_script_chars=MAX_PARAM_CHARS * 2, max_speech_seconds=100_000)
    with local_client(create_app()) as client:
        text = "Words to say. " * (MAX_PARAM_CHARS // 10)  # 1.4x the param limit
        answer = submit(client, upload_both(client, portrait), params={"script": {"text": text}})
        assert answer.status_code == 201, answer.text
        client.post(f"/v1/jobs/{answer.json()['id']}/cancel", headers=AUTH)


@pytest.mark.parametrize(
    "fields",
    [{"prompt": "a\x00b"}, {"params": {"script": {"text": "Hello\x00 there."}}}, {"ref_text": "me\x00"}],
    ids=["prompt", "script.text", "ref_text"],
)
def test_a_nul_character_in_any_text_is_refused(keyed_client, uploads, fields):
    answer = submit(keyed_client, uploads, **fields)
    assert answer.status_code == 400 and "NUL character" in answer.json()["error"]


@pytest.mark.parametrize(
    "fields",
    [
        {"pipeline": MEGABYTE[:150]},
        {"params": {"script": {"text": "Hi.", MEGABYTE: 1}}},
        {"params": {MEGABYTE: {}}},
        {"params": {"script": {"text": "Hi."}, MEGABYTE: 1}},
    ],
    ids=["pipeline", "param name", "node id", "node params not an object"],
)
def test_an_unknown_name_is_quoted_in_part_not_echoed_whole(keyed_client, uploads, fields):
    answer = submit(keyed_client, uploads, **fields)
    assert answer.status_code in (400, 422), answer.text
    assert "QQQQ" in answer.json()["error"] and len(answer.text) < 1200


def test_an_oversized_upload_id_or_pipeline_name_is_refused_by_its_length(keyed_client, uploads):
    answer = submit(
        keyed_client, uploads, image="f" * 100_000, pipeline="p" * 300_000
    )  # under SPINBOT_MAX_REQUEST_BYTES
    assert answer.status_code == 422 and len(answer.text) < 300


def test_a_long_job_id_in_a_path_is_not_echoed_whole(keyed_client):
    answer = keyed_client.get(f"/v1/jobs/{'a' * 8000}", headers=AUTH)
    assert answer.status_code == 404 and len(answer.text) < 300


@pytest.mark.parametrize("limit", [100, 5000])
def test_the_prompt_limit_is_the_setting_for_the_api_too(spinbot_env, use_settings, portrait, limit):
    use_settings(api_keys=KEY, max_prompt_chars=limit)
    with local_client(create_app()) as client:
        answer = submit(client, upload_both(client, portrait), prompt="p" * (limit + 1))
    assert answer.status_code == 400
    assert answer.json()["error"] == (
        f"prompt has {limit + 1} characters, over the limit of {limit} (SPINBOT_MAX_PROMPT_CHARS)"
    )


def test_a_key_with_its_limit_of_jobs_waiting_or_running_gets_a_429(spinbot_env, use_settings, portrait):
    """40 jobs in a row were all accepted: one key could queue work without end."""
    use_settings(api_keys=f"{KEY},other-key", max_active_jobs=2)
    with local_client(create_app()) as client:
        ids = upload_both(client, portrait)
        jobs = client.app.state.services.runner.jobs
        for status in ("pending", "running", "succeeded"):  # two waiting or running; a finished one does not count
            job_id = jobs.new_id()
            jobs.create_job(job_id, "f5tts_infinitetalk", [], {"values": {}, "artifacts": {}}, {}, owner_of(KEY))
            jobs.set_job_status(job_id, status)
        answer = submit(client, ids)
        assert answer.status_code == 429
        assert answer.json()["error"].startswith("this key has 2 jobs waiting or running, the limit")
        jobs.set_job_status(job_id, "running")  # the third one too: still 429, and nothing stored meanwhile
        assert submit(client, ids).status_code == 429 and jobs.list(owner=owner_of(KEY))[1] == 3


# ---- a probe of 2026-12-05 ---------------------------------------------------------------------------------------
def body_with(fields: str) -> str:
    """A raw JSON body for submit(): the uploads and `fields` as sent (escapes json.dumps would not write)."""
    return '{"image": "%(image)s", "voice": "%(voice)s", ' + fields + "}"


@pytest.mark.parametrize(
    "fields",
    [
        '"prompt": "\\ud800", "params": {"script": {"text": "Hello there."}}',
        '"params": {"script": {"text": "Hello \\udfff there."}}',
        '"ref_text": "me \\ud83d", "params": {"script": {"text": "Hello there."}}',
        '"params": {"script": {"text": "Hi."}, "infinite_talk": {"negative_prompt": "\\ud800"}}',
    ],
    ids=["prompt", "script.text", "ref_text", "negative_prompt"],
)
def test_a_lone_surrogate_in_any_text_is_refused_and_nothing_is_stored(keyed_client, uploads, fields):
    """JSON's "\\ud800" decodes to a lone surrogate, no character: the job was stored and ran (its speech failed),
    the answer was a 500, and every later GET /v1/jobs of the key was a 500 too."""
    answer = submit(keyed_client, uploads, body_text=body_with(fields))
    assert answer.status_code == 400, answer.text
    assert "a lone UTF-16 surrogate" in answer.json()["error"]
    listed = keyed_client.get("/v1/jobs", headers=AUTH)
    assert listed.status_code == 200 and listed.json()["total"] == 0


def test_a_lone_surrogate_echoed_in_an_error_is_escaped_not_a_500(keyed_client, uploads):
    answer = submit(keyed_client, uploads, body_text=body_with('"params": {"\\ud800x": {}}'))
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"].startswith("\\ud800x: no such node")
