"""GET /v1/jobs/{id}/artifacts/{node}/{name}: a job's file, by the header key or the media cookie (<video> and
<audio> load by URL). A local store's file is served with Range support; an S3 object is streamed through the API
(Range passed on), or, with SPINBOT_S3_PUBLIC_URL set, redirected to a URL presigned for that public endpoint:
the internal endpoint never reaches a client."""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from spinbot.api.deps import MediaOwner, Services, ServicesDep
from spinbot.api.errors import error_responses
from spinbot.api.files import FileDownload, UnsatisfiableRange, requested_range, stat_of
from spinbot.errors import JobNotFound, echo
from spinbot.storage.local import LocalStore
from spinbot.storage.s3 import ObjectRead, RangeNotSatisfiable, S3Store

router = APIRouter(tags=["artifacts"])


@router.get(
    "/v1/jobs/{job_id}/artifacts/{node_id}/{name}",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "the file"},
        206: {"description": "the requested byte range (one range; any other Range header gets the whole file)"},
        307: {"description": "to a presigned URL on SPINBOT_S3_PUBLIC_URL, where that is set"},
        **error_responses(401, 404, 416, 422),
    },
)
def artifact(job_id: str, node_id: str, name: str, request: Request, services: ServicesDep, owner: MediaOwner):
    job = services.owned_job(job_id, owner)
    record = next((a for a in job.artifacts if a["node_id"] == node_id and a["name"] == name), None)
    if record is None:
        raise JobNotFound(f"artifact {echo(f'{node_id}/{name}')} not found for job {echo(job_id)}")
    return stored_file(services, record["key"], record["content_type"], request)


# Types a browser shows (or plays, or offers to save) without running anything in it. A stored file of any other
# type is served as application/octet-stream: inputs stored before uploads got the suffix of their detected format
# kept the client's (`portrait.html`, `portrait.svg`), and an S3 object the client's Content-Type.
INERT_TYPES = frozenset(
    {"text/plain", "application/json", "application/octet-stream", "application/vnd.apple.mpegurl", "video/mp2t"}
)
INERT_PREFIXES = ("image/", "audio/", "video/")
ACTIVE_TYPES = frozenset({"image/svg+xml"})  # SVG is an image that runs scripts


def served_type(key: str, recorded: str | None = None) -> str:
    """The Content-Type a stored file is served with: its recorded type or its key's suffix's, if inert."""
    found = (recorded or mimetypes.guess_type(key)[0] or "").split(";")[0].strip().lower()
    inert = found in INERT_TYPES or (found.startswith(INERT_PREFIXES) and found not in ACTIVE_TYPES)
    return found if inert else "application/octet-stream"


def stored_file(services: Services, key: str, content_type: str | None, request: Request) -> Response:
    """A stored file as its answer: served from a local store's folder, or from S3 by redirect to the public
    endpoint (SPINBOT_S3_PUBLIC_URL) or streamed through the API; never a URL of the internal endpoint."""
    store = services.runner.artifacts
    media_type = served_type(key, content_type)
    missing = f"file {Path(key).name} is no longer stored"
    if isinstance(store, LocalStore):
        path = store.path(key)
        found = stat_of(path, missing)
        return FileDownload(path, found, media_type=media_type, filename=Path(key).name).with_range(request.headers)
    if not isinstance(store, S3Store):
        raise TypeError(f"no way to serve files from a {type(store).__name__}")
    public_url = services.settings.s3_public_url
    if public_url:
        disposition = f'attachment; filename="{Path(key).name}"'  # as the API's own answers: a download
        url = store.public_presigned_url(key, public_url, content_type=media_type, disposition=disposition)
        return RedirectResponse(url, status_code=307)
    try:
        return streamed(store, key, media_type, request)
    except FileNotFoundError:  # its record outlived the object
        raise JobNotFound(missing) from None


def streamed(store: S3Store, key: str, media_type: str, request: Request, download: bool = True) -> StreamingResponse:
    """The object streamed through the API in chunks (never read whole: a slow client holds a chunk, not the file),
    or the one range asked for; `download`: with an attachment Content-Disposition. FileNotFoundError if missing."""
    # This answer carries no validator, so an If-Range cannot be current: the whole object (RFC 9110 13.1.5).
    wanted = None if "if-range" in request.headers else requested_range(request.headers.get("range"))
    try:
        read = store.open_read(key, wanted.header() if wanted else None)
    except RangeNotSatisfiable:
        raise UnsatisfiableRange(store.size(key)) from None
    headers = {"Content-Length": str(read.length), "Accept-Ranges": "bytes"}
    if download:
        headers["Content-Disposition"] = f'attachment; filename="{Path(key).name}"'
    if read.content_range:
        headers["Content-Range"] = read.content_range
    return ObjectStream(read, status_code=206 if read.content_range else 200, media_type=media_type, headers=headers)


class ObjectStream(StreamingResponse):
    """A streamed S3 object whose body is closed however the answer ends: sent whole, cut short by its client, or
    abandoned by the send timeout (api/limits.SlowReaderLimit). A background task would run after a whole answer
    only, leaving the object's connection out of the pool until the garbage collector found it."""

    def __init__(self, read: ObjectRead, **kwargs: Any):
        super().__init__(read.chunks, **kwargs)
        self.close_object = read.close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await anyio.to_thread.run_sync(self.close_object)
