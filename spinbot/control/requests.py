"""What a job is made of, as the CLI and the API hand it to Runner.create_job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from spinbot.tasks.user_files import INPUT_KINDS

DEFAULT_PIPELINE = "f5tts_infinitetalk"
INPUT_ARTIFACTS = tuple(INPUT_KINDS)  # the job's input files, by the names tasks ask for: source_image, narrator_voice
# A job's queue priority: BullMQ's range, 1 runs first (spinbot.queue.config); the CLI and the API refuse others
PRIORITY_MIN, PRIORITY_MAX = 1, 2_097_152


class JobRequest(BaseModel):
    """One job to create. Inputs come as local files (`image`, `voice`: the CLI) or as keys of files already in
    the artifact store (`input_keys`: the API's uploads); a speech node's `narrator_voice` param names an upload
    by its id, a stored key, or (`local_files`) a local file. Lengths and limits are checked by Runner.create_job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pipeline: str = DEFAULT_PIPELINE
    prompt: str = ""  # may be empty when the params carry the user's own script (script.text)
    image: Path | None = None
    voice: Path | None = None
    ref_text: str | None = None  # the transcript of the narrator voice
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)  # node -> param -> value
    owner: str | None = None  # the API key's owner; None for local jobs
    # the CLI's: a speech node's `narrator_voice` param may name a local file, copied into the job's inputs as
    # `voice` is (never the API's: a client must not make the server read its own files)
    local_files: bool = False
    input_keys: dict[str, str] = Field(default_factory=dict)  # source_image / narrator_voice -> stored key
    priority: int | None = Field(default=None, ge=PRIORITY_MIN, le=PRIORITY_MAX)  # of the job's tasks, 1 runs first
    callback_url: str | None = None  # POSTed to, signed, when the job ends (spinbot.control.callbacks)
    callback_secret: str | None = None  # the client's own signing secret; None: a new one
    # the API client's Idempotency-Key and the digest of its request (spinbot.api.idempotency); the job is not
    # created (KeyInUse) where the owner's key already names one
    idempotency: tuple[str, str] | None = None
    # the most jobs the owner may have waiting or running with this one (the API's SPINBOT_MAX_ACTIVE_JOBS), held
    # as the job is written (TooManyJobs, nothing stored); None: no limit (the CLI)
    max_active: int | None = Field(default=None, ge=1)
