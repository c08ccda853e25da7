"""f5_to_tts: script text + narrator voice -> speech WAV (24 kHz mono, RMS-normalized).

The seed's workflow: F5TTSNode.generate_speech -> resample & normalize -> WAV artifact.
"""

from __future__ import annotations

from pydantic import Field

from spinbot.tasks.base import NodeOutput, TaskContext, TaskDef, TaskParams


class TextToSpeechParams(TaskParams):
    model: str = "F5TTS_v1_Base"
    device: str = "cuda"
    temperature: float = 0.8
    # The seed's table types speed as int (default 1); F5-TTS takes a float factor, so 0.9 is accepted too.
    speed: float = Field(default=1, gt=0.1, le=4)
    target_rms: float = Field(default=0.1, gt=0, le=1)
    cross_fade_duration: float = Field(default=0.15, ge=0, le=2)
    nfe_step: int = Field(default=32, ge=1, le=256)
    cfg_strength: float = 2
    # Storage key of the reference voice; unset: the job's uploaded narrator voice.
    narrator_voice: str | None = None
    # Transcript of narrator_voice; unset: the job's ref_text input.
    ref_text: str | None = None
    seed: int = 290381


def run(ctx: TaskContext, params: TextToSpeechParams) -> NodeOutput:
    from spinbot.backends.registry import get_backend

    backend = get_backend("f5_to_tts")
    raise NotImplementedError(f"f5_to_tts workflow for backend {backend!r}")


TASK = TaskDef(name="f5_to_tts", params_model=TextToSpeechParams, run=run)
