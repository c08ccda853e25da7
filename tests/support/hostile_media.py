"""Small files that claim to be huge, as an attacker makes them: a PNG whose header says 30000x30000, a silent FLAC of
hours that compresses to almost nothing."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import soundfile as sf


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming(path: Path, width: int, height: int, payload: int = 800_000) -> Path:
    """A valid PNG header for width x height RGB, with one compressed IDAT of `payload` zero bytes (a few KB)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * payload, 9))
        + _png_chunk(b"IEND", b"")
    )
    return path


def silent_flac(path: Path, seconds: float, rate: int = 8000) -> Path:
    """Silence compresses to a few bytes a block: two hours at 8 kHz is about 180 KB."""
    block = np.zeros(rate * 60, np.float32)
    with sf.SoundFile(path, "w", rate, 1, format="FLAC") as out:
        left = int(seconds * rate)
        while left > 0:
            out.write(block[: min(left, len(block))])
            left -= len(block)
    return path
