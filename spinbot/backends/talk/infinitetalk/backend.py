"""The native infinite_talk backend: InfiniteTalk (Wan2.1-I2V-14B + audio adapter) in-process on PyTorch.

Implements spinbot.backends.talk.base.TalkBackend; the task (spinbot.tasks.talk) prepares the speech and the
portrait, plans the windows and streams each window's frames to the encoder. Models come from SPINBOT_MODELS_DIR
(loading.py) and stay in the worker's model cache between jobs. On CUDA the transformer runs in bfloat16 (norms
and modulations in float32), UMT5 and CLIP in bfloat16 (kept on the CPU between jobs), the VAE and wav2vec2 in
float32 (as the official pipeline); on the CPU everything is float32 (the CI's tiny models).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from spinbot.backends.talk.base import SpeechTrack
from spinbot.errors import BackendUnavailable
from spinbot.settings import get_settings
from spinbot.tasks.windows import Window

try:
    import torch
except ImportError:  # the registry imports this module by name: say what to install, in one line
    raise BackendUnavailable("infinite_talk native needs PyTorch: pip install -e '.[gpu]'") from None

from spinbot.backends.talk.infinitetalk import continuation, pipeline
from spinbot.backends.talk.infinitetalk.loading import Precision, load_models
from spinbot.backends.talk.infinitetalk.model import InfiniteTalkModel
from spinbot.backends.talk.infinitetalk.numerics import render_numerics
from spinbot.backends.talk.infinitetalk.sizing import BUCKETS, fit_portrait
from spinbot.backends.talk.infinitetalk.transformer_group import LoadSpec, active_group

if TYPE_CHECKING:
    from spinbot.tasks.talk import InfiniteTalkParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NativeTalkConfig:
    device: str | None = None  # None: CUDA when available, else the CPU
    seed: int = 290381  # InfiniteTalkParams has no seed yet; a params field `seed` takes precedence
    lora_strength: float = 1.0  # ComfyUI's default for the distillation LoRA; no param names it


DEFAULT_CONFIG = NativeTalkConfig()


class NativeTalkBackend:
    name = "native"
    honoured_params = frozenset(
        {
            "infinitetalk_model",
            "vae_model",
            "t5_text_encoder_model",
            "wav2vec_model",
            "lora_model",
            "clip_vision_model",
            "wan_video_model",
            "fps",
            "positive_prompt",
            "negative_prompt",
            "sampling_steps",
            "sampling_cfg",
            "sampling_scheduler",
            "frame_window_size",
            "motion_frame",
            "normalize_loudness",
            "audio_scale",
            "audio_cfg_scale",
            "resolution",
            "sampling_shift",
            "color_correction",
        }
    )

    def __init__(self, config: NativeTalkConfig | None = None, models_dir: Path | None = None):
        self.config = config or DEFAULT_CONFIG
        self.models_dir = models_dir
        self.on_step: pipeline.StepReport | None = None  # progress inside a window, (window, done, total)

    def fit_portrait(self, image: np.ndarray, params: InfiniteTalkParams) -> tuple[np.ndarray, str]:
        """The official rule: the nearest-aspect bucket of the `resolution` set, covered and centre-cropped."""
        fitted = fit_portrait(image, BUCKETS[params.resolution])
        return fitted, f"{params.resolution} bucket {fitted.shape[1]}x{fitted.shape[0]} (official InfiniteTalk sizes)"

    def prepare(self, image: np.ndarray, speech: SpeechTrack, params: InfiniteTalkParams) -> pipeline.TalkState:
        settings = pipeline.settings_from(params, self.config.seed)
        group = active_group()  # a worker started with --gpus: rank 0's device, the transformer on all
        device = group.devices[0] if group else torch.device(self.config.device or _default_device())
        env = get_settings()
        precision = Precision.for_device(
            device,
            fp8=env.talk_fp8,
            attention=env.talk_attention,
            fast_vae=env.talk_compile,
            vae_dtype=env.talk_vae_dtype,
        )
        models = load_models(params, self._models_dir(), precision, self.config.lora_strength)
        compile_mode = env.talk_compile_mode if device.type == "cuda" and env.talk_compile else None
        if compile_mode is not None:
            models.transformer.compile_blocks(None if compile_mode == "default" else compile_mode)
        if group is not None:
            spec = LoadSpec(models.files, precision, self.config.lora_strength, compile_mode)
            # a stand-in with the model's interface (conditions, token_grid, the call): the pipeline is unchanged
            models = replace(models, transformer=cast(InfiniteTalkModel, group.transformer(models.transformer, spec)))
        state = pipeline.prepare(models, image, speech, params, settings)
        ranks = group.world if group is not None else 1
        c = self.config
        state.numerics = render_numerics(precision, compile_mode, ranks, models.files, settings.seed, c.lora_strength)
        return state

    def render_window(self, state: pipeline.TalkState, window: Window) -> Iterator[np.ndarray]:
        return pipeline.render(state, window, self.on_step or _log_step)

    def checkpoint(self, state: pipeline.TalkState) -> bytes:
        return continuation.save(state)

    def restore(self, state: pipeline.TalkState, data: bytes) -> None:
        continuation.restore(state, data)

    def numerics(self, state: pipeline.TalkState) -> dict[str, Any]:
        return state.numerics

    def describe(self, state: pipeline.TalkState) -> dict[str, Any]:
        s, models = state.settings, state.models
        param = models.transformer.patch_embedding.weight
        attend = models.transformer.typed_blocks()[0].self_attn.attend
        steps = state.step_seconds
        return {
            "device": str(param.device),
            "transformer_dtype": str(param.dtype).removeprefix("torch."),
            "self_attention": getattr(attend, "__name__", type(attend).__name__),
            "vae_dtype": str(models.vae.dtype).removeprefix("torch."),
            "scheduler": s.scheduler,
            "sampling_steps": s.steps,
            "shift": s.shift,
            "seed": s.seed,
            "guidance": {
                "text": s.guidance.text_scale,
                "audio": s.guidance.audio_scale,
                "passes_per_step": list(s.guidance.passes),
            },
            "audio_scale": s.audio_scale,
            "frames_per_window": s.generated,
            "lora": None
            if models.lora is None
            else {"file": models.lora.file, "strength": models.lora.strength, "tensors": models.lora.tensors},
            "color_correction": s.color_strength,
            "wav2vec2_normalizes_waveform": models.audio.normalizes,
            "seconds_per_window": [round(t, 3) for t in state.window_seconds],
            "seconds_per_step": round(sum(steps) / len(steps), 4) if steps else None,
            "warnings": list(state.warnings),
            **(group.describe() if (group := active_group()) else {}),
        }

    def _models_dir(self) -> Path:
        return Path(self.models_dir or get_settings().models_dir)


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _log_step(window: int, done: int, total: int) -> None:
    log.debug("infinite_talk window step", extra={"window": window, "step": done, "steps": total})
