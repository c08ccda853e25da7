"""The lite infinite_talk backend: a 2-D animator of the portrait on the CPU, with no model weights.

Every frame is one cv2.remap of the portrait through a displacement field composed from parts precomputed in
`prepare` (jaw and lips, lip shape, eyelids, head motion, breathing), plus a mouth cavity drawn between the lips as
they part. The motion tracks for the whole video are computed in `prepare` too, so a frame depends only on its
index: the output is the same whatever the window plan, and deterministic for the same inputs.

The parts: face_layout.py (the face's proportions and where they are in the portrait), warp_fields.py (the
displacement fields and head masks), motion.py (the per-frame tracks from the speech), rendering.py (one frame).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np

from spinbot.backends.talk.base import SpeechTrack
from spinbot.backends.talk.face_layout import FaceLayout, locate_face
from spinbot.backends.talk.motion import motion_tracks
from spinbot.backends.talk.rendering import AnimatorState, cavity_colour, lash_colour, render_frame
from spinbot.backends.talk.warp_fields import blink_field, body_masks, jaw_field, spread_field
from spinbot.media.image import fit_size, resize_to
from spinbot.settings import get_settings
from spinbot.tasks.windows import Window

log = logging.getLogger(__name__)


class AnimatorBackend:
    name = "lite"
    honoured_params = frozenset({"fps", "frame_window_size", "motion_frame", "normalize_loudness", "audio_scale"})

    def fit_portrait(self, image: np.ndarray, params: Any) -> tuple[np.ndarray, str]:
        """Shrunk (never enlarged) to at most SPINBOT_TALK_MAX_PIXELS, multiples of 16, centre-cropped: any size
        suits a 2-D animator, so the portrait keeps as much of its own as the budget allows."""
        budget = get_settings().talk_max_pixels
        width, height = fit_size(image.shape[1], image.shape[0], budget)
        return resize_to(image, width, height), f"at most {budget} pixels (SPINBOT_TALK_MAX_PIXELS), never enlarged"

    def prepare(self, image: np.ndarray, speech: SpeechTrack, params: Any) -> AnimatorState:
        layout = locate_face(image)
        for warning in _face_warnings(layout, image.shape[1]):
            log.warning(warning)
        masks = body_masks(image.shape, layout)
        grid_y, grid_x = np.mgrid[masks.y0 : masks.y1, masks.x0 : masks.x1].astype(np.float32)
        return AnimatorState(
            image=np.ascontiguousarray(image),
            layout=layout,
            jaw=jaw_field(image.shape, layout),
            spread=spread_field(image.shape, layout),
            blink=blink_field(image.shape, layout),
            masks=masks,
            tracks=motion_tracks(speech, layout, params.audio_scale),
            cavity_rgb=cavity_colour(image, layout),
            lash_rgb=lash_colour(image, layout),
            grid_x=grid_x,
            grid_y=grid_y,
        )

    def render_window(self, state: AnimatorState, window: Window) -> Iterator[np.ndarray]:
        for index in window.new_frames:
            yield render_frame(state, index)

    def checkpoint(self, state: AnimatorState) -> bytes:
        return b""  # a frame depends only on its index (module docstring): nothing carries over between windows

    def restore(self, state: AnimatorState, data: bytes) -> None:
        if data:
            raise ValueError(f"the lite backend keeps no state between windows, got {len(data)} bytes")

    def numerics(self, state: AnimatorState) -> dict[str, Any]:
        return {}  # plain numpy on the frame size (SPINBOT_TALK_MAX_PIXELS' only effect): no model, no precision

    def describe(self, state: AnimatorState) -> dict[str, Any]:
        f = state.layout
        return {
            "face_found": f.face_found,
            "faces_found": f.faces_found,
            "face_box": [f.face.x, f.face.y, f.face.w, f.face.h],
            "eyes": "detected" if f.eyes_found else "estimated",
            "lip_line": "found" if f.lip_line_found else "estimated",
            "mouth": [round(f.mouth_x, 1), round(f.mouth_y, 1)],
            "blinks": int(np.count_nonzero(np.diff((state.tracks.blink > 0).astype(np.int8), prepend=0) == 1)),
            "warnings": _face_warnings(f, state.image.shape[1]),
        }


def _face_warnings(layout: FaceLayout, width: int) -> list[str]:
    """What the user should know about the face that speaks: none found, or one of several."""
    if not layout.face_found:
        return ["no face detected in the portrait: animated a centred estimate"]
    if layout.faces_found < 2:
        return []
    centre = (layout.face.x + layout.face.w / 2) / width
    where = "on the left" if centre < 1 / 3 else "on the right" if centre > 2 / 3 else "in the middle"
    return [
        f"{layout.faces_found} faces in the portrait: animated the largest, {where} "
        "(crop the portrait to the one that speaks)"
    ]
