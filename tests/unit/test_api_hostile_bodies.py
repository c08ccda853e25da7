"""Job requests from a black-box probe of a running server (2026-12-05) that got a 500 or an error that named
nothing: each test fails on the code before its fix."""

from __future__ import annotations

import uuid

import pytest

from spinbot.samples import portrait_path
from spinbot.tasks.base import MAX_PARAM_DEPTH
from tests.support.api_client import AUTH
from tests.unit.test_api_hostile_input import upload_both


@pytest.fixture
def uploads(keyed_client, tmp_path) -> dict[str, str]:
    return upload_both(keyed_client, portrait_path(tmp_path))


def nested_body(uploads: dict[str, str], depth: int) -> bytes:
    """A job whose infinite_talk.fps is a list `depth` levels deep (raw JSON: json.dumps recurses)."""
    head = '{"image": "%s", "voice": "%s", "prompt": "the sea", "params": {"infinite_talk": {"fps": '
    value = "[" * depth + "]" * depth
    return ((head % (uploads["portrait"], uploads["voice"])) + value + "}}}").encode()


@pytest.mark.parametrize("depth", [300, 900])
@pytest.mark.parametrize("keyed", [True, False], ids=["idempotency-key", "no-key"])
def test_a_param_nested_hundreds_of_levels_deep_is_a_400_naming_it(keyed_client, uploads, depth, keyed):
    # With an Idempotency-Key the request's digest serialized the body first: pydantic's "Maximum serialization
    # depth exceeded", a 500 and the connection closed
    headers = AUTH | {"content-type": "application/json"} | ({"Idempotency-Key": str(uuid.uuid4())} if keyed else {})
    answer = keyed_client.post("/v1/jobs", content=nested_body(uploads, depth), headers=headers)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"].startswith(f"infinite_talk.fps: lists and objects nested more than {MAX_PARAM_DEPTH}")
    assert keyed_client.get("/v1/jobs", headers=AUTH).json()["total"] == 0


def test_a_shallow_list_for_a_number_param_is_still_named_by_its_type(keyed_client, uploads):
    headers = AUTH | {"content-type": "application/json"}
    answer = keyed_client.post("/v1/jobs", content=nested_body(uploads, MAX_PARAM_DEPTH), headers=headers)
    assert answer.status_code == 400
    assert answer.json()["error"].startswith("infinite_talk.fps: Input should be a valid integer")


def test_the_cli_path_refuses_a_deep_param_too(spinbot_env):
    from spinbot.errors import ParamsError
    from spinbot.tasks.base import validate_params
    from spinbot.tasks.talk import InfiniteTalkParams

    deep: list = []
    for _ in range(MAX_PARAM_DEPTH + 1):
        deep = [deep]
    with pytest.raises(ParamsError, match=r"^infinite_talk\.fps: lists and objects nested"):
        validate_params("infinite_talk", InfiniteTalkParams, {"fps": deep})


@pytest.mark.parametrize(
    "send, expected",
    [
        ({"data": {"image": "a", "voice": "b"}}, "Content-Type: application/json; it came as 'application/x-www-form"),
        ({"content": b'{"image": "a"}', "headers": {"content-type": "text/plain"}}, "it came as 'text/plain'"),
        ({"content": b'{"image": "a"}'}, "it came with no Content-Type"),
        ({"content": b"", "headers": {"content-type": "application/json"}}, "the body is empty; send a JSON object"),
        ({"json": [1, 2]}, "the body must be a JSON object, not an array"),
        ({"content": b"null", "headers": {"content-type": "application/json"}}, "a JSON object, not null"),
        ({"json": "a job"}, "the body must be a JSON object, not a string"),
    ],
    ids=["form", "text", "no-type", "empty", "array", "null", "string"],
)
def test_a_body_that_is_no_json_object_is_a_422_that_says_so(keyed_client, send, expected):
    # was: "Input should be a valid dictionary or object to extract fields from" (or "Field required"), naming
    # neither the body nor its Content-Type
    send = dict(send)
    answer = keyed_client.post("/v1/jobs", headers=AUTH | send.pop("headers", {}), **send)
    assert answer.status_code == 422
    assert expected in answer.json()["error"]
    assert keyed_client.get("/v1/jobs", headers=AUTH).json()["total"] == 0


def test_params_that_make_thousands_of_windows_are_a_400_before_anything_is_stored(keyed_client, uploads):
    # a window a frame at 120 fps: 7,600 windows for this script, each a chunk and a manifest of all before it
    params = {
        "script": {"text": "Words to say here. " * 50},
        "infinite_talk": {"fps": 120, "frame_window_size": 2, "motion_frame": 1},
    }
    body = {"image": uploads["portrait"], "voice": uploads["voice"], "params": params}
    answer = keyed_client.post("/v1/jobs", json=body, headers=AUTH)
    assert answer.status_code == 400
    assert answer.json()["error"] == (
        "infinite_talk: frame_window_size 2 with motion_frame 1 makes 7,599 windows (1 new frame each) for 7,600 "
        "frames (about 63 s of speech at 120 fps), over the limit of 2,000: raise frame_window_size or lower "
        "motion_frame"
    )
    assert keyed_client.get("/v1/jobs", headers=AUTH).json()["total"] == 0
    params["infinite_talk"] = {"fps": 120, "frame_window_size": 8, "motion_frame": 1}  # 1,086 windows
    accepted = keyed_client.post("/v1/jobs", json=body, headers=AUTH)
    assert accepted.status_code == 201
    keyed_client.post(f"/v1/jobs/{accepted.json()['id']}/cancel", headers=AUTH)


@pytest.mark.parametrize(
    "body, why",
    [
        (b'{"params": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "lists or objects nested too deep"),
        (b'{"image": "\xff\xfe"}', "not UTF-8 text"),
        (b'{"priority": ' + b"9" * 5000 + b"}", "a number of more than 4,300 digits"),
    ],
    ids=["deep", "latin-1", "long-number"],
)
def test_a_body_the_json_parser_cannot_read_says_why(keyed_client, body, why):
    # was: "There was an error parsing the body"
    answer = keyed_client.post("/v1/jobs", content=body, headers=AUTH | {"content-type": "application/json"})
    assert answer.status_code == 400
    assert answer.json() == {"error": f"malformed JSON body: {why}"}


@pytest.mark.parametrize("param, value", [("infinite_talk.fps", True), ("infinite_talk.sampling_cfg", False)])
def test_true_or_false_for_a_number_param_is_a_400_naming_it(keyed_client, uploads, param, value):
    # pydantic's lax mode stored {"fps": true} as fps 1: a job that rendered a video at 1 frame a second
    node, name = param.split(".")
    body = {
        "image": uploads["portrait"],
        "voice": uploads["voice"],
        "prompt": "the sea",
        "params": {node: {name: value}},
    }
    answer = keyed_client.post("/v1/jobs", json=body, headers=AUTH)
    assert answer.status_code == 400
    assert answer.json()["error"] == f"{param}: must be a number, not true or false (got {value!r})"
    assert keyed_client.get("/v1/jobs", headers=AUTH).json()["total"] == 0
