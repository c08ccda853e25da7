"""The web page at / (lands with the web-page issue); until then / points to the API docs."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import RedirectResponse


def mount_web(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    def index():
        return RedirectResponse("/docs")
