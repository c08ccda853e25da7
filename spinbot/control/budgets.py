"""The video a job would make, estimated at submission and held to the size limits (spinbot.tasks.video_budget).

Each video node's frame and frame count, in pipeline order: infinite_talk's frame from the portrait's header (its
upright size) and the configured backend's sizing (native: the `resolution` bucket of the nearest aspect; lite: at
most SPINBOT_TALK_MAX_PIXELS), its frames from the speech estimated before it at its `fps`; upscale_video's frame is
its source's times its factor (upscale_factor: a native model file's own, from its header, where that backend runs
in this process; else the one `model_name_0` names), with as many frames (or `frame_load_cap`). The speech
estimate is a lower bound (spinbot.tasks.speech_length), so only a video surely over a limit is refused here; the
tasks check their real numbers again before they start work, infinite_talk its own video and the upscales' after it
(derived_videos, sent with its TaskRequest), so that real speech longer than estimated stops the job before the
talking head renders rather than after.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from spinbot.backends.registry import backend_name
from spinbot.backends.talk.infinitetalk.sizing import BUCKETS, bucket_size
from spinbot.backends.upscale.base import scale_from_model_name
from spinbot.control.requests import JobRequest
from spinbot.errors import InputError, ParamsError
from spinbot.media.image import fit_size
from spinbot.media.sandbox import run_checked
from spinbot.pipelines.spec import PipelineSpec
from spinbot.settings import Settings
from spinbot.storage.base import ArtifactStore
from spinbot.tasks.catalog import load_task
from spinbot.tasks.model_files import model_folders
from spinbot.tasks.talk import InfiniteTalkParams
from spinbot.tasks.upscale import AIUpscalerParams
from spinbot.tasks.video_budget import DerivedVideo, Upscale, Video, check_videos, derived, talk_levers
from spinbot.tasks.windows import frame_count

# Run in a sandbox worker, as every read of a user's file at submission (spinbot.media.sandbox).
PORTRAIT_SIZE = "spinbot.media.upload_check:portrait_size"


class VideoBudget:
    def __init__(self, settings: Settings, store: ArtifactStore):
        self.settings = settings
        self.store = store

    def check(self, spec: PipelineSpec, nodes: dict[str, Any], request: JobRequest, speech: dict[str, float]) -> None:
        """VideoTooLarge (a ParamsError) with one line for the first video node whose estimate is over a limit."""
        if not any(isinstance(given, InfiniteTalkParams) for given in nodes.values()):
            return  # no talking head: no portrait to size a video from (the tasks check their inputs' sizes)
        portrait = self.portrait_size(request)
        if portrait is None:
            return
        for node_id, video in estimate_videos(spec, nodes, speech, portrait, self.settings).items():
            check_videos(node_id, video, (), self.settings)

    def portrait_size(self, request: JobRequest) -> tuple[int, int] | None:
        """The job's portrait's upright size from its header, read in the sandbox (an upload is fetched first)."""
        with tempfile.TemporaryDirectory(prefix="spinbot-budget-") as tmp:
            if request.image is not None:
                path = Path(request.image)
            elif "source_image" in request.input_keys:
                key = request.input_keys["source_image"]
                path = (Path(tmp) / "portrait").with_suffix(Path(key).suffix)
                self.store.download(key, path)
            else:
                return None
            limit = self.settings.max_image_pixels
            try:
                width, height = run_checked(self.settings, "the portrait", PORTRAIT_SIZE, str(path), limit)
            except InputError:
                # Judged when it was uploaded (a local one by check_files, just before): a stored file that no
                # longer reads is refused by the task that reads it, in its own line (tasks/user_files.py).
                return None
        return int(width), int(height)


def estimate_videos(
    spec: PipelineSpec, nodes: dict[str, Any], speech: dict[str, float], portrait: tuple[int, int], settings: Settings
) -> dict[str, Video]:
    """Each talking head's and each upscale's video, in pipeline order; `speech`: the seconds estimated for each
    speech node (Admission.check_speech_length)."""
    videos: dict[str, Video] = {}
    for node_id, (talk, upscales) in upscale_chains(spec, nodes, settings).items():
        if not upscales:
            seconds = max((speech[a] for a in spec.ancestors(node_id) if a in speech), default=None)
            videos[node_id] = talk_video(node_id, nodes[node_id], seconds, portrait, settings)
        else:
            videos[node_id] = derived(videos[talk], upscales)
    return videos


def derived_videos(
    spec: PipelineSpec, params: dict[str, dict[str, Any]], node_id: str, settings: Settings
) -> list[DerivedVideo]:
    """The videos that the upscales after talking head `node_id` will make from its video, for infinite_talk to check
    on its real frame and speech before it renders (sent with its TaskRequest by Runner._request; `params`: the job's,
    as stored); [] for any other node."""
    if load_task(spec.nodes_by_id[node_id].task).params_model is not InfiniteTalkParams:
        return []
    nodes = {n.id: load_task(n.task).params_model.model_validate(params.get(n.id, {})) for n in spec.nodes}
    chains = upscale_chains(spec, nodes, settings)
    return [DerivedVideo(upscales=tuple(steps)) for talk, steps in chains.values() if talk == node_id and steps]


def upscale_chains(
    spec: PipelineSpec, nodes: dict[str, Any], settings: Settings
) -> dict[str, tuple[str, list[Upscale]]]:
    """Each video node, in pipeline order: the talking head its video comes from, and the upscales from that one's
    video to its own (a talking head: itself and none). An upscale's source is its nearest video node upstream, as
    Runner._request hands it the nearest `video`; one after no talking head is left out (its video comes from
    elsewhere)."""
    chains: dict[str, tuple[str, list[Upscale]]] = {}
    for node_id in spec.topological_order():
        given = nodes[node_id]
        if isinstance(given, InfiniteTalkParams):
            chains[node_id] = (node_id, [])
        elif isinstance(given, AIUpscalerParams):
            source = next((a for a in reversed(spec.ancestors(node_id)) if a in chains), None)
            if source is not None:
                talk, before = chains[source]
                step = Upscale(
                    node_id=node_id, scale=upscale_factor(given, settings), frame_load_cap=given.frame_load_cap
                )
                chains[node_id] = (talk, [*before, step])
    return chains


def talk_video(
    node_id: str, params: InfiniteTalkParams, seconds: float | None, portrait: tuple[int, int], settings: Settings
) -> Video:
    backend = backend_name("infinite_talk", settings)
    size = talk_frame_size(backend, portrait, params, settings)
    frames = None if seconds is None else max(1, frame_count(seconds, params.fps))
    about = f"about {seconds or 0:.0f} s of speech at {params.fps} fps"
    return Video(size, frames, about, *talk_levers(node_id, backend, params.resolution))


def talk_frame_size(
    backend: str, portrait: tuple[int, int], params: InfiniteTalkParams, settings: Settings
) -> tuple[int, int]:
    """The talking head's (width, height) for an upright portrait of this size: the sizing each backend's
    fit_portrait applies (native: spinbot.backends.talk.infinitetalk.sizing; lite: backends/talk/animator.py)."""
    width, height = portrait
    if backend == "native":
        return bucket_size(width, height, BUCKETS[params.resolution])
    return fit_size(width, height, settings.talk_max_pixels)


def upscale_factor(params: AIUpscalerParams, settings: Settings) -> int:
    """The factor upscale_video will scale by: where the native upscaler runs in this process (the embedded queue),
    its model file's own, read from the file's header (spinbot.models.layouts.upscale.upscaler_scale: no weights
    loaded); else the factor model_name_0 names (lite scales by it); else 1, a lower bound that the task checks
    again on the model it loads (a worker's native upscaler, a file whose header does not read)."""
    if backend_name("upscale_video", settings) == "native" and not settings.redis_url:
        path = Path(settings.models_dir) / model_folders("upscale_video")["model_name_0"] / params.model_name_0
        scale = _native_scale(path)
        if scale is not None:
            return scale
    try:
        return scale_from_model_name(params.model_name_0)
    except ParamsError:
        return 1


def _native_scale(path: Path) -> int | None:
    try:
        from spinbot.models.layouts.upscale import upscaler_scale  # torch: imported already where the backend runs
    except ImportError:  # a CPU install, where admission refuses the native backend (check_model_files)
        return None
    return upscaler_scale(path)
