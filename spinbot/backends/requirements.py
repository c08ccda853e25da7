"""What each backend needs of a node's params, checked when the job is submitted, without loading the backend.

Choices every backend shares (schedulers, face detectors) are the params models' own types, and the model files
a native backend needs are each task's `check` (spinbot.tasks.model_files); these are the rest. A backend checks
these again when it runs (a worker may be configured differently from the control plane that
admitted the job), but with the same rules a job that cannot run is refused before any of its nodes starts,
instead of failing after the speech was made. Nothing here imports torch or a model: the API can run it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from spinbot.errors import ParamsError

Check = Callable[[str, Any, dict[str, Any]], None]  # (node id, validated params, the job's input values)


def tts_native(node_id: str, params: Any, values: dict[str, Any]) -> None:
    transcript = params.ref_text if params.ref_text is not None else values.get("ref_text")
    if not (transcript or "").strip():
        raise ParamsError(
            f"{node_id}: ref_text (the transcript of the narrator voice) is empty; the native F5-TTS "
            "backend needs it and does not transcribe"
        )


def talk_native(node_id: str, params: Any, values: dict[str, Any]) -> None:
    if params.motion_frame < 1:
        raise ParamsError(
            f"{node_id}.motion_frame: the native backend needs at least 1: each window continues "
            "from the last frames of the one before"
        )


# task -> backend name -> check; a backend missing here needs nothing beyond its params model.
REQUIREMENTS: dict[str, dict[str, Check]] = {
    "f5_to_tts": {"native": tts_native},
    "infinite_talk": {"native": talk_native},
}


def check_backend_params(task: str, backend: str, node_id: str, params: Any, values: dict[str, Any]) -> None:
    check = REQUIREMENTS.get(task, {}).get(backend)
    if check is not None:
        check(node_id, params, values)
