"""The web page at /: static files (plain ES modules, no build step) that use only the public HTTP API."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import Headers
from starlette.staticfiles import NotModifiedResponse
from starlette.types import Scope

from spinbot.api.files import FileDownload, stat_of

WEB_DIR = Path(__file__).with_name("web")

# The page changes with the package; a browser must not keep serving an old app.js after an upgrade.
NO_STALE_COPIES = {"Cache-Control": "no-cache"}


class RevalidatedStaticFiles(StaticFiles):
    """StaticFiles with the API's Range handling (spinbot.api.files: JSON errors) and no stale copies."""

    def file_response(
        self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        request = Headers(scope=scope)
        response = FileDownload(Path(full_path), stat_result, status_code=status_code, headers=NO_STALE_COPIES)
        if self.is_not_modified(response.headers, request):  # before Range, as RFC 9110 section 13.2.2 orders them
            return NotModifiedResponse(response.headers)
        return response.with_range(request)


def mount_web(app: FastAPI) -> None:
    """Serve index.html at / and the page's scripts and styles under /web/."""

    @app.get("/", include_in_schema=False)
    def index(request: Request) -> FileDownload:
        page = WEB_DIR / "index.html"
        found = stat_of(page, "the page is missing from this installation")
        return FileDownload(page, found, media_type="text/html", headers=NO_STALE_COPIES).with_range(request.headers)

    app.mount("/web", RevalidatedStaticFiles(directory=WEB_DIR), name="web")
