"""A python-plane node run in the submitting process (no Redis: `spinbot run`, `spinbot serve` alone) is running from
the moment its task starts, as a worker's node is from its "started" report: its set-up (a model load, the voice's
analysis, the first batch's decode) shows as running, not `queued`, and is the first interval of its time left, so the
estimate comes at the second report as on a worker, not at the third (the demo's upscale said "Estimating..." for
half its run)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from spinbot.control import dispatch as dispatch_module
from spinbot.control import progress as progress_module
from spinbot.control.dispatch import InProcessDispatcher
from spinbot.control.runner import Runner
from spinbot.tasks.base import NodeOutput
from tests.unit.test_progress import ScriptedDispatcher, node_events, recorded, reports, request_  # noqa: F401 - a fixture


def test_an_in_process_node_runs_from_its_start_and_times_its_set_up(spinbot_env, request_, monkeypatch):  # noqa: F811
    now = [0.0]
    monkeypatch.setattr(progress_module, "time", SimpleNamespace(monotonic=lambda: now[0]))
    seen: dict[str, object] = {}

    def task(request, store, report, is_cancelled):
        if request.node_id == "upscale_video":
            seen["status"] = node_events(events, "upscale_video")[-1].status  # what readers see as it sets up
            for t, fraction in [(10, 0.25), (20, 0.5)]:  # 10 s of set-up and a batch, then a batch in 10 s
                now[0] = t
                report(fraction, f"upscaled {fraction}")
        return NodeOutput(values={"audio_duration": 1.0})

    monkeypatch.setattr(dispatch_module, "execute_task", task)
    runner = Runner()
    runner.dispatcher = InProcessDispatcher(runner.artifacts)
    events = recorded(runner)
    job_id = runner.create_job(request_)
    assert runner.run(job_id).status == "succeeded"
    assert seen["status"] == "running"  # in this process it runs at once: never `queued` while it sets up
    running = [e for e in node_events(events, "upscale_video", "running") if e.progress > 0]
    assert [e.seconds_left for e in running] == [None, pytest.approx(20.0)]  # 0.25 in 10 s: 0.5 left takes 20 s


def test_a_succeeded_nodes_row_keeps_its_last_report_not_the_first_of_a_burst(spinbot_env, request_):  # noqa: F811
    # The speech's reports come within the 0.25 s between row writes; the trailing write was cancelled when the node
    # succeeded, so its row (GET /v1/jobs/{id}, the page, `jobs show --json`) said "speaking chunk 1/3" for good.
    runner = Runner(dispatcher=ScriptedDispatcher({"f5_to_tts": reports(0.3, 0.6, 1.0)}))
    job_id = runner.create_job(request_)
    assert runner.run(job_id).status == "succeeded"
    node = runner.jobs.get(job_id).node("f5_to_tts")
    assert (node.status, node.progress, node.message) == ("succeeded", 1.0, "at 1.0")
