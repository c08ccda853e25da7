"""The API's request and response bodies, so /openapi.json documents every one of them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from spinbot.api.public_errors import public_error, public_meta
from spinbot.control.callback_url import url_host
from spinbot.control.requests import PRIORITY_MAX, PRIORITY_MIN
from spinbot.state.models import as_utc
from spinbot.state.store import JobView, NodeView
from spinbot.storage.uploads import upload_id_of

UploadKind = Literal["portrait", "voice"]
# Every time in an answer: aware and in UTC, written as 2026-12-05T17:31:37.123456Z (spinbot.state.models.iso_utc).
# A naive one (a stored time SQLite gave back, a webhook state written before) is UTC; a time in another zone (a
# PostgreSQL session's) is converted, so that one form goes out everywhere.
UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pipeline: str = Field(default="f5tts_infinitetalk", max_length=200)
    prompt: str = Field(
        default="",
        description="what the video is about, at most SPINBOT_MAX_PROMPT_CHARS characters; may be empty when "
        "params.script.text gives your own script",
    )
    image: str = Field(max_length=64, description="upload id of the portrait")
    voice: str = Field(max_length=64, description="upload id of the narrator voice")
    ref_text: str = Field(default="", description="transcript of the voice, at most SPINBOT_MAX_REF_TEXT_CHARS")
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    priority: int | None = Field(
        default=None,
        ge=PRIORITY_MIN,
        le=PRIORITY_MAX,
        description="queue priority, 1 runs first; with API keys, only a key of SPINBOT_PRIORITY_API_KEYS may set it "
        "(403)",
    )
    callback_url: str | None = Field(
        default=None,
        max_length=8192,
        description="an http(s) URL POSTed to, signed, when the job ends (succeeded, failed or cancelled): the job as "
        "GET returns it, with an event id; it must resolve to public addresses only (SPINBOT_CALLBACK_ALLOW_PRIVATE, "
        "SPINBOT_CALLBACK_ALLOW_HOSTS), with no credentials, at most SPINBOT_CALLBACK_MAX_URL_CHARS",
    )
    callback_secret: str | None = Field(
        default=None,
        max_length=200,
        description="your own signing secret for the callback (whsec_ and the base64 of 24 to 64 random bytes); "
        "omitted: the job's answer carries a new one, once",
    )


class UploadOut(BaseModel):
    id: str = Field(description="the upload id a job names as its image or voice")
    kind: UploadKind
    size: int = Field(description="bytes")
    filename: str | None


class NodeOut(BaseModel):
    id: str
    task: str
    plane: str
    status: str
    progress: float = Field(
        description="0..1; never goes down within one attempt: a node that starts again (a takeover, a resume, a "
        "retry, another worker) starts from 0 with attempts one higher"
    )
    message: str | None
    attempts: int
    error: str | None
    seconds: float | None
    seconds_left: float | None = Field(
        default=None,
        description="a running node's estimated time left, in seconds: its own progress rate measured after its "
        "set-up (from the end of the slowest interval between two of its reports: a model load, not the work); null "
        "until a report after that has measured some progress, and once the node is not running",
    )
    meta: dict[str, Any] | None
    values: dict[str, Any] | None

    @classmethod
    def of(cls, node: NodeView, now: datetime) -> NodeOut:
        """The node as a client sees it; `now` on the database's clock, which wrote its estimated end."""
        output = node.output or {}
        return cls(
            id=node.node_id,
            task=node.task,
            plane=node.plane,
            status=node.status,
            progress=node.progress,
            message=node.message,
            attempts=node.attempts,
            error=public_error(node.error),
            seconds=node.seconds,
            seconds_left=node.seconds_left(now),
            meta=public_meta(output.get("meta")),
            values=output.get("values"),
        )


class ArtifactOut(BaseModel):
    node_id: str
    name: str
    size: int | None
    content_type: str | None
    url: str = Field(description="GET it with the API key, or the media cookie that every keyed answer sets")

    @classmethod
    def of(cls, artifact: dict[str, Any], job_id: str) -> ArtifactOut:
        node_id, name = artifact["node_id"], artifact["name"]
        return cls(
            node_id=node_id,
            name=name,
            size=artifact["size"],
            content_type=artifact["content_type"],
            url=f"/v1/jobs/{job_id}/artifacts/{node_id}/{name}",
        )


class CallbackOut(BaseModel):
    """The job's webhook: where (the host only) and how its delivery went; never its URL's path or query, nor the
    secret."""

    url_host: str = Field(description="the callback URL's host (and port, where not the scheme's default)")
    state: Literal["waiting", "pending", "delivered", "failed", "superseded"] = Field(
        description="waiting: the job has not ended; pending: being delivered (retries included); delivered: a 2xx "
        "answer; failed: attempts used up or a final answer (4xx, a redirect); superseded: the job was retried or "
        "deleted before it went out"
    )
    delivered: bool
    event_id: str | None = Field(description="the webhook-id of the event being delivered (the same on every attempt)")
    attempts: int
    last_attempt_at: UtcDatetime | None
    last_status: int | None = Field(description="the receiver's HTTP status at the last attempt")
    last_error: str | None = Field(description="why the last attempt failed, in one line")

    @classmethod
    def of(cls, callback: dict[str, Any] | None) -> CallbackOut | None:
        if not callback:
            return None
        return cls(
            url_host=url_host(callback["url"]),
            state=callback["state"],
            delivered=callback["state"] == "delivered",
            event_id=callback.get("event_id"),
            attempts=callback.get("attempts") or 0,
            last_attempt_at=callback.get("last_attempt_at"),
            last_status=callback.get("last_status"),
            last_error=callback.get("last_error"),
        )


class JobOut(BaseModel):
    id: str
    pipeline: str
    status: str
    progress: float = Field(
        default=0.0,
        description="the job's overall progress, 0..1: its nodes' progress (a finished node counts 1) weighted by "
        "their tasks' share of the work (the talking head most); never goes down, 1 only once the job succeeded",
    )
    seconds_left: float | None = Field(
        default=None,
        description="the job's estimated time left, in seconds: its unfinished nodes' seconds_left together; null "
        "while one of them has none (a node that has not started has none)",
    )
    priority: int | None
    error: str | None
    prompt: str | None
    ref_text: str | None
    script: str | None
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    params: dict[str, Any]
    nodes: list[NodeOut]
    artifacts: list[ArtifactOut]
    callback: CallbackOut | None = Field(default=None, description="the webhook, for a job created with one")
    idempotency_key: str | None = Field(
        default=None, description="the Idempotency-Key header of the request that created the job, if it had one"
    )

    @classmethod
    def of(cls, job: JobView) -> JobOut:
        values = job.inputs.get("values", {})
        now = job.now  # the database's clock, which wrote its nodes' estimated ends
        return cls(
            id=job.id,
            pipeline=job.pipeline,
            status=job.status,
            progress=job.progress,
            seconds_left=job.seconds_left(now),
            priority=job.priority,
            error=public_error(job.error),
            prompt=values.get("prompt"),
            ref_text=values.get("ref_text"),
            script=_script_text(job),
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            params=public_params(job.params),
            nodes=[NodeOut.of(n, now) for n in job.nodes],
            artifacts=[ArtifactOut.of(a, job.id) for a in job.artifacts],
            callback=CallbackOut.of(job.callback),
            idempotency_key=job.idempotency_key,
        )


def _script_text(job: JobView) -> str | None:
    """The script the job's script node wrote, once it has."""
    script = next((n.output for n in job.nodes if n.task == "script.generateScript" and n.output), None)
    return (script or {}).get("values", {}).get("text")


class JobCreated(JobOut):
    callback_secret: str | None = Field(
        default=None,
        description="the callback's signing secret, answered only here and only when the server made it: keep it to "
        "verify webhook-signature (README)",
    )


class JobPage(BaseModel):
    items: list[JobOut]
    total: int
    limit: int
    offset: int


class PipelineOut(BaseModel):
    name: str
    nodes: list[dict[str, Any]]
    edges: list[dict[str, Any]]


class PipelinesOut(BaseModel):
    pipelines: list[PipelineOut]


class HealthOut(BaseModel):
    status: Literal["ok"]
    version: str


class DependencyState(BaseModel):
    ok: bool
    ms: float = Field(description="how long the check took")
    detail: str = Field(
        description="'ok', 'not configured', 'unreachable' or 'timed out'; backends: 'loading' or 'unavailable' too"
    )


class ReadyOut(BaseModel):
    status: Literal["ready", "unavailable"]
    dependencies: dict[str, DependencyState] = Field(
        description="database, redis, storage, and backends (the native backends' imports, done as the API starts)"
    )


def public_params(params: dict[str, Any]) -> dict[str, Any]:
    """A job's params as its client gave them: a `narrator_voice` is stored as the key admission resolved it to
    (uploads/<owner>/<id>/voice.wav), and answered as the upload's id again, which a new job may name; a local
    file the CLI copied in by its file name (object keys stay internal)."""
    shown = {}
    for node_id, given in params.items():
        voice = given.get("narrator_voice") if isinstance(given, dict) else None
        if isinstance(voice, str):
            given = {**given, "narrator_voice": upload_id_of(voice) or public_meta(voice)}
        shown[node_id] = given
    return shown
