"""A task's video as it is made: HLS segments and a playlist under jobs/<job>/<node>/live/ (spinbot.media.segments).

The live output is a preview of the node's real output, so a failure to write or store it stops the live output
with a warning in the node's metadata; it never fails the node.

Two runs of one node can overlap (a process whose lease or queue lock ran out during a long window rendered on while
another took the node over, as in spinbot.tasks.talk_resume). Each run claims the live folder as it starts (OWNER,
after removing what earlier runs left there) and checks its claim before it publishes each segment and each
playlist: an older run that finds the claim gone stops its live output, so it never adds its segments to the newer
run's playlist nor overwrites that playlist with its own.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from typing import Any, Self

import numpy as np

from spinbot.media.segments import PLAYLIST, HlsSegmenter
from spinbot.storage.base import artifact_key
from spinbot.tasks.base import RunClaim, TaskContext

log = logging.getLogger(__name__)

LIVE_FOLDER = "live"
LIVE_TASKS = frozenset({"infinite_talk", "upscale_video"})  # the tasks that write a live output
OWNER = "owner.json"  # the run that writes the live output now (module docstring); no segment or playlist name


class LiveSuperseded(Exception):
    """Another run of the node claimed its live output: this one stops writing it."""


def live_key(job_id: str, node_id: str, name: str = PLAYLIST) -> str:
    """The store key of a node's live playlist (or of one of its segments)."""
    return artifact_key(job_id, node_id, f"{LIVE_FOLDER}/{name}")


class LiveOutput:
    """HlsSegmenter publishing through the task context, or nothing when the job wants no live output (the control
    plane's SPINBOT_LIVE_OUTPUT; `spinbot run` without --watch)."""

    def __init__(
        self,
        ctx: TaskContext,
        fps: int | Fraction,
        width: int,
        height: int,
        max_segment_frames: int,
        audio: tuple[np.ndarray, int] | None,
        start_frame: int = 0,
    ):
        """start_frame: where a resumed render starts (spinbot.media.segments.HlsSegmenter)."""
        self.ctx = ctx
        self.warning: str | None = None
        self._segmenter: HlsSegmenter | None = None
        self._made: HlsSegmenter | None = None
        self.claim = RunClaim(ctx.store, live_key(ctx.job_id, ctx.node_id, OWNER))  # this run's, on the live output
        if not ctx.live_output:
            return
        if self._guard(lambda: ctx.discard(LIVE_FOLDER)) is None:  # an earlier attempt's segments and playlist
            return
        if self._guard(self._claim) is None:
            return
        self._segmenter = self._guard(
            lambda: HlsSegmenter(
                ctx.output_path(LIVE_FOLDER),
                fps,
                width,
                height,
                max_segment_frames,
                self._publish,
                audio=audio,
                start_frame=start_frame,
            )
        )
        self._made = self._segmenter  # kept after a stop, for describe()

    def _claim(self) -> bool:
        self.claim.take()
        return True

    def _confirm_claim(self) -> None:
        """LiveSuperseded unless the live folder is still this run's: a newer run removed the claim and made its own."""
        if not self.claim.held():
            raise LiveSuperseded(f"another run of node '{self.ctx.node_id}' writes it now")

    def _publish(self, name: str, path, content_type: str) -> None:
        self._confirm_claim()  # before every write: the newer run's segments and playlist are never touched
        self.ctx.save(f"{LIVE_FOLDER}/{name}", path, content_type=content_type)

    def write(self, frame: np.ndarray) -> None:
        if self._segmenter is not None:
            self._guard(lambda: self._segmenter.write(frame))

    def cut(self) -> None:
        """End the current segment (a window, a batch) and publish it."""
        if self._segmenter is not None:
            self._guard(self._segmenter.cut)

    def finish(self) -> None:
        if self._segmenter is not None:
            self._guard(self._segmenter.finish)

    def describe(self) -> dict[str, Any]:
        """For the node's metadata."""
        if self._made is None and self.warning is None:
            return {}
        described: dict[str, Any] = {"playlist": live_key(self.ctx.job_id, self.ctx.node_id)}
        if self._made is not None:
            described |= {"segments": self._made.segments, "format": "hls, mpeg-ts, h264 + aac"}
        if self.warning:
            described["warning"] = self.warning
        return described

    def _guard(self, action):
        try:
            return action()
        except Exception as err:  # a preview must not fail the render (module docstring)
            log.warning(
                "live output stopped",
                extra={"job_id": self.ctx.job_id, "node_id": self.ctx.node_id, "error": str(err)},
                exc_info=not isinstance(err, LiveSuperseded),  # a superseded run's stop is no fault to trace
            )
            self.warning = f"the live output stopped: {err}"
            self._stop()
            return None

    def _stop(self) -> None:
        segmenter, self._segmenter = self._segmenter, None
        if segmenter is not None:
            try:
                segmenter.close()
            except Exception as err:  # noqa: BLE001 - already stopping after an error
                log.debug("live output: closing after an error failed too", extra={"error": str(err)})

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop()  # after finish() there is nothing left to close; after an error it drops a half segment
