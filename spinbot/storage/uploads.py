"""Where a client's uploads are stored: uploads/<owner>/<upload id>/<kind>.<ext>, the owner being the hash of the
API key (`local` on a server without keys, and for the CLI). An upload is named by its id (what POST /v1/uploads
answers) and found only in its owner's folder: another key's id is unknown, the same as one that never was."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from spinbot.errors import InputError
from spinbot.storage.base import ArtifactStore

UPLOAD_ID = re.compile(r"[0-9a-f]{32}")  # uuid4().hex
_UPLOAD_KEY = re.compile(r"uploads/[^/]+/([0-9a-f]{32})/[^/]+")


def upload_folder(owner: str | None) -> str:
    return f"uploads/{owner or 'local'}/"


def upload_keys(store: ArtifactStore, owner: str | None, upload_id: str) -> list[str]:
    """The stored file of the owner's upload `upload_id` (one key), or [] for an id that is none of theirs."""
    if not UPLOAD_ID.fullmatch(upload_id or ""):
        return []
    return store.list(f"{upload_folder(owner)}{upload_id}/")


def upload_key(store: ArtifactStore, owner: str | None, upload_id: str, kind: str) -> str | None:
    """The stored file of the owner's `kind` ("portrait", "voice") upload `upload_id`; None for any other id."""
    return next((k for k in upload_keys(store, owner, upload_id) if PurePosixPath(k).stem == kind), None)


def upload_id_of(key: str) -> str | None:
    """The upload id in an upload's stored key; None for any other key."""
    match = _UPLOAD_KEY.fullmatch(key)
    return match[1] if match else None


def require_stored(store: ArtifactStore, inputs: dict[str, str]) -> None:
    """InputError naming the first of a job's inputs ({name: key}) that is an upload no longer stored: deleted after
    the job's checks found it (spinbot.state.inputs_in_use: called where no upload can be deleted until the job is
    written or refused)."""
    for name, key in inputs.items():
        upload_id = upload_id_of(key)
        if upload_id is not None and not store.exists(key):
            raise InputError(
                f"upload '{upload_id}' ({name}) was deleted while the job was being submitted; upload it again"
            )
