"""`spinbot models pull`: download each missing file from its source into SPINBOT_MODELS_DIR, verified.

Hub files go through huggingface_hub's hf_hub_download (HF_TOKEN and HF_ENDPOINT honoured, a dropped connection
resumed with a Range request, progress bars) into a staging folder inside the models folder; files not on the Hub
(GitHub release assets) through plain HTTP into `<name>.part`, resumed across runs. Either way the file reaches its
final name only after its sha256 matched: the manifest's, else the Hub's LFS etag (which is the file's sha256). A
file whose hash differs is deleted and reported; nothing half-written or unverified ever sits under a final name.
Never called at job time: the backends only read what is already there.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from spinbot.errors import first_line
from spinbot.models.files import ModelFile
from spinbot.models.manifest import HF, Source

STAGING = ".spinbot-pull"  # inside the models folder: same filesystem, so the final move is an atomic rename
CHUNK = 8 * 1024 * 1024
HTTP_RETRIES = 5
SHA256 = re.compile(r"^[0-9a-f]{64}$")


class PullError(Exception):
    """One file could not be pulled (no source, a network or hub error, a hash that differs); one line."""


class Unreachable(PullError):
    """The source's host took no connection at all (no network, a name that does not resolve, a refused or timed
    out connect): every other file from that host would fail the same way, so `pull` tries none of them."""

    def __init__(self, host: str, reason: str):
        super().__init__(f"cannot reach {host} ({reason})")
        self.host, self.reason = host, reason


def source_host(source: Source) -> str:
    """The host a source is downloaded from: the Hub's (HF_ENDPOINT, else huggingface.co) or the URL's."""
    url = (os.environ.get("HF_ENDPOINT") or HF) if source.is_hub else (source.url or "")
    return urlsplit(url).netloc or url


@dataclass(frozen=True)
class Pulled:
    file: ModelFile
    sha256: str
    verified_against: str  # "manifest", "hub etag", or "" when the source publishes no hash (git files)
    commit: str | None = None  # the Hub commit the file came from


def pull_file(file: ModelFile) -> Pulled:
    source = file.source
    if source is None:
        raise PullError(f"{file.relpath}: no known source (not a seed default); put it in place by hand")
    made = [folder for folder in (file.path.parent, *file.path.parent.parents) if not folder.exists()]
    file.path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return _pull_hub(file, source) if source.is_hub else _pull_url(file, source)
    except PullError:
        for folder in made:  # deepest first: a failed pull leaves no empty folders behind
            _remove_if_empty(folder)
        raise


# ---- Hugging Face Hub ---------------------------------------------------------------------------------------------


def _pull_hub(file: ModelFile, source: Source) -> Pulled:
    import httpx
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    assert source.repo is not None and source.path is not None, "a Hub source names its repository and path"
    endpoint = os.environ.get("HF_ENDPOINT") or None  # read now, not at huggingface_hub's import
    token = os.environ.get("HF_TOKEN") or None
    staging = file.models_dir / STAGING / uuid.uuid4().hex
    try:
        url = hf_hub_url(source.repo, source.path, revision=source.revision, endpoint=endpoint)
        meta = get_hf_file_metadata(url, token=token, endpoint=endpoint)
        expected, against = _expected_hash(source, meta.etag)
        if source.sha256 and meta.etag and SHA256.match(meta.etag) and meta.etag != source.sha256:
            raise PullError(
                f"{file.relpath}: {source.describe()} has sha256 {meta.etag} on the hub, the manifest "
                f"pins {source.sha256}; not downloaded"
            )
        staged = Path(
            hf_hub_download(
                source.repo, source.path, revision=source.revision, local_dir=staging, token=token, endpoint=endpoint
            )
        )
        digest = _verified(staged, expected, file)
        os.replace(staged, file.path)
        return Pulled(file, digest, against, meta.commit_hash)
    except (httpx.ConnectError, httpx.ConnectTimeout) as err:  # before httpx.HTTPError, which they are
        raise Unreachable(source_host(source), first_line(err)) from None
    # httpx.HTTPError: huggingface_hub 1.x speaks httpx, whose refused connections and timeouts are not OSErrors
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, httpx.HTTPError) as err:
        raise PullError(f"{file.relpath}: {source.describe()}: {first_line(err)}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_if_empty(file.models_dir / STAGING)


def _expected_hash(source: Source, etag: str | None) -> tuple[str | None, str]:
    if source.sha256:
        return source.sha256, "manifest"
    if etag and SHA256.match(etag):
        return etag, "hub etag"
    return None, ""


# ---- plain HTTP (files not on the Hub) ----------------------------------------------------------------------------


def _pull_url(file: ModelFile, source: Source) -> Pulled:
    """GET with Range from `<name>.part`'s length: a run cut short resumes in the next run, and a connection
    dropped mid-file is resumed in this one (up to HTTP_RETRIES times). Hand-written because huggingface_hub's
    resumable download only serves Hub URLs."""
    assert source.url is not None, "a plain source has its URL"
    part = file.path.with_name(file.path.name + ".part")
    try:
        _download(source.url, part, source.size, file.relpath)
        digest = _verified(part, source.sha256, file)
    except Unreachable:
        raise
    except OSError as err:
        raise PullError(f"{file.relpath}: {source.url}: {first_line(err)}") from None
    os.replace(part, file.path)
    return Pulled(file, digest, "manifest" if source.sha256 else "")


def _download(url: str, part: Path, size: int | None, label: str) -> None:
    import httpx
    from tqdm.auto import tqdm

    attempts = 0
    answered = False  # the host answered once: a later failure to connect is a dropped connection, retried
    bar = tqdm(total=size, initial=_size(part), unit="B", unit_scale=True, desc=label[-40:], delay=1)
    try:
        while True:
            done = _size(part)
            if size is not None and done >= size:
                return
            try:
                with httpx.stream(
                    "GET", url, headers={"Range": f"bytes={done}-"} if done else {}, follow_redirects=True, timeout=30
                ) as response:
                    answered = True
                    if response.status_code == 416 and done:  # already complete: the server has no bytes left
                        return
                    response.raise_for_status()
                    mode = "ab" if response.status_code == 206 else "wb"  # 200: the server ignored the Range
                    if mode == "wb":
                        bar.reset(total=size)
                    with part.open(mode) as out:
                        for chunk in response.iter_bytes(CHUNK):
                            out.write(chunk)
                            bar.update(len(chunk))
                return
            except (httpx.ConnectError, httpx.ConnectTimeout) as err:
                if not answered:  # no network, a name that does not resolve, nothing listening: no retry helps
                    raise Unreachable(urlsplit(url).netloc, first_line(err)) from None
                attempts = _retry(attempts, err)
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.TimeoutException) as err:
                attempts = _retry(attempts, err)
            except httpx.HTTPStatusError as err:
                raise OSError(f"HTTP {err.response.status_code}") from None
    finally:
        bar.close()


def _retry(attempts: int, err: Exception) -> int:
    """One more try of a dropped connection after a short wait; OSError past HTTP_RETRIES."""
    attempts += 1
    if attempts > HTTP_RETRIES:
        raise OSError(f"connection lost {attempts} times, last: {err}") from None
    time.sleep(min(2**attempts, 10) * 0.1)
    return attempts


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0


# ---- verification -------------------------------------------------------------------------------------------------


def _verified(path: Path, expected: str | None, file: ModelFile) -> str:
    """The file's sha256, or a PullError (the file deleted) when it differs from `expected`."""
    digest = sha256_of(path)
    if expected is not None and digest != expected:
        path.unlink(missing_ok=True)
        raise PullError(f"{file.relpath}: downloaded file has sha256 {digest}, expected {expected}; removed")
    return digest


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass
