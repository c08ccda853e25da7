"""GET /v1/jobs/{id}/artifacts/{node}/{name}: a job's file, by the header key or the media cookie (<video> and
<audio> load by URL). A local store's file is served with Range support; an S3 object is streamed through the API
(Range passed on), or, with SPINBOT_S3_PUBLIC_URL set, redirected to a URL presigned for that public endpoint:
the internal endpoint never reaches a client."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, StreamingResponse

from spinbot.api.deps import MediaOwner, ServicesDep
from spinbot.api.errors import error_responses
from spinbot.errors import JobNotFound

router = APIRouter(tags=["artifacts"])

_ONE_RANGE = re.compile(r"bytes=\d*-\d*")  # one range; anything else gets the whole object


@router.get("/v1/jobs/{job_id}/artifacts/{node_id}/{name}", response_class=StreamingResponse,
            responses={200: {"content": {"application/octet-stream": {}}, "description": "the file"},
                       206: {"description": "the requested byte range"},
                       307: {"description": "to a presigned URL on SPINBOT_S3_PUBLIC_URL, where that is set"},
                       **error_responses(401, 404, 422)})
def artifact(job_id: str, node_id: str, name: str, request: Request, services: ServicesDep, owner: MediaOwner):
    job = services.owned_job(job_id, owner)
    record = next((a for a in job.artifacts if a["node_id"] == node_id and a["name"] == name), None)
    if record is None:
        raise JobNotFound(f"artifact '{node_id}/{name}' not found for job '{job_id}'")
    store, key = services.runner.artifacts, record["key"]
    media_type = record["content_type"] or "application/octet-stream"
    if hasattr(store, "path"):
        return FileResponse(store.path(key), media_type=media_type, filename=Path(key).name)
    public_url = services.settings.s3_public_url
    if public_url:
        return RedirectResponse(store.public_presigned_url(key, public_url), status_code=307)
    wanted = request.headers.get("range")
    read = store.open_read(key, wanted if wanted and _ONE_RANGE.fullmatch(wanted) else None)
    headers = {"Content-Length": str(read.length), "Accept-Ranges": "bytes",
               "Content-Disposition": f'attachment; filename="{Path(key).name}"'}
    if read.content_range:
        headers["Content-Range"] = read.content_range
    return StreamingResponse(read.chunks, status_code=206 if read.content_range else 200, media_type=media_type,
                             headers=headers)
