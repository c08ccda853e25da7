"""Live output: a video as HLS (MPEG-TS segments and a growing playlist) while its frames are still being made.

Each segment is a self-contained MPEG-TS file with its own H.264 encoder, so it is complete (playable) the moment
its last frame is written: a segment is a talking head's window or an upscaler's batch. The speech is known before
the first frame, so it is AAC-encoded once, in one continuous stream (no priming gap at segment joins), and each
segment carries the audio packets of its own time span. Timestamps run on across segments, so a player needs no
discontinuity. The writer makes local files and hands each to `publish(name, path, content_type)` (the segment
first, then the playlist that lists it); where they go is the caller's business.

(FFmpeg's own HLS muxer cuts a segment only when the next one's first packet arrives, a whole window late: hence
this small segmenter.)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np

from spinbot.media.video import x264_options

if TYPE_CHECKING:
    from av.audio.stream import AudioStream
    from av.container import OutputContainer
    from av.video.stream import VideoStream

    # (container, video stream, audio stream, first frame, path)
    Segment = tuple[OutputContainer, VideoStream, AudioStream | None, int, Path]

PLAYLIST = "index.m3u8"
PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
SEGMENT_TYPE = "video/mp2t"
ENDLIST = "#EXT-X-ENDLIST"
# Every timestamp is shifted by about this much, so that none is negative (AAC priming starts 1024 samples early):
# MPEG-TS timestamps cannot be negative, and FFmpeg would otherwise shift the first segment alone.
LEAD_SECONDS = 1
AAC_BLOCK = 1024
# A cut asked for before a segment holds this much video is put off to the next one, and no segment ends by itself
# before it either: windows of a few frames (a frame_window_size of 2) or an upscaler's batch_size of 1 made a
# segment and a whole playlist rewrite per frame, tens of thousands a job.
MIN_SEGMENT_SECONDS = 0.5

Publish = Callable[[str, Path, str], None]


def segment_name(index: int) -> str:
    return f"seg-{index:05d}.ts"


def playlist_text(durations: list[float], target_seconds: int, ended: bool) -> str:
    """An HLS media playlist of the EVENT type: segments are only ever added, and ENDLIST closes it."""
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        "#EXT-X-PLAYLIST-TYPE:EVENT",
        f"#EXT-X-TARGETDURATION:{target_seconds}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-INDEPENDENT-SEGMENTS",
    ]
    for index, seconds in enumerate(durations):
        lines += [f"#EXTINF:{seconds:.6f},", segment_name(index)]
    if ended:
        lines.append(ENDLIST)
    return "\n".join(lines) + "\n"


def _layout(audio: np.ndarray) -> str:
    return "mono" if audio.ndim == 1 or audio.shape[1] == 1 else "stereo"


def _stamp(value: int | None) -> int:
    assert value is not None, "the AAC encoder stamps every packet"
    return value


class AudioPackets:
    """The whole audio as AAC packets of one continuous encode, handed out by the span of samples they start in."""

    def __init__(self, audio: np.ndarray, rate: int, lead_samples: int):
        self.rate, self.layout = rate, _layout(audio)
        samples = audio.reshape(len(audio), -1).astype(np.float32)[:, : (1 if self.layout == "mono" else 2)]
        encoder = av.CodecContext.create("aac", "w")
        encoder.sample_rate, encoder.layout, encoder.format = rate, self.layout, "fltp"
        encoder.time_base = Fraction(1, rate)
        encoder.open()
        self._packets: list[av.Packet] = []
        for start in range(0, len(samples), AAC_BLOCK):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(samples[start : start + AAC_BLOCK].T), format="fltp", layout=self.layout
            )
            frame.sample_rate, frame.pts = rate, start
            self._packets += encoder.encode(frame)
        self._packets += encoder.encode(None)
        for packet in self._packets:
            packet.pts, packet.dts = _stamp(packet.pts) + lead_samples, _stamp(packet.dts) + lead_samples
        self._lead = lead_samples
        self._next = 0

    def until(self, sample: int) -> list[av.Packet]:
        """The packets not handed out yet that start before `sample` (audio past the video's end is left out)."""
        taken = self._next
        while taken < len(self._packets) and _stamp(self._packets[taken].pts) - self._lead < sample:
            taken += 1
        packets, self._next = self._packets[self._next : taken], taken
        return packets


class HlsSegmenter:
    """Frames in, MPEG-TS segments and a playlist out. `cut()` ends a segment (a window, a batch) that holds at
    least MIN_SEGMENT_SECONDS; a segment also ends by itself at `max_segment_frames` (raised to MIN_SEGMENT_SECONDS),
    which sets the playlist's target duration. `finish()` closes the playlist; `close()` without it leaves the
    playlist open (the stream stopped early)."""

    def __init__(
        self,
        folder: Path,
        fps: int | Fraction,
        width: int,
        height: int,
        max_segment_frames: int,
        publish: Publish,
        audio: tuple[np.ndarray, int] | None = None,
        crf: int = 23,
        preset: str = "veryfast",
        start_frame: int = 0,
    ):
        """start_frame: the video's frame the first written frame is (a render resumed there): timestamps and the
        audio start at that frame's time, so a later start continues the timeline of an earlier one."""
        if width % 2 or height % 2:
            raise ValueError(f"yuv420p needs even sizes, got {width}x{height}")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.fps = Fraction(fps)
        self.width, self.height = width, height
        # The cap is a window's new frames or a batch, which a client's params can make one frame: it is raised
        # to MIN_SEGMENT_SECONDS too, or every frame would still end a segment and rewrite the playlist.
        self.min_segment_frames = math.ceil(MIN_SEGMENT_SECONDS * self.fps)
        self.max_segment_frames = max(max_segment_frames, self.min_segment_frames)
        self.target_seconds = max(1, math.ceil(self.max_segment_frames / self.fps))
        self.publish = publish
        self.encoder_options = x264_options(crf, preset) | {"bframes": "0"}  # no B-frames: DTS = PTS
        self.lead_frames = math.ceil(LEAD_SECONDS * self.fps)
        lead_seconds = self.lead_frames / self.fps
        self.audio = AudioPackets(audio[0], audio[1], round(lead_seconds * audio[1])) if audio is not None else None
        self.frames = start_frame  # the video's frames before the next one written
        if self.audio is not None:  # the audio before the start, but for the packet that plays across it
            self.audio.until(round(start_frame * self.audio.rate / self.fps) - AAC_BLOCK)
        self.durations: list[float] = []
        self._segment: Segment | None = None

    @property
    def segments(self) -> int:
        return len(self.durations)

    def write(self, frame_rgb: np.ndarray) -> None:
        segment = self._segment or self._open_segment()
        container, video = segment[0], segment[1]
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_rgb), format="rgb24")
        frame.pts = self.lead_frames + self.frames
        self.frames += 1
        for packet in video.encode(frame):
            container.mux(packet)
        if self.frames - segment[3] >= self.max_segment_frames:
            self.cut()

    def cut(self) -> None:
        """End the segment being written (if it holds MIN_SEGMENT_SECONDS) and publish it, then the playlist."""
        if self._segment is not None and self.frames - self._segment[3] < self.min_segment_frames:
            return
        if self._end_segment():
            self._publish_playlist(ended=False)

    def finish(self) -> None:
        """The last segment, and the playlist closed with ENDLIST: the stream is complete."""
        self._end_segment()
        self._publish_playlist(ended=True)

    def _end_segment(self) -> bool:
        if self._segment is None:
            return False
        container, video, audio_stream, first, path = self._segment
        self._segment = None
        for packet in video.encode(None):
            container.mux(packet)
        if self.audio is not None:  # the audio that starts before the segment's last frame ends
            for packet in self.audio.until(round(self.frames * self.audio.rate / self.fps)):
                packet.stream = audio_stream
                container.mux(packet)
        container.close()
        self.publish(path.name, path, SEGMENT_TYPE)
        path.unlink(missing_ok=True)
        self.durations.append(float((self.frames - first) / self.fps))
        return True

    def close(self) -> None:
        """Stop without publishing what is half written (an error or a cancel): the playlist stays open."""
        if self._segment is not None:
            self._segment[0].close()
            self._segment[4].unlink(missing_ok=True)
            self._segment = None

    def _open_segment(self) -> Segment:
        path = self.folder / segment_name(self.segments)
        container = av.open(str(path), mode="w", format="mpegts")
        video = container.add_stream("libx264", rate=self.fps)
        video.width, video.height, video.pix_fmt = self.width, self.height, "yuv420p"
        video.time_base = 1 / self.fps
        video.options = dict(self.encoder_options)
        audio = None
        if self.audio is not None:
            # Opened by the muxer with the same settings as AudioPackets' encoder: the same AAC configuration.
            audio = container.add_stream("aac", rate=self.audio.rate)
            audio.layout = self.audio.layout
        self._segment = (container, video, audio, self.frames, path)
        return self._segment

    def _publish_playlist(self, ended: bool) -> None:
        path = self.folder / PLAYLIST
        path.write_text(playlist_text(self.durations, self.target_seconds, ended))
        self.publish(PLAYLIST, path, PLAYLIST_TYPE)
