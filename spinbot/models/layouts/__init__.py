"""One module per native backend: `check(params, models_dir)` (every file's key layout against the architecture the
backend builds) and `files(params, models_dir)` (what it needs, where it is looked up: spinbot/models/needs.py's list).

Importing a layout imports torch and the backend's packages (the gpu extra); for names, paths and sizes only (no
torch), use spinbot.models.needs.needed_files."""

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
