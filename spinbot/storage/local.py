"""The embedded artifact store: a local folder. Every path is resolved and checked to stay under the root."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from spinbot.errors import StorageKeyError
from spinbot.storage.base import ArtifactStore, Usage, check_key


class LocalStore(ArtifactStore):
    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.url = f"file://{self.root}"

    def path(self, key: str) -> Path:
        check_key(key)
        path = (self.root / key).resolve()
        # Symlinks inside the root could still point out of it: check the resolved path too.
        if not path.is_relative_to(self.root):
            raise StorageKeyError(f"artifact key '{key}' leaves the store root")
        return path

    def _write_atomic(self, key: str, writer) -> None:
        dest = self.path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                writer(out)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def upload(self, src: Path, key: str, content_type: str | None = None) -> None:
        with open(src, "rb") as fin:
            self._write_atomic(key, lambda out: shutil.copyfileobj(fin, out, 1 << 20))

    def download(self, key: str, dest: Path) -> None:
        src = self.path(key)
        if not src.is_file():
            raise FileNotFoundError(f"artifact '{key}' not found")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        self._write_atomic(key, lambda out: out.write(data))

    def get_bytes(self, key: str) -> bytes:
        src = self.path(key)
        if not src.is_file():
            raise FileNotFoundError(f"artifact '{key}' not found")
        return src.read_bytes()

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self.path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        if not base.exists():
            return []
        # os.walk, not Path.rglob: a folder another request deletes during the walk (an upload past the quota, a
        # deleted job) is skipped, where rglob raised FileNotFoundError (a 500 for two uploads sent at once)
        keys = []
        for folder, _, names in os.walk(base):
            for name in names:
                path = Path(folder, name)
                if not name.startswith(".tmp-") and path.is_file():
                    keys.append(path.relative_to(self.root).as_posix())
        return sorted(keys)

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(prefix)
        for key in keys:
            self.path(key).unlink(missing_ok=True)
        self._remove_empty_folders(prefix.rstrip("/"))
        return len(keys)

    def _remove_empty_folders(self, prefix: str) -> None:
        """A prefix that names a folder (a job's, an upload's) goes with its files: no empty tree per deleted job."""
        folder = self.path(prefix) if prefix else self.root
        if folder == self.root or not folder.is_dir():
            return
        for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            if not any(sub.iterdir()):
                sub.rmdir()
        if not any(folder.iterdir()):
            folder.rmdir()

    def size(self, key: str) -> int:
        return self.path(key).stat().st_size

    def usage(self, prefix: str) -> Usage:
        total = files = 0
        for key in self.list(prefix):
            try:
                total += self.path(key).stat().st_size
                files += 1
            except FileNotFoundError:  # deleted meanwhile
                pass
        return Usage(total, files)
