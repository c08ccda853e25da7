"""Deleting jobs: their artifacts, the uploads no other job names, their checkpoints and their rows.

Nothing a running job needs is deleted: only a job that is finished (or interrupted by its user) can go, and the
deleting process holds the job's lease meanwhile, so no other process can start it (a retry) halfway through.
Retention (SPINBOT_JOB_RETENTION_DAYS) deletes finished jobs that finished longer ago than that; `spinbot gc` and
the API's sweeper apply it. A node's resume checkpoint (tasks/talk_resume.py) goes as soon as the node can never run
again: the node's success removes it, the job's cancellation (discard_checkpoints), and `spinbot gc` what a run
wrote late (sweep_checkpoints). A failed or interrupted job keeps it for its retry, until the job is deleted.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from spinbot.errors import Conflict, JobNotFound
from spinbot.state import store as st
from spinbot.state.checkpoints import open_checkpointer
from spinbot.state.inputs_in_use import delete_unused
from spinbot.state.models import utcnow
from spinbot.storage.base import artifact_key
from spinbot.tasks.base import RESUME_FOLDER

if TYPE_CHECKING:
    from spinbot.control.runner import Runner

log = logging.getLogger(__name__)

DELETABLE_STATES = (*st.FINAL_STATES, st.INTERRUPTED, st.DELETING)


def delete_job(runner: Runner, job_id: str) -> None:
    """Delete a finished job's stored files and records; JobNotFound if there is no such job, Conflict while
    it is pending or running (here or in another process)."""
    if (job := runner.jobs.get(job_id)).status not in DELETABLE_STATES:
        raise _not_deletable(job)
    runner.leases.require(job_id)
    try:
        # A retry answered in this process shares the lease's owner, so the lease alone does not keep it out: the
        # status moves to deleting only if it is still deletable, and a retry from then on finds it not failed.
        if not runner.jobs.mark_deleting(job_id, DELETABLE_STATES):
            raise _not_deletable(runner.jobs.get(job_id))
        job = runner.jobs.get(job_id)
        runner.artifacts.delete_prefix(f"jobs/{job.id}")
        _delete_unused_uploads(runner, job)
        with open_checkpointer(runner.settings) as saver:
            saver.delete_thread(job_id)
        runner.jobs.delete_job(job_id)
    finally:
        runner.leases.release(job_id)
    log.info("job deleted", extra={"job_id": job_id})


def expire_jobs(runner: Runner, days: float, dry_run: bool = False) -> list[str]:
    """Delete the jobs that finished more than `days` days ago; returns their ids (those it would delete, with
    dry_run). A job retried or deleted meanwhile is skipped."""
    expired = runner.jobs.finished_before(utcnow() - timedelta(days=days))
    if dry_run:
        return expired
    deleted = []
    for job_id in expired:
        try:
            delete_job(runner, job_id)
        except (Conflict, JobNotFound) as err:
            log.info("expired job not deleted", extra={"job_id": job_id, "reason": str(err)})
            continue
        deleted.append(job_id)
    return deleted


def discard_checkpoints(runner: Runner, nodes: list[tuple[str, str]]) -> int:
    """Remove the resume checkpoints of these (job, node)s, which will never run again; returns the files removed.
    A store error is logged, never raised: the job's own state is what matters, and `spinbot gc` tries again."""
    removed = 0
    for job_id, node_id in nodes:
        try:
            removed += runner.artifacts.delete_prefix(artifact_key(job_id, node_id, RESUME_FOLDER) + "/")
        except Exception as err:  # noqa: BLE001 - see the docstring
            log.warning("checkpoint not removed", extra={"job_id": job_id, "node_id": node_id, "error": str(err)})
    return removed


def sweep_checkpoints(runner: Runner) -> int:
    """Checkpoints of jobs that succeeded or were cancelled: what a superseded run of a node (spinbot.tasks.base.
    Superseded) or a task still stopping wrote after its job's end had removed them. Returns the files removed."""
    return discard_checkpoints(runner, runner.jobs.nodes_of_jobs_in((st.SUCCEEDED, st.CANCELLED)))


def _not_deletable(job: st.JobView) -> Conflict:
    return Conflict(
        f"job {job.id} is {job.status}; cancel it (spinbot cancel {job.id}, or POST /v1/jobs/{job.id}/cancel) "
        "and wait until it has stopped to delete it"
    )


def _delete_unused_uploads(runner: Runner, job: st.JobView) -> None:
    """The folder of each upload the job used that none of the owner's other jobs names, under the owner's lock
    (spinbot.state.inputs_in_use): a job naming one that is submitted meanwhile is written first and keeps it, or
    is refused."""
    uploads = [key for key in job.inputs.get("artifacts", {}).values() if _is_upload(key)]

    def delete(unused: list[str]) -> None:
        for folder in sorted({str(PurePosixPath(key).parent) for key in unused}):
            runner.artifacts.delete_prefix(folder)

    delete_unused(runner.jobs.engine, job.owner, uploads, delete, except_job=job.id)


def _is_upload(key: str) -> bool:
    # uploads/<owner>/<upload id>/<kind>.<ext>: the upload id's folder holds that one file
    parts = PurePosixPath(key).parts
    return len(parts) == 4 and parts[0] == "uploads"
