"""The production artifact store: an S3 bucket (AWS S3, MinIO or any S3-compatible server) through boto3.

Same interface and key rules as LocalStore. Configuration comes from settings (endpoint, region, multipart sizes,
presigned URL lifetime) and the URL (`s3://BUCKET` or `s3://BUCKET/prefix`); credentials come from boto3's usual
chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE, instance roles ...), never from spinbot settings.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

from spinbot.errors import SpinBotError, StorageKeyError
from spinbot.settings import Settings, get_settings
from spinbot.storage.base import ArtifactStore, Usage, check_key

# S3 bucket naming rules (3-63 chars, lowercase letters, digits, dots, hyphens); checked early for a clear error.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# HEAD requests carry no body, so a missing key or bucket comes back as a bare "404".
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})
_DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys a call
_MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # SigV4 refuses longer-lived URLs


_READ_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ObjectRead:
    chunks: Iterator[bytes]
    length: int  # bytes in `chunks`
    content_range: str | None  # "bytes a-b/total" when a range was asked for
    content_type: str | None
    # Closes the object's body: the reader calls it when it stops, whether the chunks ran out or not (a client gone,
    # a HEAD), so the connection goes back to the pool at once instead of whenever the garbage collector finds it.
    close: Callable[[], None]


class RangeNotSatisfiable(SpinBotError):
    """A Range header outside the object."""


class StorageUnavailable(SpinBotError):
    """The S3 store cannot serve requests: a missing bucket, no credentials, an unreachable endpoint, access denied."""


class BucketMissing(StorageUnavailable):
    """The configured bucket does not exist (and is never created implicitly)."""


def _code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def _make_client(endpoint_url: str | None, region: str | None, retry_mode: str = "standard", max_attempts: int = 12):
    session = boto3.session.Session()
    region = region or session.region_name or "us-east-1"
    options: dict = {}
    if endpoint_url:
        # Non-AWS servers (MinIO, moto, Ceph ...) have no per-bucket DNS names, and several reject the CRC checksums
        # botocore adds to every upload by default since 1.36: send them only where the API requires them.
        options = {"request_checksum_calculation": "when_required", "response_checksum_validation": "when_required"}
    config = Config(
        signature_version="s3v4",  # presigned URLs for MinIO and newer AWS regions need SigV4
        s3={"addressing_style": "path" if endpoint_url else "auto"},
        # Both modes retry refused and dropped connections, timeouts, 5xx and throttling with jittered exponential
        # backoff; "adaptive" also slows the client's own request rate while the server throttles.
        retries={"mode": retry_mode, "total_max_attempts": max_attempts},
        connect_timeout=10,
        read_timeout=120,
        **options,
    )
    return session.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)


class S3Store(ArtifactStore):
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        multipart_threshold: int = 64 * 1024 * 1024,
        multipart_chunksize: int = 16 * 1024 * 1024,
        presign_seconds: int = 3600,
        retry_mode: str = "standard",
        max_attempts: int = 12,
    ):
        if not _BUCKET.match(bucket):
            raise StorageKeyError(f"invalid S3 bucket name '{bucket}' (3-63 lowercase letters, digits, '.', '-')")
        self.bucket = bucket
        # The prefix becomes part of every object key, so it obeys the same rules as a key.
        self.prefix = check_key(prefix.strip("/")) + "/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.endpoint_url = endpoint_url
        self.presign_seconds = presign_seconds
        self.client = _make_client(endpoint_url, region, retry_mode, max_attempts)
        self.transfer = TransferConfig(multipart_threshold=multipart_threshold, multipart_chunksize=multipart_chunksize)
        self._public_client: Any = None  # made on first use by public_presigned_url

    @classmethod
    def from_url(cls, url: str, settings: Settings | None = None) -> S3Store:
        """`s3://BUCKET` or `s3://BUCKET/prefix`, with endpoint, region and sizes from settings."""
        settings = settings or get_settings()
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        return cls(
            bucket,
            prefix,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            multipart_threshold=settings.s3_multipart_threshold,
            multipart_chunksize=settings.s3_multipart_chunksize,
            presign_seconds=settings.s3_presign_seconds,
            retry_mode=settings.s3_retry_mode,
            max_attempts=settings.s3_max_attempts,
        )

    # --- the ArtifactStore interface -------------------------------------------------------------------------------

    def upload(self, src: Path, key: str, content_type: str | None = None) -> None:
        """Large files go up in parts (TransferConfig threshold), so a multi-GB video never sits in memory."""
        name = self._object_key(key)
        extra = {"ContentType": content_type} if content_type else None
        with self._errors(key):
            self.client.upload_file(str(src), self.bucket, name, ExtraArgs=extra, Config=self.transfer)

    def download(self, key: str, dest: Path) -> None:
        name = self._object_key(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        # boto3 writes to a temporary name and renames at the end, so a failed download leaves no partial dest.
        with self._errors(key):
            self.client.download_file(self.bucket, name, str(dest), Config=self.transfer)

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        name = self._object_key(key)
        extra = {"ContentType": content_type} if content_type else {}
        with self._errors(key):
            self.client.put_object(Bucket=self.bucket, Key=name, Body=data, **extra)

    def get_bytes(self, key: str) -> bytes:
        name = self._object_key(key)
        with self._errors(key):
            return self.client.get_object(Bucket=self.bucket, Key=name)["Body"].read()

    def exists(self, key: str) -> bool:
        try:
            self._head(key)
        except FileNotFoundError:
            return False
        return True

    def size(self, key: str) -> int:
        return self._head(key)["ContentLength"]

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._folder(prefix))
        with self._errors():
            for page in pages:
                # A key ending in "/" is a console-made folder marker, not an artifact.
                keys += [o["Key"][len(self.prefix) :] for o in page.get("Contents", []) if not o["Key"].endswith("/")]
        return sorted(keys)

    def usage(self, prefix: str) -> Usage:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._folder(prefix))
        with self._errors():
            sizes = [o.get("Size", 0) for page in pages for o in page.get("Contents", [])]
        return Usage(sum(sizes), len(sizes))

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(prefix)
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = [{"Key": self.prefix + key} for key in keys[start : start + _DELETE_BATCH]]
            with self._errors():
                reply = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            self._raise_delete_errors(reply.get("Errors") or [])
        return len(keys)

    # --- S3 extras ---------------------------------------------------------------------------------------------------

    def presigned_url(self, key: str, seconds: int | None = None) -> str:
        """A GET URL anyone holding it can fetch until it expires. Signing makes no request, so a missing key shows
        up only as a 404 when the URL is fetched."""
        name = self._object_key(key)
        seconds = seconds or self.presign_seconds
        if not 1 <= seconds <= _MAX_PRESIGN_SECONDS:
            raise ValueError(f"presigned URL lifetime must be 1..{_MAX_PRESIGN_SECONDS} seconds, not {seconds}")
        with self._errors(key):
            return self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": name}, ExpiresIn=seconds
            )

    def public_presigned_url(
        self,
        key: str,
        public_url: str,
        seconds: int | None = None,
        *,
        content_type: str | None = None,
        disposition: str | None = None,
    ) -> str:
        """presigned_url for the endpoint that clients reach (SPINBOT_S3_PUBLIC_URL): SigV4 signs the host, so the
        URL is signed by a client that names that endpoint (it makes no request). `content_type` and `disposition`
        are signed into the URL (response-content-type, response-content-disposition): S3 answers with them instead
        of the object's stored ones, which for an object stored before uploads got their detected type are the
        client's own (text/html on a portrait made a web page on that endpoint)."""
        if self._public_client is None or self._public_client.meta.endpoint_url != public_url.rstrip("/"):
            self._public_client = _make_client(public_url.rstrip("/"), self.client.meta.region_name)
        name, seconds = self._object_key(key), seconds or self.presign_seconds
        params = {"Bucket": self.bucket, "Key": name}
        if content_type:
            params["ResponseContentType"] = content_type
        if disposition:
            params["ResponseContentDisposition"] = disposition
        with self._errors(key):
            return self._public_client.generate_presigned_url("get_object", Params=params, ExpiresIn=seconds)

    def open_read(self, key: str, byte_range: str | None = None) -> ObjectRead:
        """The object (or one `bytes=a-b` range of it) as a stream of chunks, for the API to pass on."""
        extra = {"Range": byte_range} if byte_range else {}
        with self._errors(key):
            reply = self.client.get_object(Bucket=self.bucket, Key=self._object_key(key), **extra)
        body = reply["Body"]
        return ObjectRead(
            body.iter_chunks(_READ_CHUNK),
            reply["ContentLength"],
            reply.get("ContentRange"),
            reply.get("ContentType"),
            body.close,
        )

    def ensure_bucket(self) -> bool:
        """Create the bucket if it is missing; True when this call created it. Never called implicitly: a typo in
        SPINBOT_STORAGE_URL must fail loudly rather than quietly fill a new bucket."""
        try:
            self.check_bucket()
            return False
        except BucketMissing:
            pass
        region = self.client.meta.region_name
        # us-east-1 is the one region that refuses an explicit LocationConstraint.
        where = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        with self._errors():
            try:
                self.client.create_bucket(Bucket=self.bucket, **where)
            except ClientError as err:
                # Another worker created it between our check and our create: that is what we wanted.
                if _code(err) == "BucketAlreadyOwnedByYou":
                    return False
                raise
        return True

    def check_bucket(self) -> None:
        """One request that fails with the one-line error when the bucket is missing or unreachable (startup check)."""
        with self._errors():
            self.client.head_bucket(Bucket=self.bucket)

    def close(self) -> None:
        self.client.close()

    # --- helpers -----------------------------------------------------------------------------------------------------

    def _object_key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _folder(self, prefix: str) -> str:
        # Like LocalStore, a prefix names a folder: "jobs/1" lists jobs/1/... and never jobs/10/...
        if not prefix.strip("/"):
            return self.prefix
        return self.prefix + check_key(prefix.rstrip("/")) + "/"

    def _head(self, key: str) -> dict:
        name = self._object_key(key)
        with self._errors(key):
            return self.client.head_object(Bucket=self.bucket, Key=name)

    @contextmanager
    def _errors(self, key: str | None = None) -> Iterator[None]:
        """Turn boto errors into FileNotFoundError (missing key, like LocalStore) or one clear StorageUnavailable."""
        try:
            yield
        except S3UploadFailedError as err:
            # boto3 wraps upload ClientErrors in a plain message; the original error rides on __context__.
            cause = err.__context__
            raise self._translate(cause if isinstance(cause, ClientError) else err, key) from err
        except (ClientError, BotoCoreError) as err:
            raise self._translate(err, key) from err

    def _translate(self, err: Exception, key: str | None) -> Exception:
        if isinstance(err, ClientError):
            return self._translate_client_error(err, key)
        if isinstance(err, NoCredentialsError):
            return StorageUnavailable(
                f"no AWS credentials for {self.url}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
            )
        if isinstance(err, EndpointConnectionError):
            return StorageUnavailable(f"cannot reach the S3 endpoint for {self.url}: {err}")
        return StorageUnavailable(f"S3 error on {self.url}: {err}")

    def _translate_client_error(self, err: ClientError, key: str | None) -> Exception:
        code = _code(err)
        if code == "NoSuchBucket" or (code in _NOT_FOUND and (key is None or self._bucket_really_missing())):
            return BucketMissing(f"S3 bucket '{self.bucket}' does not exist{self._at()}; {self._create_hint()}")
        if code in _NOT_FOUND:
            return FileNotFoundError(f"artifact '{key}' not found")
        if code == "InvalidRange":
            return RangeNotSatisfiable(f"the requested range is outside artifact '{key}'")
        message = err.response.get("Error", {}).get("Message") or "no message"
        return StorageUnavailable(f"S3 error on {self.url}: {code}: {message}")

    def _bucket_really_missing(self) -> bool:
        # A bare 404 on an object HEAD is either a missing key or a missing bucket: ask about the bucket.
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as err:
            return _code(err) in _NOT_FOUND | {"NoSuchBucket"}
        except BotoCoreError:
            return False
        return False

    def _raise_delete_errors(self, errors: builtins.list[dict]) -> None:  # `list` is a method here
        if errors:
            first = errors[0]
            raise StorageUnavailable(
                f"S3 error on {self.url}: {len(errors)} objects not deleted, first '{first.get('Key')}': "
                f"{first.get('Code')}: {first.get('Message')}"
            )

    def _create_hint(self) -> str:
        """The command that makes the bucket (the Python method it used to name is no help at a shell)."""
        endpoint = f" --endpoint-url {self.endpoint_url}" if self.endpoint_url else ""
        return f"create it first (aws s3 mb s3://{self.bucket}{endpoint}; MinIO: mc mb ALIAS/{self.bucket})"

    def _at(self) -> str:
        return f" at {self.endpoint_url}" if self.endpoint_url else ""
