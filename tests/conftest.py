import importlib
import os
from pathlib import Path
from types import ModuleType

import pytest

from spinbot.settings import reset_settings


@pytest.fixture
def use_settings(monkeypatch: pytest.MonkeyPatch):
    """use_settings(models_dir=path, talk_backend="native"): set SPINBOT_* variables for this test and reload the
    settings object."""

    def apply(**values: object) -> None:
        for name, value in values.items():
            monkeypatch.setenv(f"SPINBOT_{name.upper()}", str(value))
        reset_settings()

    yield apply
    # torn down before monkeypatch restores the variables: the next get_settings() reads them restored (a test
    # module's renders after test_talk_resume's had its 128x128 frames)
    reset_settings()


@pytest.fixture
def spinbot_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Embedded defaults in a temporary data dir; no Ollama server (a closed port), lite backends."""
    data = tmp_path / "data"
    monkeypatch.setenv("SPINBOT_DATA_DIR", str(data))
    monkeypatch.setenv("SPINBOT_OLLAMA_HOST", "http://127.0.0.1:9")
    monkeypatch.setenv("SPINBOT_OLLAMA_TIMEOUT", "2")
    for name in ("SPINBOT_DATABASE_URL", "SPINBOT_STORAGE_URL", "SPINBOT_REDIS_URL", "SPINBOT_PIPELINES"):
        monkeypatch.delenv(name, raising=False)
    reset_settings()
    yield data
    reset_settings()


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_module(name: str) -> ModuleType:
    """An optional package a test needs: a skip on a developer's machine without it, a failure under CI, which
    installs every extra (nothing but a test that needs a GPU may skip there)."""
    if in_ci():
        return importlib.import_module(name)
    return pytest.importorskip(name)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Browser tests last: Playwright's sync API (a session-scoped browser, tests/e2e/conftest.py) keeps an asyncio
    loop running in the main thread until the session ends, and tests that run a loop of their own (asyncio.run)
    fail after it. A stable sort keeps every other test in its order."""
    items.sort(key=lambda item: "e2e" in item.path.parts)


@pytest.fixture(autouse=True)
def root_logging_restored():
    """The root logger as it was before each test: a test that runs `spinbot serve`, `worker` or `run` in process
    sets its handler and level (INFO for the services), and later tests' CLI output would hold their records."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
