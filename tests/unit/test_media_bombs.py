"""Small files that make a library's header parse cost far more than their size, refused before that library reads
them (each test failed before its fix): ID3 tags FFmpeg inflates, and image headers Pillow parses a step at a time."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from spinbot.api.routes.uploads import check_content
from spinbot.errors import InputTooLarge
from spinbot.media.audio import load_voice, probe_audio
from spinbot.media.image import load_portrait, probe_image
from spinbot.settings import get_settings


# ---- ID3 tags FFmpeg inflates -----------------------------------------------------------------------------------
def _adts(seconds: float = 2.0, rate: int = 16_000) -> bytes:
    """A tone as raw AAC (ADTS): a format libsndfile does not read, so FFmpeg does."""
    out = io.BytesIO()
    with av.open(out, "w", format="adts") as container:
        stream = container.add_stream("aac", rate=rate, layout="mono")
        tone = (0.3 * np.sin(np.arange(int(seconds * rate)) * 0.05)).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(tone, format="flt", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return out.getvalue()


def _syncsafe(n: int) -> bytes:
    return bytes((n >> shift) & 0x7F for shift in (21, 14, 7, 0))


def _id3(frames: list[tuple[bytes, bytes, bool]]) -> bytes:
    """An ID3v2.4 tag of (frame id, body, compressed) frames; a compressed one is zlib with its inflated length."""
    out = b""
    for name, body, compressed in frames:
        data = struct.pack(">I", len(body)) + zlib.compress(body, 9) if compressed else body
        out += name + _syncsafe(len(data)) + (b"\x00\x09" if compressed else b"\x00\x00") + data
    return b"ID3\x04\x00\x00" + _syncsafe(len(out)) + out


def _bomb() -> bytes:
    """What FFmpeg inflated to 64 MB a frame, kept as metadata (eight: 1.2 GB from 534 KB), kept small here: one
    compressed frame of 4 MB and 80 KB of other tags."""
    inflated = b"\x03k\x00" + b"A" * 4_000_000
    return _id3([(b"TXXX", inflated, True), (b"PRIV", b"x\x00" + bytes(80_000), False)])


@pytest.mark.parametrize("where", ["start", "middle"])
def test_audio_with_more_id3_than_a_voice_needs_is_refused_before_ffmpeg_reads_it(tmp_path, where):
    aac, tag = _adts(), _bomb()
    middle = aac.find(b"\xff\xf1", len(aac) // 2)  # an ADTS frame's start: FFmpeg parses a tag found there too
    data = tag + aac if where == "start" else aac[:middle] + tag + aac[middle:]
    voice = tmp_path / "voice.aac"
    voice.write_bytes(data)
    limit = "the audio carries more than 64 KiB of ID3 tags"
    with pytest.raises(InputTooLarge, match=f"^{limit}"):
        probe_audio(voice)
    with pytest.raises(InputTooLarge, match=f"^{limit}"):
        load_voice(voice, max_seconds=60)
    with pytest.raises(InputTooLarge, match=f"^the voice upload is refused: {limit}"):
        check_content("voice", voice, get_settings())


def test_audio_with_ordinary_id3_tags_is_read(tmp_path):
    voice = tmp_path / "voice.aac"
    voice.write_bytes(_id3([(b"TIT2", b"\x03my voice", False), (b"TXXX", b"\x03k\x00" + b"v" * 500, True)]) + _adts())
    assert check_content("voice", voice, get_settings()) == ".aac"
    audio, rate = load_voice(voice, max_seconds=60)
    assert rate == 16_000 and abs(len(audio) / rate - 2.0) < 0.2  # AAC adds its priming


# ---- image headers Pillow parses a step at a time ---------------------------------------------------------------
def _tiff_of_strips(path: Path, strips: int) -> Path:
    """A 64x64 grey uncompressed TIFF whose StripOffsets and StripByteCounts are one array of `strips` LONGs, all
    pointing at its pixels (Pillow made an object for each: 4 million took 1.2 GB and 46 s)."""
    entries = [(256, 4, 1, 64), (257, 4, 1, 64), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1)]
    pixels = 8 + 2 + 9 * 12 + 4
    array = pixels + 64 * 64
    entries += [(273, 4, strips, array), (277, 3, 1, 1), (278, 4, 1, 1), (279, 4, strips, array)]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHI", tag, kind, count) + struct.pack("<HH" if kind == 3 else "<I", value, *([0] * (kind == 3)))
        for tag, kind, count, value in entries
    )
    path.write_bytes(
        b"II*\0" + struct.pack("<I", 8) + ifd + b"\0\0\0\0" + b"\x80" * 64 * 64 + struct.pack("<I", pixels) * strips
    )
    return path


def _gif_with(path: Path, extensions: bytes) -> Path:
    plain = io.BytesIO()
    Image.new("P", (64, 64)).save(plain, "GIF")
    data = plain.getvalue()
    palette = 3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0
    path.write_bytes(data[: 13 + palette] + extensions + data[13 + palette :])
    return path


def _png_with(path: Path, chunks: int) -> Path:
    plain = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 120, 80)).save(plain, "PNG")
    data = plain.getvalue()
    empty = struct.pack(">I", 0) + b"prVt" + struct.pack(">I", zlib.crc32(b"prVt"))  # a private chunk Pillow keeps
    path.write_bytes(data[:33] + empty * chunks + data[33:])
    return path


BOMBS = {
    "tiff-strips": (lambda p: _tiff_of_strips(p / "a.tif", 70_000), "65,536 TIFF strips or tiles"),
    "gif-comments": (lambda p: _gif_with(p / "a.gif", b"!\xfe\x01c\x00" * 300), "256 GIF extension blocks"),
    "gif-one-comment": (
        lambda p: _gif_with(p / "a.gif", b"!\xfe" + (b"\xff" + b"c" * 255) * 4200 + b"\0"),
        "1,048,576 bytes of GIF extensions",
    ),
    "png-chunks": (lambda p: _png_with(p / "a.png", 70_000), "65,536 PNG chunks"),
    "ppm-comment": (
        lambda p: _written(p / "a.ppm", b"P6\n#" + b"c" * 200_000 + b"\n64 64\n255\n" + b"\x80" * (64 * 64 * 3)),
        "65,536 bytes of netpbm header",
    ),
}


def _written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("bomb", BOMBS)
def test_an_image_of_more_strips_blocks_or_chunks_than_a_portrait_needs_is_refused_before_pillow_opens_it(
    tmp_path, bomb
):
    make, what = BOMBS[bomb]
    image = make(tmp_path)
    with pytest.raises(InputTooLarge, match=f"^the image holds more than {what}"):
        probe_image(image, 40_000_000)
    with pytest.raises(InputTooLarge, match=f"^the portrait upload is refused: the image holds more than {what}"):
        check_content("portrait", image, get_settings())


def test_images_with_a_few_strips_blocks_and_chunks_are_read(tmp_path):
    assert load_portrait(_tiff_of_strips(tmp_path / "a.tif", 64), 40_000_000).shape == (64, 64, 3)
    assert load_portrait(_gif_with(tmp_path / "a.gif", b"!\xfe\x05hello\x00" * 20), 40_000_000).shape == (64, 64, 3)
    assert load_portrait(_png_with(tmp_path / "a.png", 1000), 40_000_000)[0, 0].tolist() == [200, 120, 80]
    ppm = _written(tmp_path / "a.ppm", b"P6\n# a comment\n64 64\n255\n" + b"\x80\x40\x20" * (64 * 64))
    assert load_portrait(ppm, 40_000_000)[0, 0].tolist() == [128, 64, 32]
    big = _written(tmp_path / "b.pgm", b"P5 256 256 255\n" + bytes(range(256)) * 256)  # over 64 KiB, a short header
    assert load_portrait(big, 40_000_000).shape == (256, 256, 3)
