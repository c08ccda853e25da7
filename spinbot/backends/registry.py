"""Pick a task's backend by configuration (SPINBOT_TTS_BACKEND, SPINBOT_TALK_BACKEND, SPINBOT_UPSCALE_BACKEND)."""

from __future__ import annotations

import importlib
from typing import Any

from spinbot.errors import BackendUnavailable
from spinbot.settings import Settings, get_settings

# task -> backend name -> "module:factory"; a name that is missing here is not implemented yet.
_BACKENDS: dict[str, dict[str, str]] = {
    "f5_to_tts": {
        "lite": "spinbot.backends.tts.espeak:EspeakBackend",
        "native": "spinbot.backends.tts.f5.backend:NativeF5Backend",
    },
    "infinite_talk": {
        "lite": "spinbot.backends.talk.animator:AnimatorBackend",
        "native": "spinbot.backends.talk.infinitetalk.backend:NativeTalkBackend",
    },
    "upscale_video": {
        "lite": "spinbot.backends.upscale.resample:ResampleUpscaler",
        "native": "spinbot.backends.upscale.native:NativeUpscaler",
    },
}

_SETTING_FOR_TASK = {"f5_to_tts": "tts_backend", "infinite_talk": "talk_backend", "upscale_video": "upscale_backend"}


def backend_name(task: str, settings: Settings | None = None) -> str:
    return getattr(settings or get_settings(), _SETTING_FOR_TASK[task])


def get_backend(task: str, name: str | None = None) -> Any:
    """Instantiate the configured backend for a task, or fail with one line naming what is missing."""
    name = name or backend_name(task)
    target = _BACKENDS[task].get(name)
    if target is None:
        setting = "SPINBOT_" + _SETTING_FOR_TASK[task].upper()
        available = ", ".join(sorted(_BACKENDS[task])) or "none yet"
        raise BackendUnavailable(f"{task}: backend '{name}' is not implemented; set {setting} to one of: {available}")
    if name == "native":
        from spinbot.backends.gpu import apply_process_limits

        apply_process_limits(get_settings().gpu_memory_fraction)
    module_name, factory = target.split(":")
    return getattr(importlib.import_module(module_name), factory)()
