"""The interface every infinite_talk backend implements; spinbot.tasks.talk runs the workflow around it.

The task prepares the speech and the image, plans the windows (spinbot.tasks.windows) and streams each window's
frames to the video writer as soon as the backend yields them, so no backend ever holds the whole video.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from spinbot.media.features import FrameFeatures
from spinbot.tasks.windows import Window

if TYPE_CHECKING:
    from spinbot.tasks.talk import InfiniteTalkParams


@dataclass(frozen=True)
class SpeechTrack:
    """The processed speech, exactly `frames / fps` seconds long, and its per-frame features."""

    audio: np.ndarray  # float32 mono
    sample_rate: int
    fps: int
    frames: int
    features: FrameFeatures


class TalkBackend(Protocol):
    name: str
    # Params the backend acts on; every other param is validated anyway and reported as ignored.
    honoured_params: frozenset[str]

    def fit_portrait(self, image: np.ndarray, params: InfiniteTalkParams) -> tuple[np.ndarray, str]:
        """The portrait (RGB uint8) at the output frame size, and the sizing rule in a few words (the backend
        decides: its model may only know some sizes)."""

    def prepare(self, image: np.ndarray, speech: SpeechTrack, params: InfiniteTalkParams) -> Any:
        """Everything that does not change from frame to frame (models, face geometry, motion tracks).
        `image` is RGB uint8 at the output size."""

    def render_window(self, state: Any, window: Window) -> Iterable[np.ndarray]:
        """The window's new frames, window.new_frames in order, as RGB uint8 arrays of the image's size.
        A backend that generates all window.size frames yields frames[window.keep]."""

    def checkpoint(self, state: Any) -> bytes:
        """What the next window needs of the windows rendered so far (motion context, random state), as bytes a
        later process can give to `restore` after its own `prepare` (a resumed render: spinbot.tasks.talk_resume).
        Called between windows only; b"" for a backend whose windows depend on nothing before them."""

    def restore(self, state: Any, data: bytes) -> None:
        """Continue from `checkpoint`'s bytes, on a state fresh from `prepare` with the same inputs and params;
        ValueError (state untouched) for bytes it cannot use. Bytes from storage: never unpickled."""

    def numerics(self, state: Any) -> dict[str, Any]:
        """What the frames depend on besides the params, the inputs and the frame size: the settings, devices and
        model files the numbers come from, as JSON values read from names and file stats (nothing loaded). A window
        checkpoint made under other numerics is not continued (spinbot.tasks.talk_resume): its windows would not
        join the new ones."""

    def describe(self, state: Any) -> dict[str, Any]:
        """What the run found and decided, for the node's metadata; a "warnings" list if anything degraded."""
