"""upscale_video: video -> 2x video with faces restored, streamed in batches, audio muxed back."""

from __future__ import annotations

from pydantic import Field

from spinbot.tasks.base import NodeOutput, TaskContext, TaskDef, TaskParams


class AIUpscalerParams(TaskParams):
    model_name_0: str = "RealESRGAN_x2.pth"
    model_name_1: str = "codeformer.pth"
    batch_size: int = Field(default=50, ge=1, le=10_000)
    facedetection: str = "retinaface_resnet50"
    codeformer_fidelity: float = Field(default=1, ge=0, le=1)
    frame_load_cap: int = Field(default=0, ge=0)


def run(ctx: TaskContext, params: AIUpscalerParams) -> NodeOutput:
    from spinbot.backends.registry import get_backend

    backend = get_backend("upscale_video")
    raise NotImplementedError(f"upscale_video workflow for backend {backend!r}")


TASK = TaskDef(name="upscale_video", params_model=AIUpscalerParams, run=run)
