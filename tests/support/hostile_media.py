"""Small files that claim to be huge, as an attacker makes them: a PNG whose header says 30000x30000, a TIFF whose
readers disagree on its size, a silent FLAC of hours (or of 8 channels at 384 kHz) that compresses to almost
nothing."""

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


def tiff_with_two_widths(path: Path, first: int, last: int, height: int) -> Path:
    """An 8-bit RGB TIFF that writes its ImageWidth tag twice: Pillow keeps the last value, libtiff (and so OpenCV)
    the first. One deflate strip of zeros as wide as the wider of the two: a few KB a megapixel."""
    width = max(first, last)
    packer = zlib.compressobj(9)
    row = b"\0" * (width * 3)
    strip = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    # (tag, type, value): 3 SHORT, 4 LONG; BitsPerSample and StripOffsets point past the IFD, at 162 and 168.
    entries = [(256, 4, first), (256, 4, last), (257, 4, height), (258, 3, 162), (259, 3, 8), (262, 3, 2)]
    entries += [(273, 4, 168), (277, 3, 3), (278, 4, height), (279, 4, len(strip))]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHI", tag, kind, 3 if tag == 258 else 1)
        + (struct.pack("<HH", value, 0) if kind == 3 and tag != 258 else struct.pack("<I", value))
        for tag, kind, value in entries
    )
    header = b"II*\0" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0)
    path.write_bytes(header.ljust(162, b"\0") + struct.pack("<HHH", 8, 8, 8) + strip)
    return path


def silent_flac(path: Path, seconds: float, rate: int = 8000, channels: int = 1) -> Path:
    """Silence compresses to a few bytes a block: two hours at 8 kHz is about 180 KB."""
    block = np.zeros((rate, channels), np.float32)
    with sf.SoundFile(path, "w", rate, channels, format="FLAC") as out:
        left = int(seconds * rate)
        while left > 0:
            out.write(block[: min(left, len(block))])
            left -= len(block)
    return path


# A portrait within SPINBOT_MAX_IMAGE_PIXELS at its highest: a 1-bit PNG of a few KB that decodes to 0.18 GB in
# Pillow and 0.53 GB of RGB, past a checker's 1 GiB (its imports take about half) with these settings.
BOMB_SIDE = 13_300
BOMB_LIMITS = {"max_image_pixels": 178_956_970, "upload_check_memory_bytes": 1024**3}
BOMB_REFUSED = (
    "the portrait (source_image) could not be checked within the limits: it needed more than 1 GiB of memory "
    "(SPINBOT_UPLOAD_CHECK_MEMORY_BYTES)"
)


def png_bomb(path: Path, side: int = BOMB_SIDE) -> Path:
    """A complete, valid 1-bit PNG of side x side black pixels: zeros compress to almost nothing."""
    from PIL import Image

    Image.new("1", (side, side)).save(path)
    return path
