"""The HTTP API (FastAPI): uploads, jobs, live events (SSE), cancel, artifacts, pipelines, health, metrics."""

from __future__ import annotations

import json
import re
import tempfile
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import anyio
from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette.sse import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from spinbot import __version__
from spinbot.api.auth import Unauthorized, current_owner
from spinbot.api.jobs import JobExecutor
from spinbot.api.live import router as live_router
from spinbot.api.metrics import Metrics
from spinbot.control.runner import Runner
from spinbot.errors import InputError, JobNotFound, SpinBotError
from spinbot.pipelines.spec import get_pipeline, load_pipelines
from spinbot.settings import Settings, get_settings
from spinbot.state.store import FINAL_STATES, JobView

UPLOAD_KINDS = ("portrait", "voice")


class UploadTooLarge(InputError):
    pass


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pipeline: str = "f5tts_infinitetalk"
    prompt: str = Field(min_length=1, max_length=4000)
    image: str = Field(description="upload id of the portrait")
    voice: str = Field(description="upload id of the narrator voice")
    ref_text: str = ""
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    priority: int | None = Field(default=None, ge=1, le=2_097_152, description="queue priority, 1 runs first")


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _status_for(err: SpinBotError) -> int:
    if isinstance(err, Unauthorized):
        return 401
    if isinstance(err, JobNotFound):
        return 404
    if isinstance(err, UploadTooLarge):
        return 413
    return 400


def create_app(settings: Settings | None = None, runner: Runner | None = None) -> FastAPI:
    settings = settings or get_settings()
    runner = runner or Runner(settings)
    metrics = Metrics()
    executor = JobExecutor(runner, settings.api_job_threads)
    unsubscribe = runner.events.subscribe(metrics.on_event)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        executor.resume_unfinished()
        yield
        unsubscribe()
        executor.shutdown()

    app = FastAPI(title="SpinBot", version=__version__, lifespan=lifespan)
    app.state.settings, app.state.runner, app.state.executor, app.state.metrics = settings, runner, executor, metrics

    @app.exception_handler(SpinBotError)
    async def _spinbot_error(request: Request, err: SpinBotError):
        return error(_status_for(err), str(err))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, err: RequestValidationError):
        first = err.errors()[0]
        if first.get("type") == "json_invalid":
            return error(400, f"malformed JSON body: {first.get('ctx', {}).get('error', first['msg'])}")
        where = ".".join(str(p) for p in first["loc"] if p != "body")
        return error(422, f"{where}: {first['msg']}" if where else first["msg"])

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException):
        return error(err.status_code, str(err.detail))

    @app.middleware("http")
    async def _count_requests(request: Request, call_next):
        response = await call_next(request)
        route = request.scope.get("route")
        metrics.requests.labels(request.method, getattr(route, "path", "unmatched"), str(response.status_code)).inc()
        return response

    _routes(app, settings, runner, executor, metrics)
    app.include_router(live_router)
    from spinbot.api.web import mount_web

    mount_web(app)
    return app


def _routes(app: FastAPI, settings: Settings, runner: Runner, executor: JobExecutor, metrics: Metrics) -> None:
    store = runner.artifacts

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        runner.jobs.list(limit=1)  # the database answers
        return {"status": "ok", "version": __version__}

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/pipelines")
    def pipelines() -> dict[str, Any]:
        return {"pipelines": [
            {"name": name, "nodes": [n.model_dump() for n in spec.nodes],
             "edges": [e.model_dump(by_alias=True) for e in spec.edges]}
            for name, spec in load_pipelines(settings.pipelines).items()
        ]}

    @app.get("/v1/params")
    def params_schema() -> dict[str, Any]:
        """JSON schemas of every task's params, so clients can build forms with the seed's names and defaults."""
        from spinbot.tasks.catalog import TASK_PLANES, load_task

        return {name: load_task(name).params_model.model_json_schema() for name in TASK_PLANES}

    @app.post("/v1/uploads", status_code=201)
    async def upload(kind: Literal["portrait", "voice"] = Form(...), file: UploadFile = File(...),
                     owner: str | None = Depends(current_owner)) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="spinbot-upload-") as tmp:
            local = Path(tmp) / ("upload" + _safe_suffix(file.filename))
            size = await _save_limited(file, local, settings.max_upload_bytes)
            await anyio.to_thread.run_sync(_check_content, kind, local)
            upload_id = uuid.uuid4().hex
            key = f"uploads/{owner or 'local'}/{upload_id}/{kind}{local.suffix}"
            await anyio.to_thread.run_sync(lambda: store.upload(local, key, content_type=file.content_type))
        metrics.upload_bytes.observe(size)
        return {"id": upload_id, "kind": kind, "size": size, "filename": file.filename}

    @app.post("/v1/jobs", status_code=201)
    def create_job(body: JobCreate, owner: str | None = Depends(current_owner)) -> dict[str, Any]:
        spec = get_pipeline(body.pipeline, settings.pipelines)  # the pipeline, then params, then uploads
        runner.validate_params(spec, dict(body.params))
        image = _upload_key(store, owner, body.image, "portrait")
        voice = _upload_key(store, owner, body.voice, "voice")
        job_id = runner.create_job(body.pipeline, body.prompt, ref_text=body.ref_text, params=body.params,
                                   owner=owner, input_keys={"source_image": image, "narrator_voice": voice},
                                   priority=body.priority)
        metrics.jobs_created.inc()
        executor.submit(job_id)
        return job_json(runner.jobs.get(job_id))

    @app.get("/v1/jobs")
    def list_jobs(limit: int = Query(20, ge=1, le=200), offset: int = Query(0, ge=0),
                  owner: str | None = Depends(current_owner)) -> dict[str, Any]:
        jobs, total = runner.jobs.list(owner=owner, limit=limit, offset=offset)
        return {"items": [job_json(j) for j in jobs], "total": total, "limit": limit, "offset": offset}

    @app.get("/v1/jobs/{job_id}")
    def get_job(job_id: str, owner: str | None = Depends(current_owner)) -> dict[str, Any]:
        return job_json(_owned_job(runner, job_id, owner))

    @app.post("/v1/jobs/{job_id}/cancel", status_code=202)
    def cancel_job(job_id: str, owner: str | None = Depends(current_owner)) -> dict[str, Any]:
        job = _owned_job(runner, job_id, owner)
        if job.status not in FINAL_STATES:
            runner.cancel(job_id)
        return job_json(runner.jobs.get(job_id))

    @app.post("/v1/jobs/{job_id}/retry", status_code=202)
    def retry_job(job_id: str, owner: str | None = Depends(current_owner)) -> dict[str, Any]:
        """Run a failed job again from its first unfinished node."""
        job = _owned_job(runner, job_id, owner)
        if job.status != "failed":
            raise InputError(f"job '{job_id}' is {job.status}; only failed jobs can be retried")
        runner.reopen(job_id)  # pending again, with an event, before 202: live readers follow the new run
        executor.submit(job_id)
        return job_json(runner.jobs.get(job_id))

    @app.get("/v1/jobs/{job_id}/events")
    async def job_events(job_id: str, owner: str | None = Depends(current_owner)):
        job = _owned_job(runner, job_id, owner)
        return EventSourceResponse(_event_stream(runner, job), ping=10)

    @app.get("/v1/jobs/{job_id}/artifacts/{node_id}/{name}")
    def artifact(job_id: str, node_id: str, name: str, owner: str | None = Depends(current_owner)):
        job = _owned_job(runner, job_id, owner)
        record = next((a for a in job.artifacts if a["node_id"] == node_id and a["name"] == name), None)
        if record is None:
            raise JobNotFound(f"artifact '{node_id}/{name}' not found for job '{job_id}'")
        key = record["key"]
        if hasattr(store, "path"):
            return FileResponse(store.path(key), media_type=record["content_type"] or "application/octet-stream",
                                filename=Path(key).name)
        return RedirectResponse(store.presigned_url(key), status_code=307)


async def _event_stream(runner: Runner, job: JobView):
    """A snapshot first, then every event of the job in order until it ends."""
    yield {"event": "snapshot", "data": json.dumps(job_json(job))}
    if job.status in FINAL_STATES:
        return
    events = runner.events.follow(job.id, timeout=1.0)
    try:
        while True:
            event = await anyio.to_thread.run_sync(next, events)
            if event is None:
                if runner.jobs.get(job.id).status in FINAL_STATES:
                    yield {"event": "snapshot", "data": json.dumps(job_json(runner.jobs.get(job.id)))}
                    return
                continue
            yield {"event": event.kind, "data": json.dumps(event.to_dict())}
            if event.kind == "job" and event.status in FINAL_STATES:
                return
    finally:
        events.close()


def _owned_job(runner: Runner, job_id: str, owner: str | None) -> JobView:
    if not re.fullmatch(r"[0-9a-f]{32}", job_id):
        raise JobNotFound(f"job '{job_id}' not found")
    return runner.jobs.get(job_id, owner=owner) if owner is not None else runner.jobs.get(job_id)


def _safe_suffix(filename: str | None) -> str:
    suffix = Path(filename or "").suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix) else ".bin"


async def _save_limited(file: UploadFile, dest: Path, limit: int) -> int:
    size = 0
    with open(dest, "wb") as out:
        while chunk := await file.read(1 << 20):
            size += len(chunk)
            if size > limit:
                raise UploadTooLarge(f"upload is larger than the limit of {limit} bytes")
            out.write(chunk)
    if size == 0:
        raise InputError("upload is empty")
    return size


def _check_content(kind: str, path: Path) -> None:
    """Judge the file by decoding it, never by its name."""
    from spinbot.media.audio import load_audio
    from spinbot.media.image import load_image

    try:
        load_image(path) if kind == "portrait" else load_audio(path)
    except InputError:
        what = "an image" if kind == "portrait" else "audio"
        raise InputError(f"the {kind} upload is not {what} that can be decoded") from None


def _upload_key(store, owner: str | None, upload_id: str, kind: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{32}", upload_id or ""):
        raise InputError(f"unknown {kind} upload '{upload_id}'")
    keys = [k for k in store.list(f"uploads/{owner or 'local'}/{upload_id}") if Path(k).stem == kind]
    if not keys:
        raise InputError(f"unknown {kind} upload '{upload_id}'")
    return keys[0]


def job_json(job: JobView) -> dict[str, Any]:
    base = f"/v1/jobs/{job.id}/artifacts"
    script = next((n.output for n in job.nodes if n.task == "script.generateScript" and n.output), None)
    return {
        "id": job.id,
        "pipeline": job.pipeline,
        "status": job.status,
        "priority": job.priority,
        "error": job.error,
        "prompt": job.inputs.get("values", {}).get("prompt"),
        "ref_text": job.inputs.get("values", {}).get("ref_text"),
        "script": (script or {}).get("values", {}).get("text"),
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "params": job.params,
        "nodes": [
            {"id": n.node_id, "task": n.task, "plane": n.plane, "status": n.status, "progress": n.progress,
             "message": n.message, "attempts": n.attempts, "error": n.error, "seconds": n.seconds,
             "meta": (n.output or {}).get("meta"), "values": (n.output or {}).get("values")}
            for n in job.nodes
        ],
        "artifacts": [
            {"node_id": a["node_id"], "name": a["name"], "size": a["size"], "content_type": a["content_type"],
             "url": f"{base}/{a['node_id']}/{a['name']}"}
            for a in job.artifacts
        ],
    }
