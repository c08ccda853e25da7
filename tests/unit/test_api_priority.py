"""Who may set a job's priority (1 runs first): with API keys, only the keys of SPINBOT_PRIORITY_API_KEYS; any other
key's job with one is a 403 naming the setting, nothing stored. Before, any key could put its jobs ahead of everyone
else's. Without API keys (loopback only, one local user) priority stays allowed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest

from spinbot.api import auth as auth_module
from spinbot.api.app import create_app
from spinbot.control.runner import Runner
from spinbot.errors import SettingsError
from spinbot.settings import get_settings
from tests.support.api_client import local_client
from tests.support.idempotent_api import KEY_A, KEY_B, Api, auth
from tests.support.quick_dispatcher import QuickDispatcher

REFUSED = {
    "error": "this API key may not set a job's priority (only the keys in SPINBOT_PRIORITY_API_KEYS may); send the "
    "job without priority"
}


@pytest.fixture
def start_api(spinbot_env, use_settings, tmp_path) -> Iterator[Callable[..., Api]]:
    with ExitStack() as stack:

        def start(fail: bool = False, **settings: object) -> Api:
            use_settings(**{"api_keys": f"{KEY_A},{KEY_B}", "priority_api_keys": KEY_A, **settings})
            runner = Runner(dispatcher=QuickDispatcher(fail=fail))
            return Api(stack.enter_context(local_client(create_app(runner=runner))), tmp_path)

        yield start


def test_a_key_outside_the_priority_keys_is_refused_priority_with_a_403_and_nothing_stored(start_api, spinbot_env):
    api = start_api()
    body = api.body(KEY_B, priority=1)
    for headers in (auth(KEY_B), {"X-API-Key": KEY_B}):
        answer = api.client.post("/v1/jobs", json=body, headers=headers)
        assert answer.status_code == 403 and answer.json() == REFUSED
    assert api.post(body, "retry-me", key=KEY_B).json() == REFUSED  # an Idempotency-Key changes nothing
    assert api.total(KEY_B) == 0 and not (spinbot_env / "jobs").exists()


def test_with_no_priority_keys_set_no_key_may_set_priority(start_api):
    api = start_api(priority_api_keys="")
    assert api.post(api.body(priority=5), None).json() == REFUSED
    assert api.total() == 0


def test_a_job_without_priority_is_taken_from_any_key_as_the_page_sends_it(start_api):
    api = start_api()
    uploads = api.upload(KEY_B)
    page_body = {"pipeline": "f5tts_infinitetalk", "prompt": "p", **uploads, "ref_text": "", "params": {}}
    page_body["params"] = {"script": {"text": "Hello there."}}
    for body in (page_body, {**page_body, "priority": None}):
        answer = api.post(body, None, key=KEY_B)
        assert answer.status_code == 201, answer.text
        assert answer.json()["priority"] is None


def test_a_priority_key_sets_priority_and_its_replays_and_retries_keep_it(start_api):
    api = start_api(fail=True)
    body = api.body(priority=2)
    first = api.post(body, "order-7")
    assert first.status_code == 201 and first.json()["priority"] == 2
    again = api.post(body, "order-7")
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    job_id = first.json()["id"]
    assert api.settled(job_id)["status"] == "failed"
    retried = api.client.post(f"/v1/jobs/{job_id}/retry", headers=auth(KEY_A))
    assert retried.status_code == 202 and retried.json()["priority"] == 2
    assert api.total() == 1


class PriorityRecorder(QuickDispatcher):
    """Fails infinite_talk, keeping the priority each task was sent with."""

    def __init__(self) -> None:
        super().__init__(fail=True)
        self.priorities: list[int | None] = []

    def run(self, request, report, is_cancelled):
        self.priorities.append(request.priority)
        return super().run(request, report, is_cancelled)


def test_a_retry_by_a_key_taken_out_of_the_priority_keys_runs_at_the_default_priority(
    spinbot_env, use_settings, tmp_path
):
    # the job kept its priority 2 on retry after KEY_A lost the right to set one (and the server restarted)
    use_settings(api_keys=f"{KEY_A},{KEY_B}", priority_api_keys=KEY_A)
    with local_client(create_app(runner=Runner(dispatcher=QuickDispatcher(fail=True)))) as client:
        api = Api(client, tmp_path)
        job_id = api.post(api.body(priority=2), None).json()["id"]
        assert api.settled(job_id)["status"] == "failed"
    use_settings(api_keys=f"{KEY_A},{KEY_B}", priority_api_keys=KEY_B)
    recorder = PriorityRecorder()
    with local_client(create_app(runner=Runner(dispatcher=recorder))) as client:
        api = Api(client, tmp_path)
        retried = client.post(f"/v1/jobs/{job_id}/retry", headers=auth(KEY_A))
        assert retried.status_code == 202 and retried.json()["priority"] is None
        assert api.settled(job_id)["priority"] is None
    assert recorder.priorities and set(recorder.priorities) == {None}  # every task of the new run


def test_without_api_keys_the_one_local_user_may_set_priority(spinbot_env, use_settings, tmp_path):
    use_settings(api_keys="")
    with local_client(create_app(runner=Runner(dispatcher=QuickDispatcher()))) as client:
        api = Api(client, tmp_path)
        answer = client.post("/v1/jobs", json=api.body(priority=1))
        assert answer.status_code == 201 and answer.json()["priority"] == 1


def test_the_priority_keys_are_compared_as_the_api_keys_are(start_api, monkeypatch):
    """Through auth._matching_key, in constant time: digests of equal length, every key compared, so the time taken
    tells neither a key's length nor which one matched."""
    api = start_api(priority_api_keys=KEY_B)
    body, looked_up = api.body(KEY_B, priority=3), []
    real = auth_module._matching_key

    def recorded(given: str, keys: list[str]) -> str | None:
        looked_up.append(keys)
        return real(given, keys)

    monkeypatch.setattr(auth_module, "_matching_key", recorded)
    assert api.post(body, None, key=KEY_B).status_code == 201
    assert looked_up == [[KEY_A, KEY_B], [KEY_B]]  # the API keys (the owner), then the priority keys


def test_a_priority_key_that_is_no_api_key_is_refused_without_echoing_the_keys(use_settings):
    use_settings(api_keys="alpha-key,beta-key", priority_api_keys="alpha-key,typo-key")
    with pytest.raises(SettingsError) as refused:
        get_settings()
    assert str(refused.value) == (
        "SPINBOT_PRIORITY_API_KEYS='***' refused: it names 1 key that SPINBOT_API_KEYS does not have; list only API "
        "keys"
    )


def test_the_403_is_in_the_openapi_document(start_api):
    answers = start_api().client.get("/openapi.json").json()["paths"]["/v1/jobs"]["post"]["responses"]
    assert "SPINBOT_PRIORITY_API_KEYS" in answers["403"]["description"]
