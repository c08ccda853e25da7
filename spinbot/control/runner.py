"""Start, run, resume and cancel jobs: the LangGraph graph drives the nodes, the store records every state.

Just past 400 lines: the Runner is the one thing that drives a job (the API and the CLI both go through it), so its
life (create, run a node, finish, reopen, cancel) reads in one class; admission, leases, progress, deletion and
webhooks are modules of their own.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from spinbot.control.admission import Admission
from spinbot.control.budgets import derived_videos
from spinbot.control.callback_url import CallbackPolicy
from spinbot.control.callbacks import CallbackSender, new_job_callback
from spinbot.control.dispatch import Dispatcher, InProcessDispatcher, TaskRequest, execute_task
from spinbot.control.lease import LeaseKeeper, LeaseLost
from spinbot.control.progress import JobProgress, NodeProgress
from spinbot.control.requests import JobRequest
from spinbot.errors import InputError, ParamsError, SpinBotError, TaskFailed, TooManyJobs, shorten
from spinbot.pipelines.planner import compile_graph
from spinbot.pipelines.spec import PipelineSpec, get_pipeline
from spinbot.settings import Settings, get_settings
from spinbot.state import store as st
from spinbot.state.callbacks import CallbackStore
from spinbot.state.checkpoints import open_checkpointer
from spinbot.state.db import get_engine
from spinbot.state.events import Event, EventBus, make_event_bus
from spinbot.state.idempotency import KeyInUse
from spinbot.state.lease import LeaseStore
from spinbot.storage.base import ArtifactStore, artifact_key, open_store
from spinbot.storage.uploads import require_stored
from spinbot.tasks.base import Cancelled, NodeOutput, Superseded, did_you_mean, validate_params
from spinbot.tasks.catalog import load_task
from spinbot.tasks.user_files import INPUTS_NODE  # job inputs are stored as if a node named "inputs" wrote them

log = logging.getLogger(__name__)

TAKEN_OVER = "waiting to resume: the process that ran it stopped"


class JobCancelled(Exception):
    pass


def _stops(job_status: str, node_status: str) -> bool:
    """A node still to run or running takes its job's end state when the job is cancelled or interrupted."""
    if job_status == st.CANCELLED:
        return node_status in (st.PENDING, st.QUEUED, st.RUNNING)
    return job_status == st.INTERRUPTED and node_status in (st.QUEUED, st.RUNNING)


def _plain(value: Any) -> Any:
    """numpy scalars and arrays (and Paths) that tasks put in their metadata, as JSON-ready values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"node output holds a {type(value).__name__}, which cannot be stored")


def make_dispatcher(settings: Settings, artifacts: ArtifactStore) -> Dispatcher:
    """The Redis queue when SPINBOT_REDIS_URL is set, else in-process."""
    if settings.redis_url:
        from spinbot.queue.dispatcher import QueueDispatcher

        return QueueDispatcher.from_settings(settings)
    return InProcessDispatcher(artifacts)


class Runner:
    """The control plane in one object; the CLI and the API both drive jobs through it."""

    def __init__(
        self,
        settings: Settings | None = None,
        dispatcher: Dispatcher | None = None,
        events: EventBus | None = None,
        artifacts: ArtifactStore | None = None,
    ):
        self.settings = settings or get_settings()
        self.jobs = st.JobStore(get_engine(self.settings.resolved_database_url))
        self.artifacts = artifacts or open_store(self.settings.resolved_storage_url)
        self.dispatcher = dispatcher or make_dispatcher(self.settings, self.artifacts)
        self.events = events or make_event_bus(self.settings.redis_url)
        self.leases = LeaseKeeper(LeaseStore(self.jobs.engine), self.settings.job_lease_seconds)
        self._progress: dict[str, JobProgress] = {}  # the overall progress of each job this process drives
        self.callbacks: CallbackSender | None = None  # the API's: sends the webhooks of the jobs that end here

    # ---- creating jobs ----------------------------------------------------------------------------------------
    def validate_params(self, spec: PipelineSpec, params: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Refuse params for unknown nodes, unknown names, ill-typed values, and settings that cannot work with the
        configured backends (every node's, defaults included); keep only what was given."""
        for node_id, node_params in params.items():
            if node_id not in spec.nodes_by_id:
                raise ParamsError(
                    f"{shorten(node_id)}: no such node in pipeline '{spec.name}'"
                    f"{did_you_mean(node_id, spec.nodes_by_id)} (nodes: {', '.join(spec.nodes_by_id)})"
                )
            if not isinstance(node_params, dict):
                raise ParamsError(f"{shorten(node_id)}: params must be an object")
        for node in spec.nodes:
            task = load_task(node.task)
            given = params.get(node.id, {})
            validated = validate_params(node.id, task.params_model, given)
            if task.check:
                try:
                    task.check(validated)
                except ParamsError as err:
                    raise ParamsError(f"{node.id}.{err}") from None
            if node.id in params:
                params[node.id] = validated.model_dump(include=set(given))
        return params

    def create_job(self, request: JobRequest) -> str:
        """Validate everything first (spinbot.control.admission), then store the inputs and the job: bad input
        writes nothing. A request whose Idempotency-Key already names one of its owner's jobs raises KeyInUse
        (spinbot.state.idempotency), with nothing stored."""
        spec = get_pipeline(request.pipeline, self.settings.pipelines)
        params = self.validate_params(spec, dict(request.params))
        admission = Admission(self.settings, self.artifacts)
        params, local_voices = admission.resolve_voices(spec, params, request)  # the keys the tasks will read
        admission.check(spec, params, request, local_voices)
        policy = CallbackPolicy.from_settings(self.settings)
        callback = new_job_callback(request.callback_url, request.callback_secret, policy, request.owner)
        job_id = self.jobs.new_id()
        artifacts = self._store_inputs(job_id, request, params, local_voices)
        inputs = {"values": {"prompt": request.prompt, "ref_text": request.ref_text or ""}, "artifacts": artifacts}
        nodes = [(n.id, n.task, n.plane) for n in spec.nodes]
        # Born leased to this process: no other one can start it before this one does.
        try:
            self.jobs.create_job(
                job_id,
                spec.name,
                nodes,
                inputs,
                params,
                request.owner,
                request.priority,
                lease=(self.leases.owner, self.leases.seconds),
                callback=callback,
                idempotency=request.idempotency,
                max_active=request.max_active,
                check_inputs=partial(require_stored, self.artifacts, artifacts),  # none deleted since admission
            )
        except (KeyInUse, TooManyJobs, InputError):
            if request.image is not None or request.voice is not None or local_voices:  # copied from local files
                self.artifacts.delete_prefix(f"jobs/{job_id}/")
            raise
        self.leases.adopt(job_id)
        self.events.publish(Event(job_id, "job", st.PENDING))
        return job_id

    def _store_inputs(
        self, job_id: str, request: JobRequest, params: dict[str, dict[str, Any]], local_voices: dict[str, Path]
    ) -> dict[str, str]:
        """The job's input artifacts by name: its uploads as they are, its local files (the CLI's --image, --voice
        and `--set NODE.narrator_voice=FILE`, whose param becomes the stored key) copied under the job's inputs."""
        artifacts = dict(request.input_keys)
        for name, path in (("source_image", request.image), ("narrator_voice", request.voice)):
            if path is not None:
                artifacts[name] = self._store_input(job_id, name, Path(path))
        for node_id, path in local_voices.items():  # `--set NODE.narrator_voice=FILE`: stored as `--voice` is
            params[node_id]["narrator_voice"] = self._store_input(job_id, f"{node_id}.narrator_voice", path)
        for node_id, given in params.items():  # an input of the job as its own voice is: an upload in use, kept
            if given.get("narrator_voice"):  # while the job is, deleted with it where no other job names it
                artifacts[f"{node_id}.narrator_voice"] = given["narrator_voice"]
        return artifacts

    def _store_input(self, job_id: str, name: str, path: Path) -> str:
        """A local file stored as the job's input `name`, with its own suffix; its key."""
        key = artifact_key(job_id, INPUTS_NODE, f"{name}{path.suffix.lower() or '.bin'}")
        self.artifacts.upload(path, key, content_type=mimetypes.guess_type(str(path))[0])
        return key

    # ---- running ------------------------------------------------------------------------------------------------
    @contextmanager
    def _graph(self, spec: PipelineSpec) -> Iterator[Any]:
        with open_checkpointer(self.settings) as saver:
            yield compile_graph(spec, partial(self.run_node, spec=spec), saver)

    def run(self, job_id: str) -> st.JobView:
        """Run (or resume) a job to the end in this process; returns its final view. Raises Conflict while
        another process holds the job's lease; Ctrl-C marks the job interrupted (and goes on up)."""
        if self._done(self.jobs.get(job_id)):
            self.leases.release(job_id)  # born leased here, finished (cancelled) before it started
            return self.jobs.get(job_id)
        self.leases.require(job_id)
        try:
            self.leases.check(job_id)  # given up meanwhile (the API shutting down): handed back before it starts
            job = self.jobs.get(job_id)  # again, as its owner: the last one may have finished it meanwhile
            if self._done(job):
                return job
            self._reset_in_flight(job_id)
            self._drive(self.jobs.get(job_id))
        except LeaseLost as err:
            log.warning("stopped driving the job", extra={"job_id": job_id, "reason": str(err)})
        except KeyboardInterrupt:
            self._finish(job_id, st.INTERRUPTED, f"interrupted by its user; resume with: spinbot run --resume {job_id}")
            raise
        finally:
            self.leases.release(job_id)
        return self.jobs.get(job_id)

    @staticmethod
    def _done(job: st.JobView) -> bool:
        return job.status in st.FINAL_STATES and job.status != st.FAILED

    def _reset_in_flight(self, job_id: str) -> None:
        """Nodes still queued or running when this process takes the job are its last driver's (which died or let
        go): they go back to pending at 0 now, so the job's record shows the new attempt from its start instead of
        the old attempt's progress until the new one reports."""
        for node_id, attempts in self.jobs.reset_in_flight(job_id, TAKEN_OVER):
            log.info("node taken over", extra={"job_id": job_id, "node_id": node_id, "attempt": attempts})
            # named by the attempt that will run the node, so that a reader showing the stopped one (the page, the
            # CLI) replaces it at once instead of at the new attempt's first event
            event = Event(job_id, "node", st.PENDING, node_id, message=TAKEN_OVER, attempt=attempts + 1)
            self.events.publish(event)

    def _publish_job(self, job_id: str, status: str, message: str | None = None) -> None:
        """A job event with the job's overall progress (spinbot.state.progress): as recorded, and while this process
        drives the job, no lower than its node events said."""
        job = self.jobs.get(job_id)
        progress, overall = job.progress, self._progress.get(job_id)
        if overall is not None and job.status != st.SUCCEEDED and overall.value > progress:
            progress = overall.value
            self.jobs.raise_job_progress(job_id, progress)
        self.events.publish(Event(job_id, "job", status, progress=progress, message=message))

    def _drive(self, job: st.JobView) -> None:
        """The graph from its last checkpoint to the end; the job's final state is recorded here."""
        job_id = job.id
        spec = get_pipeline(job.pipeline, self.settings.pipelines)
        config = {"configurable": {"thread_id": job_id}}
        self.jobs.set_job_status(job_id, st.RUNNING)
        self._progress[job_id] = JobProgress(job)
        self._publish_job(job_id, st.RUNNING)
        try:
            with self._graph(spec) as graph:
                # durability="sync": each step's checkpoint is written before the next step starts, so a process
                # killed mid-node resumes from the node before it.
                if graph.get_state(config).next:
                    graph.invoke(None, config, durability="sync")  # resume from the last checkpoint
                elif self._unfinished_nodes(job_id):
                    # No checkpoint yet, or one that ended before the job's records did: run the graph from its
                    # start. Nodes that finished return their recorded output without running again.
                    graph.invoke({"job_id": job_id, "outputs": {}}, config, durability="sync")
            unfinished = self._unfinished_nodes(job_id)
            if unfinished:
                raise TaskFailed(f"the pipeline ended with nodes that did not finish: {', '.join(unfinished)}")
        except JobCancelled as err:
            self._finish(job_id, st.CANCELLED, str(err))
        except LeaseLost:
            raise  # the job is another process's now: record nothing
        except Exception as err:
            if self.leases.is_lost(job_id):
                raise LeaseLost(f"job {job_id}: lost its lease while it ran") from err
            self._finish(job_id, st.FAILED, str(err) or type(err).__name__)
        else:
            self._finish(job_id, st.SUCCEEDED)
        finally:
            self._progress.pop(job_id, None)

    def _unfinished_nodes(self, job_id: str) -> list[str]:
        return [n.node_id for n in self.jobs.get(job_id).nodes if n.status != st.SUCCEEDED]

    def _finish(self, job_id: str, status: str, error: str | None = None) -> None:
        self.jobs.set_job_status(job_id, status, error)
        nodes = self.jobs.get(job_id).nodes
        for node in (n for n in nodes if _stops(status, n.status)):
            self.jobs.node_status(job_id, node.node_id, status)
            # its readers (the CLI's table, the page) last saw it run: an event, or they show it running for ever
            self.events.publish(Event(job_id, "node", status, node.node_id, node.progress, attempt=node.attempts))
        if status == st.CANCELLED:  # a cancelled job is never retried: its nodes' resume checkpoints are no use
            from spinbot.control.lifecycle import discard_checkpoints

            discard_checkpoints(self, [(job_id, n.node_id) for n in nodes if n.status != st.SUCCEEDED])
        self._publish_job(job_id, status, error)
        # its webhook's event, due now: sent by this process's sender, else by an API's sweeper (interrupted: the
        # job is not over, its user resumes it)
        if status in st.FINAL_STATES and CallbackStore(self.jobs.engine).job_ended(job_id, status) and self.callbacks:
            self.callbacks.schedule(job_id)

    def reopen(self, job_id: str, max_active: int | None = None, keep_priority: bool = True) -> bool:
        """Mark a failed (or interrupted) job pending again (a retry); its finished nodes stay finished. False when
        the job was neither at that moment: of concurrent retries, exactly one reopens it. With `max_active`:
        TooManyJobs where its owner would have more jobs waiting or running (SPINBOT_MAX_ACTIVE_JOBS). Without
        `keep_priority` it runs again at the tasks' default priority."""
        if not self.jobs.reopen_failed(job_id, max_active, keep_priority):
            return False
        self._publish_job(job_id, st.PENDING)
        return True

    def cancel(self, job_id: str) -> None:
        """Ask the job to stop: the process running it stops at the task's next progress report. A job that nothing
        runs to notice the request (pending, interrupted, or running for a process that died: its lease ran out)
        is recorded cancelled here."""
        self.jobs.request_cancel(job_id)
        job = self.jobs.get(job_id)
        reasons = {st.PENDING: "cancelled before it started", st.INTERRUPTED: "cancelled while interrupted"}
        if job.status == st.RUNNING and self._abandoned(job_id):
            reasons[st.RUNNING] = "cancelled after the process running it had stopped renewing its lease"
        if job.status in reasons:
            self._finish(job_id, st.CANCELLED, reasons[job.status])
            self.leases.release(job_id)

    def _abandoned(self, job_id: str) -> bool:
        """Take the lease of a running job whose owner stopped renewing it; never one that is renewed (a live
        process, this one's own job threads included)."""
        lease = self.leases.store.view(job_id)
        return not (lease is not None and lease.live) and self.leases.acquire(job_id)

    def delete_job(self, job_id: str) -> None:
        """Delete a finished job with its artifacts and the uploads no other job uses (spinbot.control.lifecycle);
        JobNotFound for an unknown job, Conflict while it is pending or running."""
        from spinbot.control.lifecycle import delete_job

        delete_job(self, job_id)

    def run_node(
        self, job_id: str, node_id: str, upstream: dict[str, dict[str, Any]], spec: PipelineSpec | None = None
    ) -> dict[str, Any]:
        """One pipeline node: never re-run a finished node; record states, progress, output and artifacts. `spec`: the
        pipeline the job's graph runs (read from the pipelines file when not given)."""
        job = self.jobs.get(job_id)
        node = job.node(node_id)
        if node.status == st.SUCCEEDED and node.output is not None:
            return node.output
        if job.cancel_requested:
            raise JobCancelled(f"job cancelled before node '{node_id}'")
        self.leases.confirm(job_id)  # only the job's owner starts a node: never two processes the same node
        request = self._request(job, node, upstream, spec or get_pipeline(job.pipeline, self.settings.pipelines))
        inline = node.plane == "node"
        attempt = self.jobs.node_started(job_id, node_id, st.RUNNING if inline else st.QUEUED)
        report = self._reporter(job, node_id, attempt)
        report.state(st.RUNNING if inline else st.QUEUED)
        started = time.monotonic()
        try:
            if inline:
                output = execute_task(request, self.artifacts, report, self._cancel_check(job_id))
            else:
                output = self.dispatcher.run(request, report, self._cancel_check(job_id))
        except LeaseLost:
            raise
        except Superseded as err:  # its task saw another process's run of the node: that process owns the job now
            raise LeaseLost(f"job {job_id}: node '{node_id}' was taken over by another run ({err})") from err
        except Cancelled as err:
            report.settle()
            self.jobs.node_status(job_id, node_id, st.CANCELLED, error=str(err))
            report.state(st.CANCELLED)
            raise JobCancelled(str(err)) from None
        except Exception as err:
            if self.leases.is_lost(job_id):
                raise LeaseLost(f"job {job_id}: lost its lease during node '{node_id}'") from err
            message = f"node '{node_id}' ({node.task}) failed: {err}"
            # Expected failures (bad input, missing backend) are one line; anything else keeps its traceback.
            log.warning(
                "node failed",
                extra={"job_id": job_id, "node_id": node_id, "error": str(err)},
                exc_info=not isinstance(err, SpinBotError),
            )
            report.settle()
            self.jobs.node_status(job_id, node_id, st.FAILED, error=str(err))
            report.state(st.FAILED, str(err))
            raise TaskFailed(message) from err
        except BaseException:  # Ctrl-C or an exit: the row keeps the progress reached, which `interrupted` then shows
            report.settle()
            raise
        report.settle()  # its last report's message on the row (a burst's trailing write would be dropped)
        result = self._record(job_id, node_id, output, time.monotonic() - started)
        report.state(st.SUCCEEDED)
        return result

    def _cancel_check(self, job_id: str) -> Callable[[], bool]:
        """Asked by the running task at each progress report: a lost lease stops it (LeaseLost) before it could
        write anything more; a cancel request ends it as cancelled."""

        def is_cancelled() -> bool:
            self.leases.check(job_id)
            return self.jobs.is_cancel_requested(job_id)

        return is_cancelled

    def _request(
        self, job: st.JobView, node: st.NodeView, upstream: dict[str, dict[str, Any]], spec: PipelineSpec
    ) -> TaskRequest:
        values = dict(job.inputs.get("values", {}))
        artifacts = dict(job.inputs.get("artifacts", {}))
        for output in upstream.values():  # ancestors in topological order: nearer nodes win
            values.update(output.get("values", {}))
            artifacts.update(output.get("artifacts", {}))
        return TaskRequest(
            job_id=job.id,
            node_id=node.node_id,
            task=node.task,
            params=job.params.get(node.node_id, {}),
            values=values,
            artifacts=artifacts,
            priority=job.priority,
            live_output=self.settings.live_output,
            derived_videos=self._derived_videos(spec, job, node.node_id),
        )

    def _derived_videos(self, spec: PipelineSpec, job: st.JobView, node_id: str) -> list[Any]:
        """The videos the upscales after this node make from its video (budgets.derived_videos); none where the job's
        stored params no longer validate (the task then says so as its own error, and each upscale still checks its
        own video before it starts)."""
        try:
            return derived_videos(spec, job.params, node_id, self.settings)
        except ValidationError as err:
            log.warning("no early video budget check", extra={"job_id": job.id, "node_id": node_id, "why": str(err)})
            return []

    def _record(self, job_id: str, node_id: str, output: NodeOutput, seconds: float) -> dict[str, Any]:
        output.meta.setdefault("seconds", round(seconds, 3))
        records = []
        for name, key in output.artifacts.items():
            if key.startswith(f"jobs/{job_id}/{node_id}/"):
                records.append(
                    {
                        "name": name,
                        "key": key,
                        "size": self.artifacts.size(key),
                        "content_type": mimetypes.guess_type(key)[0],
                    }
                )
        # Round-trip through JSON: the database, the checkpointer and the queue all need plain types.
        result = json.loads(json.dumps(output.model_dump(), default=_plain))
        self.jobs.node_succeeded(job_id, node_id, result, records)
        return result

    def _reporter(self, job: st.JobView, node_id: str, attempt: int) -> NodeProgress:
        """The node attempt's one publisher of progress (spinbot.control.progress)."""
        overall = self._progress.get(job.id) or JobProgress(job)
        return NodeProgress(
            self.events,
            self.jobs,
            overall,
            (job.id, node_id),
            attempt,
            is_current=lambda: not self.leases.is_lost(job.id),
        )

    # ---- reading ------------------------------------------------------------------------------------------------
    def final_artifact(self, job: st.JobView) -> str | None:
        """The key of the last node's video (or any last artifact)."""
        spec = get_pipeline(job.pipeline, self.settings.pipelines)
        for node_id in reversed(spec.topological_order()):
            out = job.node(node_id).output or {}
            arts = out.get("artifacts", {})
            if arts:
                return arts.get("video") or next(iter(arts.values()))
        return None
