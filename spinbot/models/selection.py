"""Which tasks' model files to list, check or pull, with which params (defaults, then --set overrides)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spinbot.errors import InputError
from spinbot.models.compare import Problem, condensed
from spinbot.models.files import ModelFile
from spinbot.models.layouts import LAYOUTS, layout_for
from spinbot.models.needs import needed_files

BACKEND_SETTING = {"f5_to_tts": "tts_backend", "infinite_talk": "talk_backend", "upscale_video": "upscale_backend"}


def native_tasks(settings: Any) -> list[str]:
    """The tasks whose configured backend is `native` (the only ones with model files)."""
    return [task for task, field in BACKEND_SETTING.items() if getattr(settings, field) == "native"]


def select_tasks(settings: Any, tasks: list[str] | None) -> list[str]:
    """The named tasks, or the settings' native ones; an unknown name is one line listing the known ones."""
    if not tasks:
        return native_tasks(settings)
    unknown = [t for t in tasks if t not in LAYOUTS]
    if unknown:
        raise InputError(f"unknown task '{unknown[0]}' (tasks with model files: {', '.join(LAYOUTS)})")
    return list(dict.fromkeys(tasks))


def task_params(task: str, overrides: dict[str, dict[str, Any]]) -> Any:
    """The task's params: defaults, then the --set values for its node (node id = task name, as in the default
    pipeline), validated by the task's own params model."""
    from spinbot.tasks.base import validate_params
    from spinbot.tasks.catalog import load_task

    return validate_params(task, load_task(task).params_model, overrides.get(task, {}))


def check_overrides(overrides: dict[str, dict[str, Any]]) -> None:
    unknown = [node for node in overrides if node not in LAYOUTS and node != "script"]
    if unknown:
        raise InputError(f"--set names node '{unknown[0]}', which has no model files (nodes: {', '.join(LAYOUTS)})")


def required_files(tasks: list[str], models_dir: Path, overrides: dict[str, dict[str, Any]]) -> list[ModelFile]:
    """Names, paths and sizes only: no torch (spinbot models list and pull run on the CPU install)."""
    check_overrides(overrides)
    return [f for task in tasks for f in needed_files(task, task_params(task, overrides), models_dir)]


def check_tasks(tasks: list[str], models_dir: Path, overrides: dict[str, dict[str, Any]]) -> list[Problem]:
    """Every task's problems, a file's many missing or unexpected keys in one line each (compare.condensed)."""
    check_overrides(overrides)
    return condensed([p for task in tasks for p in layout_for(task).check(task_params(task, overrides), models_dir)])


def startup_problems(settings: Any, queues: list[str]) -> tuple[list[str], list[Problem]]:
    """The native tasks a worker on `queues` serves, and the problems in their default files (what `spinbot
    models check --task T` prints for them)."""
    from spinbot.queue.config import DEFAULT_ROUTES

    routes = {**DEFAULT_ROUTES, **settings.queue_routes}
    served = [t for t in native_tasks(settings) if routes.get(t, settings.queue_default) in queues]
    return served, check_tasks(served, settings.models_dir, {}) if served else []


def refuse_on_problems(settings: Any, queues: list[str]) -> None:
    """Raise one clear SpinBotError (every problem on its own line) when the served tasks' files do not fit."""
    from spinbot.errors import SpinBotError

    try:
        served, problems = startup_problems(settings, queues)
    except ImportError as err:
        raise SpinBotError(
            f"refusing to start: the native backends need the gpu extra (pip install -e '.[gpu]'): {err}"
        ) from None
    if problems:
        lines = "\n".join(p.line(settings.models_dir) for p in problems)
        raise SpinBotError(
            f"refusing to start: {len(problems)} problem(s) in the model files of "
            f"{', '.join(served)} (SPINBOT_MODELS_DIR={settings.models_dir}; `spinbot models "
            f"pull` fetches missing files):\n{lines}"
        )
