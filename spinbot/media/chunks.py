"""A video made of separately encoded chunks, joined without a second encode.

Each chunk is an H.264 mp4 that VideoWriter wrote with the same settings (size, frame rate, crf, preset), so it
starts with a keyframe (a closed GOP: its encoder began there and was flushed at its end) and every chunk's encoder
headers (SPS/PPS, the mp4's avcC) are the same bytes. `join_chunks` copies the chunks' packets in order into one
mp4, each chunk's timestamps moved on by the frames before it, and muxes the audio as VideoWriter does: the frames
decode exactly as each chunk's own frames did (spinbot.tasks.talk_resume keeps the chunks of a render's finished
windows, so a resumed render never encodes a frame twice).
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from spinbot.media.video import add_audio_stream, mux_audio


class ChunkMismatch(ValueError):
    """Chunks that cannot be joined into one stream (other encoder headers or frame rate)."""


def join_chunks(
    chunks: Sequence[Path], path: Path, fps: int | Fraction, audio: tuple[np.ndarray, int] | None = None
) -> int:
    """Remux the chunks' video packets, in order, into one mp4 at `path` (with the audio AAC-encoded and muxed);
    returns the number of video frames written."""
    if not chunks:
        raise ValueError("no chunks to join")
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = 0
    with av.open(str(path), mode="w", options={"movflags": "+faststart"}) as out:
        video = audio_stream = None
        extradata = None
        for chunk in chunks:
            with av.open(str(chunk)) as source:
                stream = source.streams.video[0]
                if video is None:
                    video = out.add_stream_from_template(stream)
                    video.time_base = stream.time_base
                    extradata = stream.codec_context.extradata
                    audio_stream = add_audio_stream(out, *audio) if audio is not None else None
                elif stream.codec_context.extradata != extradata or stream.time_base != video.time_base:
                    raise ChunkMismatch(f"{chunk.name} was encoded with other settings than the first chunk")
                frames += _copy_packets(source, stream, out, video, frames, fps)
        if audio_stream is not None and audio is not None:
            mux_audio(out, audio_stream, *audio)
    return frames


def _copy_packets(source, stream, out, video, first_frame: int, fps: int | Fraction) -> int:
    """The chunk's packets into `video`, timestamps moved on by `first_frame` frames; returns its frame count."""
    time_base = Fraction(stream.time_base)
    shift = Fraction(first_frame) / Fraction(fps) / time_base
    if shift.denominator != 1:
        raise ChunkMismatch(f"frame {first_frame} falls between two ticks of the time base {time_base}")
    count = 0
    for packet in source.demux(stream):
        if packet.dts is None or not packet.size:  # the demuxer's empty packet at the end
            continue
        packet.pts = None if packet.pts is None else packet.pts + int(shift)
        packet.dts = packet.dts + int(shift)
        packet.stream = video
        out.mux(packet)
        count += 1
    return count
