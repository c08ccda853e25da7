"""The parts of an image file that Pillow parses in Python one step at a time (a TIFF's strips, a GIF's extension
blocks, a PNG's chunks, a netpbm header's comments), counted before Pillow opens the file: each step costs Pillow far
more than its bytes, and no pixel limit bounds them, since a small image can carry millions. Found by hostile-media
probes: a 16 MB 64x64 TIFF of 4 million strips took 1.2 GB and 46 s at upload, a 4 MB GIF of 200,000 comments 137 s
(Pillow joins them a block at a time, so the cost grows with the square), a 42 MB PNG of 3.5 million empty chunks
560 MB and 24 s, a PPM with a 40 MB comment 29 s; all were accepted."""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import BinaryIO

from spinbot.errors import InputTooLarge

# A TIFF's strips or tiles: one row a strip of a 40 MP portrait of the most elongated shape taken, in 3 planes, is
# 38,000. Pillow makes an object a strip at open and decodes them one by one: 65,536 cost it 20 MB and under a second.
MAX_TIFF_PARTS = 65_536
# A GIF's extensions before its first image: a control block, a loop count, a comment or XMP packet or two.
MAX_GIF_EXTENSIONS = 256
MAX_GIF_HEADER_BYTES = 1024 * 1024
# A PNG's chunks, image data included: a 50 MB PNG written in 8 KB IDAT chunks has 6,400.
MAX_PNG_CHUNKS = 65_536
# A netpbm (PPM, PGM, PBM) header with its comments: Pillow reads it a byte at a time, so a 40 MB comment took 29 s.
MAX_NETPBM_HEADER_BYTES = 64 * 1024
_NETPBM_SEPARATOR = rb"(?:\s|#[^\r\n]*[\r\n])+"  # whitespace, or a comment to the end of its line


def refuse_costly_layout(path: Path) -> None:
    """InputTooLarge when a TIFF, GIF, PNG or netpbm file holds more of the steps above than an image needs; other
    files pass."""
    with open(path, "rb") as f:
        head = f.read(16)
        try:
            if head[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
                _tiff(f, head)
            elif head[:6] in (b"GIF87a", b"GIF89a"):
                _gif(f, head)
            elif head[:8] == b"\x89PNG\r\n\x1a\n":
                _png(f)
            elif re.match(rb"P[1-6]\s", head):
                _netpbm(f, head)
        except struct.error:  # a file cut short: Pillow says what is wrong with it
            pass


def _too_many(what: str, limit: int) -> InputTooLarge:
    return InputTooLarge(f"the image holds more than {limit:,} {what}; no portrait needs so many (save it again)")


def _tiff(f: BinaryIO, head: bytes) -> None:
    """The counts of StripOffsets (273) and TileOffsets (324) in the first IFD, the one Pillow opens."""
    order = "<" if head[:2] == b"II" else ">"
    big = head[2:4] in (b"+\0", b"\0+")  # BigTIFF: 8-byte offsets and counts, 20-byte entries
    count_format, entry_size = (order + "Q", 20) if big else (order + "I", 12)
    offset = struct.unpack(count_format, head[8:16] if big else head[4:8])[0]  # of the first IFD
    f.seek(offset)
    entries = struct.unpack(order + ("Q" if big else "H"), f.read(8 if big else 2))[0]
    if entries > 65_535:  # a classic TIFF's most; Pillow reads a BigTIFF's entries one by one until the file ends
        raise _too_many("TIFF tags", 65_535)
    table = f.read(entries * entry_size)
    for start in range(0, len(table) - entry_size + 1, entry_size):
        tag = struct.unpack(order + "H", table[start : start + 2])[0]
        count = struct.unpack(count_format, table[start + 4 : start + (12 if big else 8)])[0]
        if tag in (273, 324) and count > MAX_TIFF_PARTS:
            raise _too_many("TIFF strips or tiles", MAX_TIFF_PARTS)


def _gif(f: BinaryIO, head: bytes) -> None:
    """What Pillow reads before the first image: extension blocks, and stray bytes it skips one at a time."""
    flags = head[10]
    start = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)  # after the global palette
    f.seek(start)
    extensions = 0
    while (byte := f.read(1)) not in (b"", b",", b";"):
        if byte == b"!":
            extensions += 1
            if extensions > MAX_GIF_EXTENSIONS:
                raise _too_many("GIF extension blocks before its image", MAX_GIF_EXTENSIONS)
            f.read(1)  # the extension's label
            while (size := f.read(1)) not in (b"", b"\0") and f.tell() - start <= MAX_GIF_HEADER_BYTES:
                f.seek(size[0], 1)  # a data sub-block
        if f.tell() - start > MAX_GIF_HEADER_BYTES:
            raise _too_many("bytes of GIF extensions before its image", MAX_GIF_HEADER_BYTES)


def _png(f: BinaryIO) -> None:
    """Chunk headers, walked to IEND (Pillow also reads the chunks after the image data as it finishes the load)."""
    f.seek(8)  # after the signature
    for _ in range(MAX_PNG_CHUNKS):
        header = f.read(8)
        if len(header) < 8 or header[4:] == b"IEND":
            return
        f.seek(struct.unpack(">I", header[:4])[0] + 4, 1)  # the data and its CRC
    raise _too_many("PNG chunks", MAX_PNG_CHUNKS)


def _netpbm(f: BinaryIO, head: bytes) -> None:
    """The header (magic, width, height and, but for bitmaps, the largest value) ends within its byte limit."""
    numbers = 2 if head[1:2] in (b"1", b"4") else 3
    header = re.compile(rb"P[1-6](?:" + _NETPBM_SEPARATOR + rb"[0-9]+){%d}" % numbers)
    data = head + f.read(MAX_NETPBM_HEADER_BYTES - len(head))
    if len(data) >= MAX_NETPBM_HEADER_BYTES and header.match(data) is None:
        raise _too_many("bytes of netpbm header and comments", MAX_NETPBM_HEADER_BYTES)
