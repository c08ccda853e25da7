"""Every task name a pipeline may use, its plane, and the module that implements it.

Modules are imported lazily so that loading pipelines.json never imports a model backend.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spinbot.tasks.base import TaskDef

TASK_PLANES: dict[str, str] = {
    "script.generateScript": "node",
    "f5_to_tts": "python",
    "infinite_talk": "python",
    "upscale_video": "python",
}

_TASK_MODULES: dict[str, str] = {
    "script.generateScript": "spinbot.control.script",
    "f5_to_tts": "spinbot.tasks.tts",
    "infinite_talk": "spinbot.tasks.talk",
    "upscale_video": "spinbot.tasks.upscale",
}


def register_task(name: str, module: str, plane: str = "python") -> None:
    """Add a task from outside the package (plugins; the queue tests' no-op tasks). Built-in names win."""
    TASK_PLANES.setdefault(name, plane)
    _TASK_MODULES.setdefault(name, module)


def load_task(name: str) -> TaskDef:
    try:
        module = importlib.import_module(_TASK_MODULES[name])
    except KeyError:
        raise KeyError(f"unknown task '{name}'") from None
    return module.TASK
