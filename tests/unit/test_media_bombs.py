"""Small files that make a library's header parse cost far more than their size, refused before that library reads
them (each test failed before its fix): ID3 tags FFmpeg inflates, and (below) image headers Pillow parses in Python."""

from __future__ import annotations

import io
import struct
import zlib

import av
import numpy as np
import pytest

from spinbot.api.routes.uploads import check_content
from spinbot.errors import InputTooLarge
from spinbot.media.audio import load_voice, probe_audio
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
