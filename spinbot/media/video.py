"""Video through PyAV (its wheels bundle FFmpeg with libx264): probe, streaming decode, H.264 + AAC encode."""

from __future__ import annotations

import ctypes
import functools
import itertools
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from spinbot.errors import InputError

# The demuxers media is read with: plain audio and video containers, by the names FFmpeg matches against its demuxers'
# ("mov" is mov/mp4/m4a/3gp, "matroska" is mkv/webm). FFmpeg's others include playlists and references (hls, concat,
# dash) that open further files a file names: a voice uploaded as an .m3u8 that listed another job's talk.mp4 by its
# path on the server was decoded as that file's audio. Only local files: no other protocol (data:, crypto:, http:).
INPUT_FORMATS = "wav,w64,flac,ogg,mp3,aac,mov,matroska,aiff,caf,avi,mpegts,amr,wv"


def open_input(path: Path | str) -> av.container.InputContainer:
    """A media file opened for reading, by one of INPUT_FORMATS' demuxers only (any other is an FFmpegError)."""
    options = {"format_whitelist": INPUT_FORMATS, "protocol_whitelist": "file"}
    return av.open(str(path), container_options=options)


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    frames: int
    duration: float
    audio_rate: int | None
    audio_duration: float | None


def probe(path: Path | str) -> VideoInfo:
    """Count frames by demuxing packets (exact, cheap: no decode)."""
    try:
        with open_input(path) as container:
            if not container.streams.video:
                raise InputError(f"not a video file (no video stream): {path}")
            vs = container.streams.video[0]
            width, height = vs.codec_context.width, vs.codec_context.height
            fps = float(vs.average_rate or vs.guessed_rate or 0)
            frames = sum(1 for p in container.demux(vs) if p.size)
        audio_rate = audio_duration = None
        with open_input(path) as container:
            if container.streams.audio:
                aus = container.streams.audio[0]
                audio_rate = aus.codec_context.sample_rate
                samples = sum(f.samples for f in container.decode(aus))
                audio_duration = samples / audio_rate
    except InputError:
        raise
    except av.error.FFmpegError as err:
        raise InputError(f"not a readable video: {path} ({err})") from None
    return VideoInfo(width, height, fps, frames, frames / fps if fps else 0.0, audio_rate, audio_duration)


def frame_rate(path: Path | str) -> Fraction:
    """The video stream's exact frame rate (30000/1001 stays exact, where probe's float would not)."""
    with open_input(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
    if not rate:
        raise InputError(f"video has no frame rate: {path}")
    return Fraction(rate)


def iter_frames(path: Path | str, cap: int = 0) -> Iterator[np.ndarray]:
    """Decode RGB frames one at a time; stop after `cap` frames when cap > 0. Never holds the video."""
    with open_input(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if cap and i >= cap:
                break
            yield frame.to_ndarray(format="rgb24")


class AudioTooLong(ValueError):
    """The decode passed the length it was allowed."""


def _float_chunks(container, stream, max_samples: int | None = None, mono: bool = False) -> list[np.ndarray]:
    """Decoded audio as float32 (samples, channels) blocks, whatever the codec's sample format, or (samples,) blocks
    averaged as they come when mono (8 channels held whole are 8 times the memory); with max_samples, AudioTooLong
    as soon as more than that many were decoded (a header cannot be trusted to tell the length). (PyAV 18's
    AudioFrame.to_ndarray takes no format: convert through a resampler; to packed samples, as its planar
    to_ndarray crashed the process on 8 channels.)"""
    resampler = av.AudioResampler(format="flt", layout=stream.layout, rate=stream.codec_context.sample_rate)
    chunks, total = [], 0
    for frame in itertools.chain(container.decode(stream), [None]):  # None flushes the resampler
        for out in resampler.resample(frame):
            packed = out.to_ndarray().reshape(-1, out.layout.nb_channels)
            chunks.append(packed.mean(axis=1) if mono else packed)
            total += len(chunks[-1])
            if max_samples is not None and total > max_samples:
                raise AudioTooLong(f"more than {max_samples} samples")
    return chunks


def read_audio(path: Path | str, max_seconds: float | None = None, mono: bool = False) -> tuple[np.ndarray, int] | None:
    """The first audio stream of a media file as float32 (samples, channels), or (samples,) averaged when mono,
    or None if there is none; with max_seconds, AudioTooLong once the decode passes that length."""
    with open_input(path) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        limit = None if max_seconds is None else int(max_seconds * rate) + 1
        chunks = _float_chunks(container, stream, limit, mono)
    if not chunks:
        return None
    return np.concatenate(chunks), int(rate)


def add_audio_stream(container, audio: np.ndarray, rate: int):
    """An AAC stream for this audio (float32 mono or (n, ch)) in an output container, before its first packet."""
    stream = container.add_stream("aac", rate=rate)
    stream.layout = "mono" if audio.ndim == 1 or audio.shape[1] == 1 else "stereo"
    stream.time_base = Fraction(1, rate)
    return stream


def mux_audio(container, stream, audio: np.ndarray, rate: int) -> None:
    """The whole audio AAC-encoded into `stream` (from add_audio_stream) and muxed."""
    layout = stream.layout.name
    audio = audio.reshape(len(audio), -1).astype(np.float32)[:, : (1 if layout == "mono" else 2)]
    block = 1024
    for start in range(0, len(audio), block):
        chunk = np.ascontiguousarray(audio[start : start + block].T)
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
        frame.sample_rate, frame.pts = rate, start
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


# x264's AVX-512 bit in its CPU flags (x264.h's X264_CPU_AVX512).
X264_CPU_AVX512 = 1 << 16


def _x264_library_paths() -> list[str]:
    """The libx264 this process loaded with libavcodec (Linux: /proc/self/maps), then the one PyAV's wheel bundles."""
    paths = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and Path(fields[5].strip()).name.startswith("libx264"):
                    paths.append(fields[5].strip())
    except OSError:
        pass
    package = Path(av.__file__).parent
    for folder in (package.parent / "av.libs", package / ".dylibs"):
        paths += sorted(str(p) for p in folder.glob("libx264*"))
    return list(dict.fromkeys(paths))


@functools.cache
def x264_cpu_flags() -> int | None:
    """The CPU flags libx264 detects on this machine (what its asm=auto uses: x264_param_default's first field,
    `uint32_t cpu`), or None where its library cannot be found."""
    for path in _x264_library_paths():
        try:
            param_default = ctypes.CDLL(path).x264_param_default
        except (OSError, AttributeError):
            continue
        param_default.argtypes, param_default.restype = [ctypes.c_void_p], None
        param = ctypes.create_string_buffer(65536)  # an x264_param_t is about 1 KB
        param_default(param)
        return int.from_bytes(param.raw[:4], sys.byteorder)
    return None


def x264_options(crf: int, preset: str) -> dict[str, str]:
    """libx264's options for this crf and preset, made so that the same frames always encode to the same bytes (a
    resumed infinite_talk's chunks must be those of a render that never stopped: spinbot.media.chunks).

    - No AVX-512: x264's AVX-512 mbtree_propagate_list takes 8 macroblocks a step and, unlike its C, SSSE3 and AVX2
      versions, does not stop at the row's end, so where the width is not a multiple of 128 pixels (832x480,
      480x832, 64x64) the lanes past the last row add whatever the heap held there (the freed buffers of another
      encoder, such as the live output's beside it) into the macroblock tree: the same frames gave other bytes in 1
      to 11 of 30 encodes beside the live output. Its output also differs from that of the SIMD levels below it
      (which agree down to SSSE3), so without it a chunk is the same on a worker without AVX-512 too. The flags are
      x264's own detection less that bit; no cost beyond the noise of a loaded 2-core box (median paired time ratio
      0.97-1.03 at 832x480, 480x832 and 1280x720; best of 40 encodes 2-6% slower).
    - One thread: x264 is deterministic for a fixed thread count, but its frame threads change the output with
      their number (which threads=auto takes from the machine's cores). One is what PyAV's default gave.
    """
    options = {"crf": str(crf), "preset": preset, "threads": "1"}
    flags = x264_cpu_flags()
    if flags is not None and flags & X264_CPU_AVX512:
        options["x264-params"] = f"asm={flags & ~X264_CPU_AVX512}"
    return options


class VideoWriter:
    """H.264 yuv420p mp4 at a fixed fps; audio (float32 mono or (n, ch)) is AAC-encoded and muxed on close."""

    def __init__(
        self,
        path: Path | str,
        fps: int | Fraction,
        width: int,
        height: int,
        crf: int = 18,
        preset: str = "veryfast",
        audio: tuple[np.ndarray, int] | None = None,
    ):
        if width % 2 or height % 2:
            raise ValueError(f"yuv420p needs even sizes, got {width}x{height}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fps = fps
        self.frames = 0
        self._container = av.open(str(self.path), mode="w", options={"movflags": "+faststart"})
        self._video = self._container.add_stream("libx264", rate=fps)
        self._video.width, self._video.height, self._video.pix_fmt = width, height, "yuv420p"
        self._video.time_base = Fraction(1, fps)
        self._video.options = dict(x264_options(crf, preset))
        # Every stream must exist before the first packet is muxed (the header is written then).
        self._audio = audio
        self._audio_stream = add_audio_stream(self._container, *audio) if audio is not None else None

    def write(self, frame_rgb: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_rgb), format="rgb24")
        frame.pts = self.frames
        self.frames += 1
        for packet in self._video.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        for packet in self._video.encode(None):
            self._container.mux(packet)
        if self._audio is not None:
            assert self._audio_stream is not None, "made in __init__ whenever there is audio"
            mux_audio(self._container, self._audio_stream, *self._audio)
        self._container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._container.close()
