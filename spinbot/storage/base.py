"""The artifact store interface. Keys are POSIX-style relative paths: jobs/<job id>/<node id>/<name>."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import NamedTuple

from spinbot.errors import StorageKeyError, echo

_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=-]*")  # fullmatch: `$` alone also matched before a final newline


class Usage(NamedTuple):
    """What is stored under a prefix: bytes and files."""

    bytes: int
    files: int


def check_key(key: str) -> str:
    """Refuse any key that could name something outside the store root (.., absolute, backslash, empty parts)."""
    if not isinstance(key, str) or not key:
        raise StorageKeyError("artifact key is empty")
    if key.startswith("/") or "\\" in key or "\x00" in key or re.match(r"^[A-Za-z]:", key):
        raise StorageKeyError(f"artifact key {echo(key)} is not a relative key")
    for part in key.split("/"):
        if part in ("", ".", "..") or not _SEGMENT.fullmatch(part):
            raise StorageKeyError(f"artifact key {echo(key)} has an invalid part {echo(part)}")
    return key


def artifact_key(job_id: str, node_id: str, name: str) -> str:
    return check_key(f"jobs/{job_id}/{node_id}/{name}")


class ArtifactStore(ABC):
    """Artifacts by key. Backends: a local folder (embedded) and S3."""

    url: str

    @abstractmethod
    def upload(self, src: Path, key: str, content_type: str | None = None) -> None: ...

    @abstractmethod
    def download(self, key: str, dest: Path) -> None: ...

    @abstractmethod
    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None: ...

    @abstractmethod
    def get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str) -> list[str]: ...

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int: ...

    @abstractmethod
    def size(self, key: str) -> int: ...

    @abstractmethod
    def usage(self, prefix: str) -> Usage:
        """Bytes and files stored under `prefix` (an owner's uploads, against their quota)."""


def open_store(url: str) -> ArtifactStore:
    if url.startswith("file://"):
        from spinbot.storage.local import LocalStore

        return LocalStore(Path(url.removeprefix("file://")))
    if url.startswith("s3://"):
        from spinbot.storage.s3 import S3Store

        return S3Store.from_url(url)
    raise StorageKeyError(f"unsupported storage URL '{url}' (expected file://PATH or s3://BUCKET)")
