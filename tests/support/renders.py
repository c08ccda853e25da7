"""A talk backend's render_window watched by a test: each window asked for is recorded, and the render can be made
to fail once at a chosen window (a render stopped mid-way, for the window checkpoints' tests)."""

from __future__ import annotations

from typing import Any


def watch_renders(monkeypatch: Any, backend: type, error: type[Exception] = RuntimeError) -> dict:
    """Patches backend.render_window; returns {"calls": [window indexes], "fail_at": index or None}: set
    "fail_at" and the next render of that window raises `error` (once)."""
    seen: dict = {"calls": [], "fail_at": None}
    real = backend.render_window

    def render_window(self, state, window):
        seen["calls"].append(window.index)
        if window.index == seen["fail_at"]:
            seen["fail_at"] = None
            raise error(f"the render stopped at window {window.index}")
        return real(self, state, window)

    monkeypatch.setattr(backend, "render_window", render_window)
    return seen
