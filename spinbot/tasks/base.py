"""What every task gets (TaskContext) and returns (NodeOutput), and how its params are validated."""

from __future__ import annotations

import difflib
import json
import shutil
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from spinbot.errors import InputError, ParamsError, echo, shorten
from spinbot.storage.base import ArtifactStore, artifact_key
from spinbot.tasks.model_files import outside_folder
from spinbot.tasks.user_files import INPUT_KINDS, INPUT_NAMES, check_user_file, written_by_the_job
from spinbot.tasks.video_budget import DerivedVideo

# The longest text a param may hold (a file name, a device, an extra prompt for the text encoder, which reads 512
# tokens): a job's params are stored, returned by every GET and repeated in meta.ignored_params. The texts a job is
# about have their own settings (SPINBOT_MAX_SCRIPT_CHARS, SPINBOT_MAX_REF_TEXT_CHARS), checked at admission.
MAX_PARAM_CHARS = 4000


def unstorable(text: str) -> str | None:
    """Why a text cannot be stored and sent back, or None: a NUL (PostgreSQL's text types cannot hold it), or a lone
    UTF-16 surrogate (JSON's "\\ud800" decodes to one; it is no character and has no UTF-8, so the job was stored,
    its speech failed, and every answer that showed it, the key's job list included, was a 500)."""
    if "\x00" in text:
        return "contains a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return f"contains {echo(text[err.start])}, a lone UTF-16 surrogate, which is no character"
    return None


class TaskParams(BaseModel):
    """Base for every params model: unknown names are refused, values are validated on assignment."""

    # NaN and infinities are refused (JSON has no such numbers; PostgreSQL's json type refuses them)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(), allow_inf_nan=False)
    # params whose length a setting bounds at admission instead of MAX_PARAM_CHARS
    LONG_TEXT_FIELDS: ClassVar[frozenset[str]] = frozenset()
    # params that name a model file or folder -> their folder under SPINBOT_MODELS_DIR (tasks/model_files.py)
    MODEL_FOLDERS: ClassVar[Mapping[str, str]] = {}

    @field_validator("*", mode="before")
    @classmethod
    def _no_truth_value_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic reads true as 1 and false as 0 for a number: {"fps": true} rendered a video at 1 fps
        if isinstance(value, bool) and cls.model_fields[info.field_name or ""].annotation in (int, float):
            raise ValueError("must be a number, not true or false")
        return value

    @field_validator("*", mode="after")
    @classmethod
    def _text_is_bounded(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str):
            problem = unstorable(value)
            if problem:
                raise ValueError(f"must be text: it {problem}")
            if info.field_name not in cls.LONG_TEXT_FIELDS and len(value) > MAX_PARAM_CHARS:
                raise ValueError(f"at most {MAX_PARAM_CHARS:,} characters ({len(value):,} given)")
        return value

    @field_validator("*", mode="after")
    @classmethod
    def _model_file_stays_in_its_folder(cls, value: Any, info: ValidationInfo) -> Any:
        # Refused here, so the CLI, the API and `spinbot models` all refuse it before any path is built: a worker
        # would otherwise load (and a missing-file error describe) whatever file on the server the value reaches.
        folder = cls.MODEL_FOLDERS.get(info.field_name or "")
        why = outside_folder(value) if folder is not None and isinstance(value, str) else None
        if why:
            raise ValueError(f"must be a relative path inside {folder}/ of SPINBOT_MODELS_DIR; this one {why}")
        return value


# What a task keeps under jobs/<job>/<node>/ so that a re-run of the node continues (tasks/talk_resume.py): no use
# once the job can never run that node again (it succeeded, or the job was cancelled), then removed by the runner
# and by `spinbot gc` (control/lifecycle.py).
RESUME_FOLDER = "resume"


class NodeOutput(BaseModel):
    """What a node hands downstream: plain values, artifact keys by name, and metadata for the record."""

    values: dict[str, Any] = Field(default_factory=dict)
    artifacts: dict[str, str] = Field(default_factory=dict)
    meta: dict[str, Any] = Field(default_factory=dict)


class Cancelled(Exception):
    """Raised inside a task when its job was cancelled."""


class Superseded(Exception):
    """Raised inside a task that found another run of its node took the node over (this run's process lost its
    lease or queue lock and kept rendering through a stall): it stops, and its driver records nothing for it."""


class RunClaim:
    """One run's claim on a folder of a node's stored files: `take` writes a random token to `key`, `held` says
    whether the file still holds it. Two runs of one node can overlap (a process whose lease or queue lock ran out
    rendered on while another took the node over); the window checkpoint (talk_resume) and the live output (live)
    each check their claim before they write, so the older run never writes over the newer one's files."""

    def __init__(self, store: ArtifactStore, key: str):
        self.store, self.key, self.token = store, key, uuid.uuid4().hex

    def take(self) -> None:
        self.store.put_bytes(self.key, json.dumps({"token": self.token}).encode(), content_type="application/json")

    def held(self) -> bool:
        try:
            claim = json.loads(self.store.get_bytes(self.key))
        except (FileNotFoundError, ValueError):  # removed by a newer run (or its success), or not a claim
            return False
        return isinstance(claim, dict) and claim.get("token") == self.token


ProgressFn = Callable[[float, str], None]


@dataclass
class TaskContext:
    job_id: str
    node_id: str
    store: ArtifactStore
    workdir: Path
    values: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    report: ProgressFn = lambda fraction, message: None
    is_cancelled: Callable[[], bool] = lambda: False
    live_output: bool = True  # the job wants its video as live HLS while it renders (tasks/live.py)
    checked: set[str] = field(default_factory=set)  # keys of the user's files checked so far (tasks/user_files.py)
    # the videos later nodes make from this node's, to check with its own (tasks/video_budget.py)
    derived_videos: list[DerivedVideo] = field(default_factory=list)

    def value(self, name: str) -> Any:
        if name not in self.values:
            raise InputError(f"node '{self.node_id}' needs input value '{name}', which no upstream node produced")
        return self.values[name]

    def input_path(self, name: str) -> Path:
        """Fetch the named input artifact into the work folder and return its local path; one of the job's inputs
        (the user's portrait or voice) is checked first, unless an earlier node of the job wrote it."""
        if name not in self.artifacts:
            raise InputError(f"node '{self.node_id}' needs input artifact '{name}', which no upstream node produced")
        key, kind = self.artifacts[name], INPUT_KINDS.get(name)
        if kind is None or written_by_the_job(self.job_id, key):
            return self.fetch(key)
        return self.fetch_user_file(key, kind, INPUT_NAMES[name])

    def fetch_user_file(self, key: str, kind: str, what: str) -> Path:
        """Fetch a file the user gave, and run the upload check of `kind` on this local copy (in the sandbox: see
        spinbot.tasks.user_files) the first time, before any decoder of this process reads it."""
        path = self.fetch(key)
        if key not in self.checked:
            check_user_file(path, kind, what)
            self.checked.add(key)
        return path

    def fetch(self, key: str) -> Path:
        dest = self.workdir / "in" / key.replace("/", "__")
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            self.store.download(key, dest)
        return dest

    def output_path(self, name: str) -> Path:
        """A local path to write an output file to before save()."""
        path = self.workdir / "out" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def save(self, name: str, path: Path, content_type: str | None = None) -> str:
        key = artifact_key(self.job_id, self.node_id, name)
        self.store.upload(path, key, content_type=content_type)
        return key

    def discard(self, folder: str) -> int:
        """Delete what an earlier attempt of this node left under jobs/<job>/<node>/<folder>/."""
        return self.store.delete_prefix(artifact_key(self.job_id, self.node_id, folder) + "/")

    def progress(self, fraction: float, message: str = "") -> None:
        if self.is_cancelled():
            raise Cancelled(f"node '{self.node_id}' cancelled")
        self.report(max(0.0, min(1.0, fraction)), message)

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass(frozen=True)
class TaskDef:
    name: str
    params_model: type[TaskParams]
    run: Callable[[TaskContext, Any], NodeOutput]
    # Settings that validate but cannot work with the configured backend (a model file missing from the models
    # folder): raises ParamsError("PARAM: why") when the job is submitted, before anything is stored.
    check: Callable[[Any], None] | None = None


# How deep a list or object may nest in a param value (every task of the catalog takes numbers, texts, true, false
# and null only): a value nested some 250 levels deep passed the JSON parser, then broke pydantic's serializer, so a
# job request with an Idempotency-Key (its digest serializes the body) was a 500.
MAX_PARAM_DEPTH = 8


def nesting_depth(value: Any, limit: int = MAX_PARAM_DEPTH) -> int:
    """How deep lists and objects nest in `value` (a scalar: 0), counted without recursion up to limit + 1."""
    depth, level = 0, [value]
    while depth <= limit:
        containers = [item for item in level if isinstance(item, (list, dict))]
        if not containers:
            break
        depth += 1
        level = [child for item in containers for child in (item.values() if isinstance(item, dict) else item)]
    return depth


def refuse_deep_params(params: Mapping[str, Any]) -> None:
    """ParamsError naming the first param (NODE.PARAM) whose value nests deeper than MAX_PARAM_DEPTH; checked
    before anything else reads a job's params."""
    for node_id, values in params.items():
        for name, value in values.items() if isinstance(values, dict) else ():
            if nesting_depth(value) > MAX_PARAM_DEPTH:
                raise ParamsError(
                    f"{shorten(node_id)}.{shorten(name)}: lists and objects nested more than {MAX_PARAM_DEPTH} "
                    "levels deep; a param is a number, a text, true, false or null"
                )


def validate_params(node_id: str, model: type[TaskParams], raw: dict[str, Any]) -> TaskParams:
    """Validate one node's params; the error names node and field in one line."""
    refuse_deep_params({node_id: raw})
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        if not first["loc"]:  # a rule across fields (a model validator): its message names the fields
            raise ParamsError(f"{node_id}: {first['msg'].removeprefix('Value error, ')}") from None
        fieldname = ".".join(str(p) for p in first["loc"])
        if first["type"] == "extra_forbidden":
            raise ParamsError(
                f"{node_id}.{shorten(fieldname)}: unknown param{did_you_mean(fieldname, model.model_fields)} "
                f"(allowed: {', '.join(model.model_fields)})"
            ) from None
        message = first["msg"].removeprefix("Value error, ")
        raise ParamsError(f"{node_id}.{fieldname}: {message} (got {echo(first.get('input'))})") from None


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """ "; did you mean fps?" for a misspelled name, or "" when nothing is close."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def ignored_params(params: TaskParams, honoured: set[str]) -> dict[str, Any]:
    """Params a backend validated but cannot honour: reported in the node output, never dropped silently."""
    return {k: v for k, v in params.model_dump().items() if k not in honoured}
