"""An upload's multipart body, read as it arrives and never past the size limit.

FastAPI's File()/Form() parameters have Starlette spool the whole body to a temporary file before the route (and its
API-key check) runs, with no size limit: a 1 GiB body filled /tmp before its 401. The upload route therefore reads
its body itself, after the key check: a Content-Length over the limit is refused before one byte is read, and a body
without one is refused as soon as it passes the limit. python-multipart parses the stream; the file part goes
straight to one file in the caller's folder, which never holds more than the limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header

from spinbot.api.errors import UploadTooLarge
from spinbot.errors import InputError

FRAMING_BYTES = 16 * 1024  # boundaries, part headers and the `kind` field around the file
FIELD_BYTES = 1024  # a text field (`kind`) is one word
# An upload has two parts (`kind`, `file`); a few more are let through unread. Without a count, 50 MB of empty
# fields were 850,000 parts: 9 s of the parser's callbacks and 80 MB of kept fields for one request.
MAX_PARTS = 16


class MalformedUpload(InputError):
    pass


@dataclass
class ReceivedUpload:
    fields: dict[str, str] = field(default_factory=dict)
    path: Path | None = None  # the file part, once one arrived
    filename: str | None = None
    content_type: str | None = None
    size: int = 0


class _Collector:
    """python-multipart's callbacks: part headers parsed, text fields kept, the one file part written to `dest`."""

    def __init__(self, dest: Path, max_file_bytes: int):
        self.dest, self.max_file_bytes = dest, max_file_bytes
        self.result = ReceivedUpload()
        self._header_name, self._header_value = b"", b""
        self._headers: dict[bytes, bytes] = {}
        self._field: str | None = None
        self._text = bytearray()
        self._file: BinaryIO | None = None
        self._parts = 0

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value_data,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise MalformedUpload(f"an upload has at most {MAX_PARTS} parts (it needs two: 'kind' and 'file')")
        self._headers, self._field, self._text = {}, None, bytearray()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name")
        if name is None:
            raise MalformedUpload("a multipart part has no name")
        self._field = name.decode("latin-1")
        if b"filename" not in options:
            if self._field == "file":  # a text field of that name: its length or its absence was the error shown
                raise MalformedUpload(
                    "the part 'file' has no filename: send the file as a file part (curl -F file=@face.jpg)"
                )
            return
        if self._field != "file" or self._file is not None or self.result.path is not None:
            raise MalformedUpload("an upload carries exactly one file, in the part named 'file'")
        self.result.filename = options[b"filename"].decode("utf-8", "replace")
        self.result.content_type = self._headers.get(b"content-type", b"").decode("latin-1") or None
        self._file = open(self.dest, "wb")  # noqa: SIM115 - open across callbacks; closed at part end or close()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._file is None:
            self._text += data[start:end]
            if len(self._text) > FIELD_BYTES:
                raise MalformedUpload(f"the form field '{self._field}' is longer than {FIELD_BYTES} bytes")
            return
        self.result.size += end - start
        if self.result.size > self.max_file_bytes:
            raise _too_large(self.max_file_bytes)
        self._file.write(data[start:end])

    def _part_end(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file, self.result.path = None, self.dest
        elif self._field is not None:
            self.result.fields[self._field] = self._text.decode("utf-8", "replace")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def too_large_message(limit: int) -> str:
    """The 413's one line; the web page is given it too (GET /v1/params/form) to refuse a file before sending it."""
    # In MiB first: "52428800 bytes" under a web page's file field left its user counting digits.
    return f"upload is larger than the limit of {limit / 2**20:.3g} MiB ({limit} bytes, SPINBOT_MAX_UPLOAD_BYTES)"


def _too_large(limit: int) -> UploadTooLarge:
    return UploadTooLarge(too_large_message(limit))


def refuse_declared_oversize(request: Request, max_file_bytes: int) -> None:
    """413 from the headers alone, before a byte of the body is read."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_file_bytes + FRAMING_BYTES:
        raise _too_large(max_file_bytes)


async def receive_upload(request: Request, dest: Path, max_file_bytes: int) -> ReceivedUpload:
    """Parse the multipart body into `dest` (the file) and text fields; UploadTooLarge as soon as the body passes
    the limit, whatever its headers said."""
    refuse_declared_oversize(request, max_file_bytes)
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise MalformedUpload("an upload is a multipart/form-data body with the fields 'kind' and 'file'")
    collector = _Collector(dest, max_file_bytes)
    received, body_limit = 0, max_file_bytes + FRAMING_BYTES
    try:
        parser = MultipartParser(boundary, cast(Any, collector.callbacks()))  # refuses a boundary over 256 bytes
        async for chunk in request.stream():
            received += len(chunk)
            if received > body_limit:
                raise _too_large(max_file_bytes)
            parser.write(chunk)
        parser.finalize()
    except ValueError as err:  # python-multipart's parse errors
        raise MalformedUpload(f"malformed multipart body: {err}") from None
    finally:
        collector.close()
    return collector.result
