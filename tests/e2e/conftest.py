"""The browser tests' fixtures: the real server (`spinbot serve` in a subprocess on a free loopback port, embedded
defaults in a temporary folder, lite backends, no LLM) and Debian's Chromium driven through Playwright."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import in_ci

BROWSER = Path("/usr/bin/chromium")
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
API_KEY = "e2e-web-key"
SERVER_START_SECONDS = 60
# How long a page action or an `expect(...)` assertion waits for the page (Playwright's default is 5 s for
# assertions): a loaded 2-core CI machine answered a job's first POST /v1/jobs in over 5 s (the native backend's
# check imported torch in that request; the server now does that as it starts, and wait_until_ready waits for it).
# Waits for a job's end use test_web.JOB_SECONDS instead.
UI_TIMEOUT_MS = 30_000


def require(ready: bool, message: str) -> None:
    """A missing browser skips on a developer's machine, and fails under CI, where these tests must run."""
    if ready:
        return
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    api_key: str
    log: Path

    def get(self, path: str) -> Any:
        request = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {self.api_key}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def server_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPINBOT_")}
    env.update(
        {
            "SPINBOT_DATA_DIR": str(data_dir),
            "SPINBOT_OLLAMA_HOST": "http://127.0.0.1:9",  # nothing listens: the fallback script is used
            "SPINBOT_OLLAMA_TIMEOUT": "2",
            "SPINBOT_TALK_MAX_PIXELS": str(192 * 192),  # a small talking head keeps the job short on the CPU
            "SPINBOT_API_KEYS": API_KEY,
            # The tests' webhook receiver listens on loopback; every other private address stays refused.
            "SPINBOT_CALLBACK_ALLOW_HOSTS": "127.0.0.1",
        }
    )
    return env


def wait_until_ready(url: str, process: subprocess.Popen, log: Path) -> None:
    """/readyz answers 200: the database and storage answer, and a native backend's imports are done (the server does
    them as it starts, so that the first POST /v1/jobs does not wait for them)."""
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2):
                return  # urlopen raises HTTPError (an URLError) on the 503 of a server not ready yet
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise RuntimeError(f"the server was not ready (/readyz) in {SERVER_START_SECONDS} s:\n{log.read_text()}")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def running_server(folder: Path, env: dict[str, str]) -> Iterator[Server]:
    """`spinbot serve` with `env`, run in `folder` (its log there), answering /healthz; stopped on exit."""
    port, log = free_port(), folder / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "spinbot", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=folder,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process, log)
        yield Server(url=url, api_key=API_KEY, log=log)
    finally:
        stop(process)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("web-server")
    with running_server(folder, server_env(folder / "data")) as running:
        yield running


@pytest.fixture(scope="session")
def chromium():
    require(BROWSER.exists(), f"{BROWSER} is missing: run scripts/install-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "playwright is missing: pip install -c constraints.txt -e '.[test]'")
    from playwright.sync_api import expect

    expect.set_options(timeout=UI_TIMEOUT_MS)  # every assertion, in every e2e module
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(BROWSER), args=BROWSER_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium):
    """A fresh browser context (empty localStorage) whose page records every script error it meets."""
    context = chromium.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    page.script_errors = []
    page.on("pageerror", lambda error: page.script_errors.append(str(error)))
    yield page
    context.close()


@pytest.fixture(scope="session")
def screenshot():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(page, name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
