"""infinite_talk: portrait + speech -> lip-synced talking-head video (H.264 mp4 with the speech muxed)."""

from __future__ import annotations

from pydantic import Field

from spinbot.tasks.base import NodeOutput, TaskContext, TaskDef, TaskParams


class InfiniteTalkParams(TaskParams):
    # Model loading (paths relative to SPINBOT_MODELS_DIR, laid out as ComfyUI's models/ folder)
    infinitetalk_model: str = "wanvideo/infinite_talk/Wan2_1-InfiniTetalk-Single_fp16.safetensors"
    vae_model: str = "wanvideo/Wan2_1_VAE_bf16.safetensors"
    t5_text_encoder_model: str = "umt5/umt5-xxl-enc-bf16.safetensors"
    wav2vec_model: str = "TencentGameMate/chinese-wav2vec2-base"
    lora_model: str = "wanvideo/lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors"
    clip_vision_model: str = "wanvideo/clip_vision_h.safetensors"
    wan_video_model: str = "wanvideo/wan2.1_i2v_720p_14B_bf16.safetensors"
    # Sampling & generation
    fps: int = Field(default=25, ge=1, le=120)
    positive_prompt: str = "a man is talking to the camera, natural facial expressions, clear lip movement"
    negative_prompt: str = "blurry, distorted, deformed face, bad teeth, static, low quality, watermark, text"
    sampling_steps: int = Field(default=6, ge=1, le=200)
    sampling_cfg: float = Field(default=1.0, ge=0)
    sampling_scheduler: str = "dpm++_sde"
    frame_window_size: int = Field(default=81, ge=2)
    motion_frame: int = Field(default=25, ge=0)
    # Audio processing
    normalize_loudness: bool = True
    audio_scale: float = Field(default=1.6, ge=0)
    audio_cfg_scale: float = Field(default=1, ge=0)


def run(ctx: TaskContext, params: InfiniteTalkParams) -> NodeOutput:
    from spinbot.backends.registry import get_backend

    backend = get_backend("infinite_talk")
    raise NotImplementedError(f"infinite_talk workflow for backend {backend!r}")


TASK = TaskDef(name="infinite_talk", params_model=InfiniteTalkParams, run=run)
