"""GET /v1/jobs/{id}/events for a client waiting on a long render: the job as it is now first, then only what happens
after (a client that connects late or reconnects does not watch the job go back through its past), and a ping while
nothing happens, so a proxy does not cut the stream."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

from spinbot.api.auth import owner_of
from spinbot.api.routes import jobs as jobs_route
from spinbot.control.requests import JobRequest
from spinbot.control.runner import Runner
from spinbot.state.event_feed import LocalEventFeed
from spinbot.state.events import Event
from tests.support.api_client import KEY
from tests.unit.test_progress import ScriptedDispatcher, failing_after, reports


async def collect_stream(stream, on_snapshot, timeout: float = 60.0) -> list[tuple[str, dict]]:
    """Every (event name, data) of the stream until it ends; on_snapshot() runs once the first one came."""
    got: list[tuple[str, dict]] = []
    async with asyncio.timeout(timeout):
        async for message in stream:
            got.append((message["event"], json.loads(message["data"])))
            if len(got) == 1:
                asyncio.get_running_loop().run_in_executor(None, on_snapshot)
    return got


def test_a_late_client_gets_the_job_as_it_is_then_only_what_follows(spinbot_env, tmp_path):
    from spinbot.samples import portrait_path, voice_path

    request = JobRequest(
        prompt="p", image=portrait_path(tmp_path), voice=voice_path(), params={"script": {"text": "Ever tried."}}
    )
    runner = Runner(dispatcher=ScriptedDispatcher({"infinite_talk": failing_after(0.8)}))
    job_id = runner.create_job(request)
    assert runner.run(job_id).status == "failed"  # its past: infinite_talk reached 0.8, then the job failed
    assert runner.reopen(job_id)  # a retry, which this client opens the job's stream for
    runner.dispatcher = ScriptedDispatcher({"infinite_talk": reports(0.3, 0.6)})
    services = SimpleNamespace(feed=LocalEventFeed(runner.events), runner=runner)

    got = asyncio.run(collect_stream(jobs_route._event_stream(services, job_id), lambda: runner.run(job_id)))
    name, snapshot = got[0]
    assert (
        name == "snapshot" and snapshot["status"] == "pending" and snapshot["progress"] == 0.69
    )  # (1 + 4 + 80 * 0.8 + 0) / 100, held
    after = [data for _, data in got[1:]]
    # Before the fix the stream replayed the job's history after the snapshot: the old run's `failed` ended it.
    assert [e["status"] for e in after if e["kind"] == "job"] == ["running", "succeeded"]
    talk = [(e["attempt"], e["progress"]) for e in after if e["node_id"] == "infinite_talk"]
    assert talk == [(2, 0.0), (2, 0.3), (2, 0.6), (2, 1.0)]  # the retry's attempt only, never the first's 0.8
    overall = [e["progress"] if e["kind"] == "job" else e["job_progress"] for e in after]
    assert overall == sorted(overall) and overall[0] == 0.69 and overall[-1] == 1.0


def test_an_event_older_than_the_snapshot_is_not_streamed_after_it(spinbot_env):
    runner = Runner(dispatcher=ScriptedDispatcher())
    jobs = runner.jobs
    job_id = jobs.new_id()
    jobs.create_job(job_id, "f5tts_infinitetalk", [("talk", "infinite_talk", "python")], {}, {})
    attempt = jobs.node_started(job_id, "talk", "running")
    jobs.node_progress(job_id, "talk", 0.42, "window 3/8", attempt=attempt)

    def node(progress: float) -> Event:
        return Event(job_id, "node", "running", "talk", progress=progress, attempt=attempt)

    class RacingJobs:
        """The snapshot's read: meanwhile an event that the database has already overtaken reaches the stream."""

        def get(self, job_id: str):
            runner.events.publish(node(0.40))
            return jobs.get(job_id)

    def then() -> None:
        runner.events.publish(node(0.5))
        runner.events.publish(Event(job_id, "job", "succeeded", progress=1.0))

    services = SimpleNamespace(feed=LocalEventFeed(runner.events), runner=SimpleNamespace(jobs=RacingJobs()))
    got = asyncio.run(collect_stream(jobs_route._event_stream(services, job_id), then))
    assert got[0][1]["nodes"][0]["progress"] == 0.42
    assert [data["progress"] for name, data in got[1:] if name == "node"] == [0.5]  # not 0.42, 0.40, 0.5


def test_events_older_than_the_snapshot_are_left_out():
    job = SimpleNamespace(nodes=[SimpleNamespace(node_id="talk", attempts=2, progress=0.42)])
    shown = jobs_route.ShownProgress(job)  # type: ignore[arg-type]

    def node(status: str, attempt: int, progress: float) -> Event:
        return Event("j", "node", status, "talk", progress=progress, attempt=attempt)

    assert not shown.admits(node("running", 1, 0.9))  # the attempt the snapshot's replaced
    assert not shown.admits(node("running", 2, 0.40))  # published before the database had 0.42
    assert shown.admits(node("running", 2, 0.42))
    assert shown.admits(node("running", 2, 0.5))
    assert shown.admits(node("failed", 2, 0.5))
    assert shown.admits(node("queued", 3, 0.0))  # the next attempt starts from 0
    assert shown.admits(Event("j", "node", "running", "talk", progress=0.1))  # from a publisher without attempts


def stream_scope(path: str) -> dict:
    """The ASGI scope of a keyed GET of `path` (an event stream driven without a server)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"t"), (b"authorization", f"Bearer {KEY}".encode())],
        "client": ("127.0.0.1", 1),
        "server": ("t", 80),
    }


def running_job(jobs) -> str:
    """A job of KEY marked running that nothing runs: as far as readers see, a render between two reports."""
    job_id = jobs.new_id()
    jobs.create_job(job_id, "f5tts_infinitetalk", [("f5_to_tts", "f5_to_tts", "python")], {}, {}, owner_of(KEY))
    jobs.set_job_status(job_id, "running")
    return job_id


async def read_stream(app, path: str, seconds: float) -> str:
    """The body of a GET held open for `seconds`, then disconnected (as a browser tab closing)."""
    body: list[bytes] = []
    hang_up = asyncio.Event()

    async def receive():
        if not body and not hang_up.is_set() and not receive.asked:  # type: ignore[attr-defined]
            receive.asked = True  # type: ignore[attr-defined]
            return {"type": "http.request", "body": b"", "more_body": False}
        await hang_up.wait()
        return {"type": "http.disconnect"}

    receive.asked = False  # type: ignore[attr-defined]

    async def send(message):
        if message["type"] == "http.response.body":
            body.append(message.get("body", b""))

    scope = stream_scope(path)
    asyncio.get_running_loop().call_later(seconds, hang_up.set)
    async with asyncio.timeout(seconds + 10):
        await app(scope, receive, send)
    return b"".join(body).decode()


def test_a_silent_stream_is_pinged_so_proxies_keep_it_open(keyed_client, monkeypatch):
    monkeypatch.setattr(jobs_route, "PING_SECONDS", 0.2)
    job_id = running_job(keyed_client.app.state.services.runner.jobs)
    body = asyncio.run(read_stream(keyed_client.app, f"/v1/jobs/{job_id}/events", seconds=1.5))
    assert body.startswith("event: snapshot")
    assert body.count(": ping") >= 3, body
    assert jobs_route.PING_SECONDS <= 30  # well inside the usual proxy idle timeouts (nginx: 60 s)


def test_a_stream_whose_client_stopped_reading_ends_after_the_job_does(keyed_client, monkeypatch):
    """A client still connected that reads nothing: once its buffers are full every write waits (here: every write
    after the snapshot never returns). When the job ends the stream's last writes are abandoned after
    SPINBOT_API_SEND_TIMEOUT, and the stream ends, its generator closed and its key's slot given back. Before, the last
    write waited for ever."""
    services = keyed_client.app.state.services
    monkeypatch.setattr(services, "settings", services.settings.model_copy(update={"api_send_timeout": 0.3}))
    job_id = running_job(services.runner.jobs)
    closed = []
    stream = jobs_route._event_stream

    async def watched(*args):
        try:
            async for item in stream(*args):
                yield item
        finally:
            closed.append(True)

    monkeypatch.setattr(jobs_route, "_event_stream", watched)
    path = f"/v1/jobs/{job_id}/events"
    scope = stream_scope(path)
    written: list[bytes] = []

    async def main() -> None:
        never = asyncio.Event()
        requested = False

        async def receive():  # the request, then nothing: the client never hangs up
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await never.wait()

        async def send(message):
            if message["type"] == "http.response.body":
                if written:  # the snapshot went out; the client reads nothing more
                    await never.wait()
                written.append(message["body"])

        def job_ends() -> None:
            services.runner.jobs.set_job_status(job_id, "succeeded")
            services.runner.events.publish(Event(job_id, "job", "succeeded"))

        asyncio.get_running_loop().call_later(0.5, job_ends)
        async with asyncio.timeout(10):
            await keyed_client.app(scope, receive, send)

    asyncio.run(main())
    assert written[0].startswith(b"event: snapshot") and len(written) == 1
    assert closed == [True] and services.streams.open == {}
