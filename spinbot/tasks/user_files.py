"""The files of a job that a user gave (its portrait and narrator voice: an upload, a file named on the CLI, a stored
key a param names), told apart from the files the job's own nodes wrote.

A task reads a user's file only after the upload check (spinbot.media.upload_check: headers against the limits,
then a bounded decode) passed on that very local copy in the sandbox (spinbot.media.sandbox: a child process with
memory, CPU and time limits), in whatever process runs the task: a `spinbot worker`, the API or `spinbot run` in
embedded mode. The upload check at the API is not enough: a file can reach storage without it (put there by hand,
copied by the CLI, or changed since), and the decoders of the process that runs the task hold a GPU model or serve
everyone. An earlier node's output was written by our own code and is read as it is.
"""

from __future__ import annotations

from pathlib import Path

INPUTS_NODE = "inputs"  # job inputs are stored as if a node named "inputs" had produced them
# The artifacts a job starts with (spinbot.control.requests), by the kind the upload check decodes them as, and how
# a one-line error names them.
INPUT_KINDS = {"source_image": "portrait", "narrator_voice": "voice"}
INPUT_NAMES = {"source_image": "the portrait (source_image)", "narrator_voice": "the narrator voice (narrator_voice)"}
CHECK = "spinbot.media.upload_check:check_upload"  # run by name in a sandbox worker, which imports it


def written_by_the_job(job_id: str, key: str) -> bool:
    """The key is an output of one of this job's nodes (jobs/<job>/<node>/...), not one of its inputs."""
    parts = key.split("/")
    return len(parts) >= 4 and parts[0] == "jobs" and parts[1] == job_id and parts[2] != INPUTS_NODE


def check_user_file(path: Path, kind: str, what: str) -> None:
    """The upload check of `kind` ("portrait" or "voice") on the local file, in the sandbox unless
    SPINBOT_UPLOAD_CHECK_SANDBOX=false; a failure is one line that starts with `what`."""
    from spinbot.media.sandbox import run_checked
    from spinbot.settings import get_settings

    settings = get_settings()
    limits = (settings.max_image_pixels, (settings.min_voice_seconds, settings.max_voice_seconds))
    run_checked(settings, what, CHECK, kind, str(path), *limits, what)
