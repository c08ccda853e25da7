"""POST /v1/uploads: a portrait or a voice, with the key checked before the body is read and the size limit
enforced while it arrives; the content is judged from its header first, then by decoding it."""

from __future__ import annotations

import logging
import mimetypes
import re
import tempfile
import uuid
from pathlib import Path

import anyio
from fastapi import APIRouter, Request, Response
from pydantic import TypeAdapter, ValidationError

from spinbot.api.deps import Owner, ServicesDep
from spinbot.api.errors import InvalidField, UploadTooLarge, error_responses
from spinbot.api.schemas import UploadKind, UploadOut
from spinbot.api.upload_body import receive_upload
from spinbot.errors import Conflict, InputError, InputTooLarge, JobNotFound, echo
from spinbot.settings import Settings

router = APIRouter(tags=["uploads"])
log = logging.getLogger(__name__)

# The body is read by the route itself (spinbot.api.upload_body), so its form is described here for /openapi.json.
_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["kind", "file"],
                    "properties": {
                        "kind": {"type": "string", "enum": ["portrait", "voice"]},
                        "file": {"type": "string", "format": "binary"},
                    },
                }
            }
        },
    },
}
_KIND = TypeAdapter(UploadKind)


@router.post(
    "/v1/uploads",
    status_code=201,
    response_model=UploadOut,
    openapi_extra=_FORM,
    responses=error_responses(400, 401, 413, 422),
)
async def upload(request: Request, services: ServicesDep, owner: Owner) -> UploadOut:
    settings, store = services.settings, services.runner.artifacts
    folder = _owner_folder(owner)
    used = await anyio.to_thread.run_sync(store.usage, folder)
    _check_quota(used, 0, settings)  # full already: refused before the body is read
    with tempfile.TemporaryDirectory(prefix="spinbot-upload-") as tmp:
        received = await receive_upload(request, Path(tmp) / "upload", settings.max_upload_bytes)
        _check_quota(used, received.size, settings)
        kind = _kind(received.fields.get("kind"))
        if received.path is None:
            raise InvalidField("file: Field required")
        if received.size == 0:
            raise InputError("upload is empty")
        local = received.path.rename(received.path.with_suffix(_safe_suffix(received.filename)))
        suffix = await anyio.to_thread.run_sync(check_content, kind, local, settings)
        upload_id = uuid.uuid4().hex
        key = f"{folder}{upload_id}/{kind}{suffix}"
        content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
        await anyio.to_thread.run_sync(lambda: store.upload(local, key, content_type=content_type))
    await anyio.to_thread.run_sync(_keep_within_quota, store, folder, upload_id, settings)
    services.metrics.upload_bytes.observe(received.size)
    return UploadOut(id=upload_id, kind=kind, size=received.size, filename=received.filename)


@router.delete(
    "/v1/uploads/{upload_id}", status_code=204, response_class=Response, responses=error_responses(401, 404, 409)
)
def delete_upload(upload_id: str, services: ServicesDep, owner: Owner) -> Response:
    """Delete one of the key's uploads that none of its jobs names (409 while one does: delete the job, and its
    uploads go with it)."""
    store, folder = services.runner.artifacts, _owner_folder(owner)
    keys = upload_keys(store, owner, upload_id)
    if not keys:
        raise JobNotFound(f"upload {echo(upload_id)} not found")
    if services.runner.jobs.input_keys_in_use("", owner) & set(keys):
        raise Conflict(f"upload '{upload_id}' is an input of one of your jobs; deleting that job deletes it")
    store.delete_prefix(f"{folder}{upload_id}")
    return Response(status_code=204)


def _owner_folder(owner: str | None) -> str:
    return f"uploads/{owner or 'local'}/"


def upload_keys(store, owner: str | None, upload_id: str) -> list[str]:
    """The stored file of the owner's upload `upload_id` (one key), or [] for an id that is none of theirs."""
    if not re.fullmatch(r"[0-9a-f]{32}", upload_id or ""):
        return []
    return store.list(f"{_owner_folder(owner)}{upload_id}/")


def _check_quota(used: int, incoming: int, settings: Settings) -> None:
    limit = settings.max_upload_storage_bytes
    if used + incoming > limit or (incoming == 0 and used >= limit):
        raise UploadTooLarge(
            f"your uploads hold {used:,} bytes{f' and this one is {incoming:,}' if incoming else ''}: over the "
            f"limit of {limit:,} (SPINBOT_MAX_UPLOAD_STORAGE_BYTES); delete uploads or jobs you no longer need"
        )


def _keep_within_quota(store, folder: str, upload_id: str, settings: Settings) -> None:
    """The quota again, with this upload stored: uploads of one key at the same time all passed the first check
    (each measured what the key held before any of them), so a key could hold the quota many times over. Measured
    after storing, in any API process: an upload that takes the key past its quota is deleted (of uploads that
    arrive together, each may be, so the key never holds more than its quota)."""
    used = store.usage(folder)
    if used > settings.max_upload_storage_bytes:
        size = sum(store.size(key) for key in store.list(f"{folder}{upload_id}/"))
        store.delete_prefix(f"{folder}{upload_id}")
        _check_quota(used - size, size, settings)


def _kind(value: str | None) -> UploadKind:
    if value is None:
        raise InvalidField("kind: Field required")
    try:
        return _KIND.validate_python(value)
    except ValidationError as err:
        raise InvalidField(f"kind: {err.errors()[0]['msg']}") from None


def _safe_suffix(filename: str | None) -> str:
    suffix = Path(filename or "").suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix) else ".bin"


# The suffix an upload is stored with, from the format its content was read as (Pillow's names, then libsndfile's or
# FFmpeg's first demuxer name), never from the client's file name: it sets the Content-Type the file is served with
# (an S3 object kept the client's own, so a portrait that was also HTML, presigned for SPINBOT_S3_PUBLIC_URL, was a
# web page on that endpoint). A format not named here is stored as .bin (application/octet-stream).
STORED_SUFFIXES = {
    **{f: f".{f.lower()}" for f in ("AVIF", "BMP", "GIF", "PNG", "PPM", "TIFF", "WEBP", "MPO")},
    "JPEG": ".jpg",
    "JPEG2000": ".jp2",
    **dict.fromkeys(("WAV", "WAVEX", "RF64", "wav"), ".wav"),
    **{f: f".{f.lower()}" for f in ("FLAC", "flac", "OGG", "ogg", "MP3", "mp3", "AIFF", "aiff", "aac", "avi")},
    "mov": ".m4a",
    "matroska": ".mka",
}


def check_content(kind: str, path: Path, settings: Settings) -> str:
    """Judge the file by its content, never its name: the header against the limits first (no decode of a file
    that claims 30000x30000 or two hours), then a full decode. Every failure is a 400 that says why. Returns the
    suffix to store it with (STORED_SUFFIXES)."""
    from spinbot.media.audio import load_voice, probe_audio
    from spinbot.media.image import load_portrait, probe_image

    try:
        if kind == "portrait":
            load_portrait(path, settings.max_image_pixels)
            found = probe_image(path, settings.max_image_pixels).format
        else:
            load_voice(path, max_seconds=settings.max_voice_seconds)
            found = probe_audio(path).format.split(",")[0]
    except InputTooLarge as err:
        raise InputTooLarge(f"the {kind} upload is refused: {err}") from None
    except Exception as err:  # noqa: BLE001 - InputError, or anything a decoder raised on a hostile file
        if not isinstance(err, InputError):
            log.warning("decoder failed on an upload", extra={"kind": kind, "error": repr(err)})
        what = "an image" if kind == "portrait" else "audio"
        raise InputError(f"the {kind} upload is not {what} that can be decoded") from None
    return STORED_SUFFIXES.get(found, ".bin")
