"""A node's live output over HTTP: GET /v1/jobs/{id}/live/{node}/index.m3u8 and the segments it lists.

The same auth as artifacts: the caller's key (header, or ?api_key= for players that cannot send headers) sees only
its own jobs. The playlist is an HLS EVENT playlist that the task extends window by window. It ends with ENDLIST
exactly when the node has ended: held back while the node still runs (its last segment is written a moment before
the node ends), and added for a node that ended without finishing it (failed, cancelled), so a player stops waiting. Segments go through the API from any store: they are small, and players
fetch them by XHR, which a redirect to S3 would expose to the bucket's CORS rules.
"""

from __future__ import annotations

import re

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, Response

from spinbot.api.auth import media_owner
from spinbot.errors import JobNotFound
from spinbot.media.segments import ENDLIST, PLAYLIST, PLAYLIST_TYPE, SEGMENT_TYPE
from spinbot.state.store import FINAL_STATES, JobView, NodeView
from spinbot.tasks.live import live_key

router = APIRouter()

SEGMENT_NAME = re.compile(r"seg-\d{5}\.ts")
NO_STORE = {"Cache-Control": "no-cache"}  # the playlist grows; a cached copy would stall the player


@router.get(f"/v1/jobs/{{job_id}}/live/{{node_id}}/{PLAYLIST}", tags=["live"])
def live_playlist(job_id: str, node_id: str, request: Request, owner: str | None = Depends(media_owner)):
    """The node's live HLS playlist: 404 until its first segment is written."""
    job = _owned_job(request, job_id, owner)
    node = _node(job, node_id)
    text = _stored(request, live_key(job.id, node.node_id), f"node '{node_id}' of job '{job_id}' has no live output "
                   "yet").decode()
    text = "".join(line for line in text.splitlines(keepends=True) if line.strip() != ENDLIST)
    if node.status in FINAL_STATES:
        text += ENDLIST + "\n"
    return Response(_with_query(text, request.url.query), media_type=PLAYLIST_TYPE, headers=NO_STORE)


@router.get("/v1/jobs/{job_id}/live/{node_id}/{segment}", tags=["live"])
def live_segment(job_id: str, node_id: str, segment: str, request: Request,
                 owner: str | None = Depends(media_owner)):
    """One MPEG-TS segment of the node's live output."""
    job = _owned_job(request, job_id, owner)
    node = _node(job, node_id)
    if not SEGMENT_NAME.fullmatch(segment):
        raise JobNotFound(f"no live segment '{segment}' for node '{node_id}'")
    key = live_key(job.id, node.node_id, segment)
    store = request.app.state.services.runner.artifacts
    missing = f"no live segment '{segment}' for node '{node_id}' of job '{job_id}'"
    if hasattr(store, "path"):  # the local store: served from the file, with range requests
        path = store.path(key)
        if not path.is_file():
            raise JobNotFound(missing)
        return FileResponse(path, media_type=SEGMENT_TYPE)
    return Response(_stored(request, key, missing), media_type=SEGMENT_TYPE)


def _owned_job(request: Request, job_id: str, owner: str | None) -> JobView:
    if not re.fullmatch(r"[0-9a-f]{32}", job_id):
        raise JobNotFound(f"job '{job_id}' not found")
    jobs = request.app.state.services.runner.jobs
    return jobs.get(job_id, owner=owner) if owner is not None else jobs.get(job_id)


def _node(job: JobView, node_id: str) -> NodeView:
    node = next((n for n in job.nodes if n.node_id == node_id), None)
    if node is None:
        raise JobNotFound(f"job '{job.id}' has no node '{node_id}'")
    return node


def _stored(request: Request, key: str, missing: str) -> bytes:
    try:
        return request.app.state.services.runner.artifacts.get_bytes(key)
    except FileNotFoundError:
        raise JobNotFound(missing) from None


def _with_query(playlist: str, query: str) -> str:
    """Segment URIs carry the playlist request's query (?api_key=...), for players that cannot send headers."""
    if not query:
        return playlist
    lines = playlist.splitlines()
    return "\n".join(line if line.startswith("#") or not line else f"{line}?{query}" for line in lines) + "\n"
