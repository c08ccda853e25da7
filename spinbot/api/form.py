"""What the page needs beyond the params' JSON schemas (GET /v1/params): per task, a one-line description, the
backend this server runs it on, and the model files each file param may take from the models folder; the limits
the server holds its inputs to (so that the page can count characters and refuse an oversized file before sending
it); and a past job's inputs (the portrait and the voice sample), so that the page can show them and reuse them."""

from __future__ import annotations

import re
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request

from spinbot.api.auth import media_owner
from spinbot.api.deps import Owner
from spinbot.errors import JobNotFound, echo
from spinbot.state.store import JobView

router = APIRouter()

# The setting that picks each python-plane task's backend (spinbot.backends.registry).
BACKEND_SETTINGS = {"f5_to_tts": "tts_backend", "infinite_talk": "talk_backend", "upscale_video": "upscale_backend"}
JOB_INPUTS = ("source_image", "narrator_voice")


@router.get("/v1/params/form")
def params_form(request: Request, owner: Owner) -> dict[str, Any]:
    """Per task: `description` (one line), `backend` and the `setting` that picks it (python-plane tasks), and
    `files`: for each param that names a model file, the files present in the models folder (`choices`) when the
    configured backend loads them, or why the list is empty. Under `limits` (no task has that name): the upload's
    byte limit and its 413 message, and the character limits of the prompt, the own script and ref_text."""
    from spinbot.tasks.catalog import TASK_PLANES, load_task

    settings = request.app.state.settings
    return {name: _task_form(name, load_task(name), settings) for name in TASK_PLANES} | {"limits": _limits(settings)}


def _limits(settings: Any) -> dict[str, Any]:
    """The limits the page checks before it sends: the same numbers, and the upload's message, the server uses."""
    from spinbot.api.upload_body import too_large_message

    return {
        "upload_bytes": settings.max_upload_bytes,
        "upload_too_large": too_large_message(settings.max_upload_bytes),
        "prompt_chars": settings.max_prompt_chars,
        "script_chars": settings.max_script_chars,
        "ref_text_chars": settings.max_ref_text_chars,
    }


def _task_form(name: str, task: Any, settings: Any) -> dict[str, Any]:
    import sys

    from spinbot.tasks.model_files import MODEL_SLOTS, present_models

    doc = (sys.modules[task.run.__module__].__doc__ or "").strip().splitlines()
    form: dict[str, Any] = {"description": _one_line(name, doc[0] if doc else "")}
    setting = BACKEND_SETTINGS.get(name)
    if setting is None:
        return form
    backend = getattr(settings, setting)
    form |= {"backend": backend, "setting": f"SPINBOT_{setting.upper()}", "files": {}}
    for param, slot in MODEL_SLOTS.get(name, {}).items():
        where = f"{slot.folder}/ in SPINBOT_MODELS_DIR ({settings.models_dir})"
        if backend != "native":
            form["files"][param] = {"choices": [], "note": f"the {backend} backend loads no model file"}
            continue
        choices = present_models(settings.models_dir, slot)
        form["files"][param] = {"choices": choices, "note": f"files in {where}" if choices else f"no file in {where}"}
    return form


def _one_line(name: str, line: str) -> str:
    """A module docstring's first line without the task name it starts with."""
    text = re.sub(rf"^{re.escape(name)}(\s*\([^)]*\))?:\s*", "", line).strip()
    return text[:1].upper() + text[1:]


@router.get("/v1/jobs/{job_id}/inputs/{name}")
def job_input(
    job_id: str,
    name: Literal["source_image", "narrator_voice"],
    request: Request,
    owner: str | None = Depends(media_owner),
):
    """A job's portrait (`source_image`) or voice sample (`narrator_voice`) as it was submitted."""
    runner = request.app.state.services.runner
    job = owned_job(runner, job_id, owner)
    key = job.inputs.get("artifacts", {}).get(name)
    if not key or not runner.artifacts.exists(key):
        raise JobNotFound(f"job '{job_id}' has no input '{name}' any more")
    from spinbot.api.routes.artifacts import stored_file  # S3: streamed or presigned for the public endpoint only

    return stored_file(request.app.state.services, key, None, request)


def owned_job(runner: Any, job_id: str, owner: str | None) -> JobView:
    if not re.fullmatch(r"[0-9a-f]{32}", job_id):
        raise JobNotFound(f"job {echo(job_id)} not found")
    return runner.jobs.get(job_id, owner=owner) if owner is not None else runner.jobs.get(job_id)
