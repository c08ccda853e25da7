"""A node's live output over HTTP: GET /v1/jobs/{id}/live/{node}/index.m3u8 and the segments it lists.

The same auth as artifacts: the header key or the media cookie (players load by URL), and a key sees only its own
jobs. The playlist is an HLS EVENT playlist that the task extends window by window. It ends with ENDLIST exactly
when the node has ended: held back while the node still runs (its last segment is written a moment before the node
ends), and added for a node that ended without finishing it (failed, cancelled), so that a player stops waiting.
Segments go through the API from any store, streamed (a window or an upscaler's batch can be megabytes): players
fetch them by XHR, which a redirect to S3 would expose to the bucket's CORS rules.
"""

from __future__ import annotations

import re

from fastapi import APIRouter, Request
from fastapi.responses import Response

from spinbot.api.deps import MediaOwner, ServicesDep
from spinbot.api.errors import error_responses
from spinbot.api.files import FileDownload, stat_of
from spinbot.api.routes.artifacts import streamed
from spinbot.errors import JobNotFound, echo
from spinbot.media.segments import ENDLIST, PLAYLIST, PLAYLIST_TYPE, SEGMENT_TYPE
from spinbot.state.store import FINAL_STATES, JobView, NodeView
from spinbot.storage.local import LocalStore
from spinbot.storage.s3 import S3Store
from spinbot.tasks.live import live_key

router = APIRouter(tags=["live"])

SEGMENT_NAME = re.compile(r"seg-[0-9]{5}\.ts")  # ASCII digits: `\d` took any script's (a 400 from the store)
NO_STORE = {"Cache-Control": "no-store"}  # the playlist grows; a cached copy would stall the player


@router.get(
    f"/v1/jobs/{{job_id}}/live/{{node_id}}/{PLAYLIST}",
    response_class=Response,
    responses={
        200: {"content": {PLAYLIST_TYPE: {}}, "description": "the HLS playlist"},
        **error_responses(401, 404, 422),
    },
)
def live_playlist(job_id: str, node_id: str, services: ServicesDep, owner: MediaOwner):
    """The node's live HLS playlist: 404 until its first segment is written."""
    job = services.owned_job(job_id, owner)
    node = _node(job, node_id)
    stored = _stored(
        services, live_key(job.id, node.node_id), f"node '{node_id}' of job '{job_id}' has no live output yet"
    ).decode()
    text = "".join(line for line in stored.splitlines(keepends=True) if line.strip() != ENDLIST)
    if node.status in FINAL_STATES:
        text += ENDLIST + "\n"
    return Response(text, media_type=PLAYLIST_TYPE, headers=NO_STORE)


@router.get(
    "/v1/jobs/{job_id}/live/{node_id}/{segment}",
    response_class=Response,
    responses={
        200: {"content": {SEGMENT_TYPE: {}}, "description": "one MPEG-TS segment"},
        206: {"description": "the requested byte range of a segment"},
        **error_responses(401, 404, 416, 422),
    },
)
def live_segment(
    job_id: str, node_id: str, segment: str, request: Request, services: ServicesDep, owner: MediaOwner
) -> Response:
    """One MPEG-TS segment of the node's live output."""
    job = services.owned_job(job_id, owner)
    node = _node(job, node_id)
    if not SEGMENT_NAME.fullmatch(segment):
        raise JobNotFound(f"no live segment {echo(segment)} for node '{node_id}'")
    key = live_key(job.id, node.node_id, segment)
    store = services.runner.artifacts
    missing = f"no live segment '{segment}' for node '{node_id}' of job '{job_id}'"
    if isinstance(store, LocalStore):  # served from the file, with range requests
        path = store.path(key)
        return FileDownload(path, stat_of(path, missing), media_type=SEGMENT_TYPE).with_range(request.headers)
    if not isinstance(store, S3Store):
        raise TypeError(f"no way to serve files from a {type(store).__name__}")
    try:  # S3: streamed, as artifacts are; read whole, each slow client held a copy of a window or a batch
        return streamed(store, key, SEGMENT_TYPE, request, download=False)
    except FileNotFoundError:
        raise JobNotFound(missing) from None


def _node(job: JobView, node_id: str) -> NodeView:
    node = next((n for n in job.nodes if n.node_id == node_id), None)
    if node is None:
        raise JobNotFound(f"job '{job.id}' has no node {echo(node_id)}")
    return node


def _stored(services, key: str, missing: str) -> bytes:
    try:
        return services.runner.artifacts.get_bytes(key)
    except FileNotFoundError:
        raise JobNotFound(missing) from None
