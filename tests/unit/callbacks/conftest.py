"""The webhook tests' fixtures: an API on the test's settings, and a DNS that answers the names a test gives it."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest

from spinbot.api.app import create_app
from spinbot.control import callback_url
from spinbot.control.runner import Runner
from tests.support.api_client import local_client
from tests.support.callback_api import KEY, Api
from tests.support.quick_dispatcher import QuickDispatcher


@pytest.fixture
def start_api(spinbot_env, use_settings, tmp_path) -> Iterator[Callable[..., Api]]:
    """start_api(fail=False, **settings): the API with jobs that take no time, keyed, on the test's settings."""
    with ExitStack() as stack:

        def start(fail: bool = False, hold: bool = False, **settings: object) -> Api:
            use_settings(**{"api_keys": KEY, "callback_retry_seconds": 0.2, **settings})
            runner = Runner(dispatcher=QuickDispatcher(fail=fail, hold=hold))
            api = Api(stack.enter_context(local_client(create_app(runner=runner))), tmp_path)
            api.dispatcher = runner.dispatcher
            return api

        yield start


@pytest.fixture
def dns(monkeypatch) -> dict[str, Callable[[], list[str]]]:
    """Names the test answers for (a function per name, called at each lookup); any other name does not resolve."""
    table: dict[str, Callable[[], list[str]]] = {}

    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host]()

    monkeypatch.setattr(callback_url, "system_resolver", resolve)
    return table
