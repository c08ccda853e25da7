"""A window's chunk (spinbot.media.video.VideoWriter, joined by spinbot.media.chunks) is the same bytes whenever its
frames are the same: a resumed render's joined video is only the same as one that never stopped if every chunk
encodes alike, whatever else the process encoded before or beside it (the live output's encoder)."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import platform
import sys
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from spinbot.media import video
from spinbot.media.segments import HlsSegmenter
from spinbot.media.video import X264_CPU_AVX512, VideoWriter, x264_cpu_flags, x264_options

M_PERTURB = -6  # glibc's malloc.h


def moving_texture(count: int, width: int, height: int, seed: int) -> list[np.ndarray]:
    """A smoothed noise texture that slides 3 pixels right and 2 down a frame: motion for x264's macroblock tree."""
    noise = np.random.default_rng(seed).integers(0, 256, (height + 2 * count, width + 3 * count, 3), dtype=np.uint8)
    noise = noise.astype(np.float32)
    texture = ((noise + np.roll(noise, 1, 0) + np.roll(noise, 1, 1) + np.roll(noise, (1, 1), (0, 1))) / 4).astype(
        np.uint8
    )
    return [np.ascontiguousarray(texture[2 * i : 2 * i + height, 3 * i : 3 * i + width]) for i in range(count)]


@contextlib.contextmanager
def stale_heap(byte: int) -> Iterator[None]:
    """glibc's M_PERTURB while inside: memory malloc hands out holds ~byte, and what is freed holds byte, where it
    would otherwise hold whatever the process wrote there before (another encoder's buffers): a reader of
    uninitialized memory sees a different value for each byte."""
    mallopt = ctypes.CDLL(None).mallopt if platform.libc_ver()[0] == "glibc" else None
    if mallopt is not None:
        mallopt(M_PERTURB, byte)
    try:
        yield
    finally:
        if mallopt is not None:
            mallopt(M_PERTURB, 0)


def encode_beside_the_live_output(folder: Path, frames: list[np.ndarray], seed: int) -> bytes:
    """The frames as a chunk, each written next to another frame of a live output's encoder (as infinite_talk does)."""
    height, width = frames[0].shape[:2]
    live = HlsSegmenter(folder / "live", 25, width, height, 1000, lambda *args: None)
    with VideoWriter(folder / "chunk.mp4", 25, width, height) as writer:
        for frame, other in zip(frames, moving_texture(len(frames), width, height, seed)):
            writer.write(frame)
            live.write(other)
    live.finish()
    return (folder / "chunk.mp4").read_bytes()


def test_the_same_frames_encode_to_the_same_chunk_whatever_ran_before_or_beside(tmp_path):
    """x264's AVX-512 macroblock-tree code reads memory x264 never wrote, past a row of macroblocks, where the width
    is not a multiple of 128: on such a CPU (before the fix) 4 of these 6 cases gave 2 or 3 different chunks of 4
    (and the same frames beside the live output alone, 1 to 11 different chunks of 30)."""
    kinds = []
    for width, height in [(64, 64), (64, 96), (96, 64)]:
        for seed in (0, 100):
            frames = moving_texture(12, width, height, seed)
            chunks = set()
            for run, byte in enumerate((0x00, 0xFF, 0x55, 0xAA)):
                with stale_heap(byte):
                    chunk = encode_beside_the_live_output(tmp_path, frames, seed=run + 1)
                chunks.add(hashlib.sha256(chunk).digest())
            kinds.append(len(chunks))
    assert kinds == [1] * 6
    with av.open(str(tmp_path / "chunk.mp4")) as container:  # x264's options, in the SEI of the first frame
        first = bytes(next(p for p in container.demux(container.streams.video[0]) if p.size))
    assert b" threads=1 lookahead_threads=1 sliced_threads=0 " in first


def test_x264_gets_its_own_cpu_flags_less_avx512(monkeypatch):
    for flags, expected in [
        (0x11F3FF, {"x264-params": "asm=1111039"}),  # MMX2 .. AVX2 and AVX-512: all but AVX-512
        (0x10F3FF, {}),  # no AVX-512: x264 detects its flags itself
        (None, {}),  # no libx264 found to ask: the same
    ]:
        monkeypatch.setattr(video, "x264_cpu_flags", lambda flags=flags: flags)
        assert x264_options(18, "veryfast") == {"crf": "18", "preset": "veryfast", "threads": "1"} | expected
    assert X264_CPU_AVX512 == 0x10000


@pytest.mark.skipif(sys.platform != "linux", reason="the loaded libx264 is found through /proc/self/maps")
def test_the_cpu_flags_are_those_of_the_loaded_libx264():
    flags = x264_cpu_flags()
    assert flags  # not None (no library found) and not 0 (no SIMD at all)
    options = x264_options(18, "veryfast")
    assert options.get("x264-params") == (f"asm={flags & ~X264_CPU_AVX512}" if flags & X264_CPU_AVX512 else None)
