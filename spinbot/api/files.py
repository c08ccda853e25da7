"""Files as answers, with their Range header (RFC 9110 section 14) judged here rather than by Starlette, whose
FileResponse answers a bad range in plain text and serves up to 100 ranges as a multipart body.

The policy, for local files and S3 objects alike: one byte range is served (206); a range that starts past the end,
or a suffix of no bytes, is a JSON 416 with `Content-Range: bytes */SIZE`; anything else in a Range header (another
unit, bad syntax, a last byte before the first, several ranges) is ignored and the whole file sent (200), as RFC
9110 section 14.2 allows. Players and download managers ask one range at a time; several would buy a multipart body
whose part headers outweigh the one-byte parts a client may ask for.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse
from starlette.types import Receive, Scope, Send

from spinbot.errors import JobNotFound

_ONE_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)", re.IGNORECASE)
_MAX_DIGITS = 18  # a position with more digits is past any file (and int() of 5,000 digits raises)
HUGE = 2**63


class UnsatisfiableRange(HTTPException):
    """A 416, answered as JSON by the API's error handler, with the size the client may ask ranges of."""

    def __init__(self, size: int):
        super().__init__(
            416, f"range not satisfiable: the file has {size:,} bytes", {"Content-Range": f"bytes */{size}"}
        )


@dataclass(frozen=True)
class ByteRange:
    first: int | None  # None: a suffix range, the last `last` bytes
    last: int | None  # None: to the end

    def header(self) -> str:
        return f"bytes={'' if self.first is None else self.first}-{'' if self.last is None else self.last}"

    def within(self, size: int) -> tuple[int, int]:
        """The first and last byte (inclusive) in a file of `size` bytes; UnsatisfiableRange if it has none."""
        if self.first is None:
            assert self.last is not None
            if self.last == 0 or size == 0:
                raise UnsatisfiableRange(size)
            return max(size - self.last, 0), size - 1
        if self.first >= size:
            raise UnsatisfiableRange(size)
        return self.first, size - 1 if self.last is None else min(self.last, size - 1)


def requested_range(header: str | None) -> ByteRange | None:
    """The one byte range a Range header asks for, or None: no header, or one that is ignored (see above)."""
    match = _ONE_RANGE.fullmatch((header or "").strip(" \t"))
    if match is None or not (match[1] or match[2]):
        return None  # malformed, another unit or several ranges: ignored, the whole file (RFC 9110 section 14.2)
    first, last = (_position(text) for text in match.groups())
    if first is not None and last is not None and last < first:
        return None  # an invalid range-spec (RFC 9110 section 14.1.1)
    return ByteRange(first, last)


def _position(text: str) -> int | None:
    if not text:
        return None
    return int(text) if len(text) <= _MAX_DIGITS else HUGE


def stat_of(path: Path, missing: str) -> os.stat_result:
    """The file's stat, or JobNotFound(missing) where no regular file is (deleted meanwhile, say)."""
    try:
        result = path.stat()
    except FileNotFoundError:
        raise JobNotFound(missing) from None
    if not stat.S_ISREG(result.st_mode):
        raise JobNotFound(missing)
    return result


class FileDownload(FileResponse):
    """A FileResponse that serves the range `with_range` judged (none until then), never Starlette's own answers."""

    def __init__(self, path: Path, stat_result: os.stat_result, **kwargs: Any):
        super().__init__(path, stat_result=stat_result, **kwargs)
        self.size = stat_result.st_size
        self.byte_range: tuple[int, int] | None = None

    def with_range(self, request: Headers) -> FileDownload:
        """The request's Range judged against this file; UnsatisfiableRange (a JSON 416) raised here, before any
        answer has started."""
        wanted = requested_range(request.get("range"))
        if wanted is not None and self._validator_matches(request.get("if-range")):
            self.byte_range = wanted.within(self.size)
        return self

    def _validator_matches(self, if_range: str | None) -> bool:
        """RFC 9110 section 13.1.5: a Range counts only while the If-Range validator (if any) is current."""
        return if_range is None or if_range in (self.headers.get("etag"), self.headers.get("last-modified"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Starlette reads the Range header itself: it sees only the range judged above, in canonical form.
        headers = [(name, value) for name, value in scope["headers"] if name not in (b"range", b"if-range")]
        if self.byte_range is not None:
            headers.append((b"range", f"bytes={self.byte_range[0]}-{self.byte_range[1]}".encode()))
        await super().__call__({**scope, "headers": headers}, receive, send)
