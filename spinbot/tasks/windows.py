"""The sliding-window scheduler for talking-head generation, shared by every infinite_talk backend.

A video of N frames is generated in windows of W frames. Window 0 covers output frames [0, W). Every later window
starts M frames (`motion_frame`) before the previous window's end: those M frames were already produced and are
the motion context that keeps the windows continuous; they are dropped from its output. The last window runs past
N (its audio padded with silence) and is trimmed. So every output frame is produced by exactly one window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from spinbot.errors import ParamsError

# Each window is encoded as a chunk and stored with a checkpoint manifest that lists every chunk before it
# (tasks/talk_resume.py), so windows cost more than their frames: frame_window_size=2 with motion_frame=1 at 120 fps
# made a window a frame, 36,000 for 300 s of speech (1,799 windows for 15 s already wrote 154 MB of manifests in
# 5,397 store writes). The seed's 81 frames with 25 of motion context make 643 windows at 120 fps for 300 s.
MAX_WINDOWS = 2000


@dataclass(frozen=True)
class Window:
    index: int
    start: int  # first frame the window generates, context included (output coordinates)
    end: int  # exclusive; start + W, so it may run past the video's end
    context: int  # leading frames that are motion context, already produced by the previous window
    new_start: int  # the frames this window adds to the output: [new_start, new_end)
    new_end: int

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def new_frames(self) -> range:
        return range(self.new_start, self.new_end)

    @property
    def keep(self) -> slice:
        """Which of the window's own W frames go to the output (context dropped, padding trimmed)."""
        return slice(self.new_start - self.start, self.new_end - self.start)


def frame_count(duration_s: float, fps: int) -> int:
    """Frames of a video that lasts as long as its audio: round(duration x fps)."""
    return round(duration_s * fps)


def plan_windows(total_frames: int, window_size: int, motion_frames: int) -> list[Window]:
    """The windows that produce frames [0, total_frames), each exactly once."""
    if total_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {total_frames}")
    if window_size < 1:
        raise ValueError(f"frame_window_size must be at least 1, got {window_size}")
    if not 0 <= motion_frames < window_size:
        raise ValueError(
            f"motion_frame must be >= 0 and smaller than frame_window_size ({window_size}), got {motion_frames}"
        )
    windows = [Window(0, 0, window_size, 0, 0, min(window_size, total_frames))]
    while windows[-1].end < total_frames:
        prev = windows[-1]
        start = prev.end - motion_frames
        end = start + window_size
        windows.append(Window(prev.index + 1, start, end, motion_frames, prev.end, min(end, total_frames)))
    return windows


def window_count(total_frames: int, window_size: int, motion_frames: int) -> int:
    """len(plan_windows(total_frames, window_size, motion_frames)), without planning them."""
    if total_frames <= window_size:
        return 1
    return 1 + math.ceil((total_frames - window_size) / (window_size - motion_frames))


def refuse_too_many_windows(node_id: str, total_frames: int, window_size: int, motion_frames: int, about: str) -> None:
    """ParamsError, one line, where the windows for `total_frames` are more than MAX_WINDOWS; `about` says where the
    frames come from ("about 300 s of speech at 25 fps")."""
    count, new = window_count(total_frames, window_size, motion_frames), window_size - motion_frames
    if count > MAX_WINDOWS:
        raise ParamsError(
            f"{node_id}: frame_window_size {window_size} with motion_frame {motion_frames} makes {count:,} windows "
            f"({new} new frame{'s' if new > 1 else ''} each) for {total_frames:,} frames ({about}), over the limit "
            f"of {MAX_WINDOWS:,}: raise frame_window_size or lower motion_frame"
        )
