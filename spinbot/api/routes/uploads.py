"""POST /v1/uploads: a portrait or a voice, with the key checked before the body is read and the size limit
enforced while it arrives; the content is judged from its header first, then by decoding it."""

from __future__ import annotations

import mimetypes
import re
import tempfile
import uuid
from pathlib import Path

import anyio
from fastapi import APIRouter, Request, Response
from pydantic import TypeAdapter, ValidationError

from spinbot.api.deps import Owner, Services, ServicesDep
from spinbot.api.errors import InvalidField, TooManyUploads, UploadTooLarge, error_responses
from spinbot.api.schemas import UploadKind, UploadOut
from spinbot.api.upload_body import receive_upload
from spinbot.errors import Conflict, InputError, JobNotFound, echo
from spinbot.settings import Settings
from spinbot.state.inputs_in_use import delete_unused
from spinbot.storage.base import Usage
from spinbot.storage.uploads import upload_folder, upload_keys

router = APIRouter(tags=["uploads"])

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
    responses=error_responses(400, 401, 413, 422, 429, 503),
)
async def upload(request: Request, services: ServicesDep, owner: Owner) -> UploadOut:
    """At most SPINBOT_MAX_UPLOADS_PER_KEY of a key's uploads at once in this process (429 before the body is read):
    each is written to a temporary file before the key's quota can count it."""
    slot, limit = owner or "", services.settings.max_uploads_per_key
    if not services.uploads.take(slot, limit):  # no await between the count and taking a slot
        raise TooManyUploads(
            f"this key has {limit} uploads in progress, the limit (SPINBOT_MAX_UPLOADS_PER_KEY={limit}); "
            "send the next one when one has finished"
        )
    try:
        return await _upload(request, services, owner)
    finally:
        services.uploads.give_back(slot)


async def _upload(request: Request, services: Services, owner: str | None) -> UploadOut:
    settings, store = services.settings, services.runner.artifacts
    folder = upload_folder(owner)
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
    uploads go with it). Checked and deleted under the key's lock, which a job's insert takes too: a job submitted
    meanwhile either is written first (409 here) or finds the upload gone (its 400)."""
    store, folder = services.runner.artifacts, upload_folder(owner)
    keys = upload_keys(store, owner, upload_id)
    if not keys:
        raise JobNotFound(f"upload {echo(upload_id)} not found")

    def delete(unused: list[str]) -> None:
        if len(unused) == len(keys):  # the folder goes whole: not while a job names one of its files
            store.delete_prefix(f"{folder}{upload_id}/")

    kept = delete_unused(services.runner.jobs.engine, owner, keys, delete)
    if kept:
        job_id = next(iter(kept.values()))  # the newest job naming it
        raise Conflict(f"upload '{upload_id}' is an input of your job '{job_id}'; deleting that job deletes it")
    return Response(status_code=204)


def _check_quota(used: Usage, incoming: int, settings: Settings) -> None:
    """The key's quota with one more upload of `incoming` bytes: its uploads' bytes, and their number, which bounds
    what every upload's check lists (a key of 100,000 uploads of 69 bytes, 7 MB in all, took each next one 10 s)."""
    limit = settings.max_upload_storage_bytes
    if used.bytes + incoming > limit or (incoming == 0 and used.bytes >= limit):
        raise UploadTooLarge(
            f"your uploads hold {used.bytes:,} bytes{f' and this one is {incoming:,}' if incoming else ''}: over the "
            f"limit of {limit:,} (SPINBOT_MAX_UPLOAD_STORAGE_BYTES); delete uploads or jobs you no longer need"
        )
    if used.files >= settings.max_upload_files:
        raise UploadTooLarge(
            f"you have {used.files:,} uploads, the limit (SPINBOT_MAX_UPLOAD_FILES={settings.max_upload_files:,}); "
            "delete uploads or jobs you no longer need"
        )


def _keep_within_quota(store, folder: str, upload_id: str, settings: Settings) -> None:
    """The quota again, with this upload stored: uploads of one key at the same time all passed the first check
    (each measured what the key held before any of them), so a key could hold the quota many times over. Measured
    after storing, in any API process: an upload that takes the key past its quota is deleted (of uploads that
    arrive together, each may be, so the key never holds more than its quota)."""
    used = store.usage(folder)
    if used.bytes > settings.max_upload_storage_bytes or used.files > settings.max_upload_files:
        keys = store.list(f"{folder}{upload_id}/")
        size = sum(store.size(key) for key in keys)
        store.delete_prefix(f"{folder}{upload_id}")
        _check_quota(Usage(used.bytes - size, used.files - len(keys)), size, settings)


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


# The check that decodes an upload, by name: run in a sandbox worker (spinbot.media.sandbox), which imports it.
CHECK = "spinbot.media.upload_check:check_upload"


def check_content(kind: str, path: Path, settings: Settings) -> str:
    """Judge the file by its content, never its name (spinbot.media.upload_check), in a child process with hard
    limits on memory, CPU and time unless SPINBOT_UPLOAD_CHECK_SANDBOX=false. Every failure is a 400 that says why
    (a 503 when no checker could run). Returns the suffix to store it with."""
    from spinbot.media.sandbox import run_checked

    limits = (settings.max_image_pixels, (settings.min_voice_seconds, settings.max_voice_seconds))
    return run_checked(settings, f"the {kind} upload", CHECK, kind, str(path), *limits)
