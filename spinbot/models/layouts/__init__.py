"""One module per native backend: `files(params, models_dir)` (what it needs, where it is looked up) and
`check(params, models_dir)` (every file's key layout against the architecture the backend builds)."""

from __future__ import annotations

import importlib
from types import ModuleType

LAYOUTS = {
    "f5_to_tts": "spinbot.models.layouts.f5tts",
    "infinite_talk": "spinbot.models.layouts.infinitetalk",
    "upscale_video": "spinbot.models.layouts.upscale",
}


def layout_for(task: str) -> ModuleType:
    return importlib.import_module(LAYOUTS[task])
