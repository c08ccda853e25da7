"""`spinbot run --watch`: where to watch a job's video while it renders (its nodes' live HLS output).

On local storage the live playlists are files, and their paths are printed: ffplay, mpv and VLC play a playlist
that is still growing. On S3 they are objects, so the command serves them itself on a loopback port, through the
API's own live routes (no key: only this machine can reach it), for as long as it runs, and prints their URLs.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from spinbot.errors import SpinBotError
from spinbot.tasks.live import LIVE_TASKS, live_key

LOOPBACK = "127.0.0.1"
SERVER_START_SECONDS = 10


@contextmanager
def watch(runner, job_id: str, say: Callable[[str], None], port: int = 0) -> Iterator[list[str]]:
    """Say where each live node's playlist is (a path or a URL) and keep it reachable inside the block; yields
    those places, in node order."""
    nodes = [n.node_id for n in runner.jobs.get(job_id).nodes if n.task in LIVE_TASKS]
    store = runner.artifacts
    if hasattr(store, "path"):  # local storage: the files themselves
        places = [str(store.path(live_key(job_id, node))) for node in nodes]
        for node, place in zip(nodes, places):
            say(
                f"live {node}: {place} (a file on local storage; it grows as the node runs: "
                "play it with ffplay, mpv or VLC)"
            )
        yield places
        return
    with _serve(runner, port) as base:
        places = [f"{base}/v1/jobs/{job_id}/live/{node}/index.m3u8" for node in nodes]
        for node, place in zip(nodes, places):
            say(f"live {node}: {place} (served by this command while it runs)")
        yield places


@dataclass
class _LiveServices:
    """What the live routes use of the API's services: the runner, and who may see a job (anyone: no keys)."""

    runner: object

    def owned_job(self, job_id: str, owner: str | None):
        from spinbot.api.deps import Services

        # The API's own check (job id form, owner), on this runner: it reads nothing of Services but .runner.
        return Services.owned_job(self, job_id, owner)  # type: ignore[arg-type]


@contextmanager
def _serve(runner, port: int) -> Iterator[str]:
    """The live routes on a loopback port, in a thread of this process; yields the server's base URL."""
    import uvicorn
    from fastapi import FastAPI

    from spinbot.api.errors import install_error_handlers
    from spinbot.api.live import router
    from spinbot.api.loopback import LoopbackHostOnly

    app = FastAPI(title="SpinBot live output", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = runner.settings.model_copy(update={"api_keys": None})  # loopback only, like `serve`
    app.state.services = _LiveServices(runner)
    install_error_handlers(app)
    app.include_router(router)
    app.add_middleware(LoopbackHostOnly)  # a page that rebinds its name to 127.0.0.1 gets no video

    sock = socket.socket()
    sock.bind((LOOPBACK, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", log_config=None))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="spinbot-watch", daemon=True)
    thread.start()
    deadline = time.monotonic() + SERVER_START_SECONDS
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started:
        sock.close()
        raise SpinBotError(f"could not serve the live output on {LOOPBACK}:{port}")
    try:
        yield f"http://{LOOPBACK}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()
