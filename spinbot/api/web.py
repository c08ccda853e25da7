"""The web page at /: static files (plain ES modules, no build step) that use only the public HTTP API."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

WEB_DIR = Path(__file__).with_name("web")

# The page changes with the package; a browser must not keep serving an old app.js after an upgrade.
NO_STALE_COPIES = {"Cache-Control": "no-cache"}


class RevalidatedStaticFiles(StaticFiles):
    def file_response(self, *args, **kwargs):
        response = super().file_response(*args, **kwargs)
        response.headers.update(NO_STALE_COPIES)
        return response


def mount_web(app: FastAPI) -> None:
    """Serve index.html at / and the page's scripts and styles under /web/."""

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", media_type="text/html", headers=NO_STALE_COPIES)

    app.mount("/web", RevalidatedStaticFiles(directory=WEB_DIR), name="web")
