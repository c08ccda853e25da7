"""Every task name a pipeline may use, its plane, what it needs and produces, and the module that implements it.

Modules are imported lazily so that loading pipelines.json never imports a model backend.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from spinbot.control.requests import INPUT_ARTIFACTS

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


@dataclass(frozen=True)
class TaskIO:
    """The names a task reads from upstream (TaskContext.input_path / value) and puts in its NodeOutput: a pipeline
    is checked against them at load, so a node whose input nothing upstream makes is refused before any job runs.
    (tests/unit/test_pipelines.py reads each task's code to hold these to what it really asks for and returns.)"""

    needs_artifacts: tuple[str, ...] = ()
    needs_values: tuple[str, ...] = ()
    artifacts: tuple[str, ...] = ()
    values: tuple[str, ...] = ()


# How much of a job's work each task is, for the job's overall progress (spinbot.state.progress): a job's progress
# is its nodes' progress weighted by these, so the talking head, nearly all of a render's time, is nearly all of the
# bar (a plain average showed 54% when it had just started). Rough shares of a native render (100 in all): the
# script is an LLM call, the speech some seconds, the upscale minutes, the talking head tens of minutes.
TASK_WEIGHTS: dict[str, float] = {
    "script.generateScript": 1.0,
    "f5_to_tts": 4.0,
    "infinite_talk": 80.0,
    "upscale_video": 15.0,
}
DEFAULT_TASK_WEIGHT = 1.0  # a task registered without a weight (plugins; the queue tests' no-op tasks)


def task_weight(name: str) -> float:
    """The task's share of a job's work (TASK_WEIGHTS), relative to the job's other nodes."""
    return TASK_WEIGHTS.get(name, DEFAULT_TASK_WEIGHT)


# What every job starts with, as if a node before the first had made it: the uploaded files and the request's
# texts (Runner.create_job stores these as the job's inputs).
JOB_INPUTS = TaskIO(artifacts=INPUT_ARTIFACTS, values=("prompt", "ref_text"))

TASK_IO: dict[str, TaskIO] = {
    "script.generateScript": TaskIO(needs_values=("prompt",), values=("text",)),
    "f5_to_tts": TaskIO(
        needs_artifacts=("narrator_voice",), needs_values=("text",), artifacts=("audio",), values=("audio_duration",)
    ),
    "infinite_talk": TaskIO(
        needs_artifacts=("audio", "source_image"), artifacts=("video",), values=("video_duration",)
    ),
    "upscale_video": TaskIO(needs_artifacts=("video",), artifacts=("video",)),
}

# The artifact a job delivers: Runner.final_artifact takes the last node's `video`, the CLI writes it to --out.
FINAL_ARTIFACT = "video"


def register_task(
    name: str, module: str, plane: str = "python", io: TaskIO | None = None, weight: float | None = None
) -> None:
    """Add a task from outside the package (plugins; the queue tests' no-op tasks). Built-in names win. A pipeline
    with a task registered without its io is not checked for what its nodes need and make (nothing is known); one
    without a weight counts DEFAULT_TASK_WEIGHT in its job's progress."""
    TASK_PLANES.setdefault(name, plane)
    if weight is not None:
        TASK_WEIGHTS.setdefault(name, weight)
    _TASK_MODULES.setdefault(name, module)
    if io is not None:
        TASK_IO.setdefault(name, io)


def load_task(name: str) -> TaskDef:
    try:
        module = importlib.import_module(_TASK_MODULES[name])
    except KeyError:
        raise KeyError(f"unknown task '{name}'") from None
    return module.TASK
