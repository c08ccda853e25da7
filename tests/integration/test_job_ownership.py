"""One owner per job with real services: PostgreSQL's leases under concurrent takers, and a full stack where two API
processes and a `spinbot run` share one database (PostgreSQL), one queue (Redis) and one bucket (a moto S3 server)
without any node running twice; a killed API's job is taken over by the other one once its lease expired.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from spinbot.samples import BECKETT_TRANSCRIPT, portrait_path, voice_path
from spinbot.state.db import get_engine
from spinbot.state.lease import LeaseStore
from spinbot.state.store import JobStore
from tests.integration.test_services_e2e import FINAL, KEY_A, Stack, node
from tests.support import services

pytestmark = pytest.mark.integration

LEASE_SECONDS = 4
SCRIPT = "Ever tried. Ever failed. No matter. Try again."


@pytest.fixture
def postgres_url():
    with services.scratch_postgres("spinbot_lease") as url:
        yield url


def test_of_many_processes_taking_one_lease_at_once_exactly_one_wins_on_postgres(postgres_url):
    jobs = JobStore(get_engine(postgres_url))
    job_id = jobs.new_id()
    jobs.create_job(job_id, "p", [("n", "t", "node")], {}, {})
    leases = LeaseStore(jobs.engine)
    barrier = threading.Barrier(16)

    def take(owner: int) -> bool:
        barrier.wait()
        return leases.acquire(job_id, f"owner-{owner}", 30)

    with ThreadPoolExecutor(16) as pool:
        won = list(pool.map(take, range(16)))
    assert won.count(True) == 1
    lease = leases.view(job_id)
    assert lease.live and lease.owner == f"owner-{won.index(True)}" and lease.now.tzinfo is not None
    assert leases.claimable(["pending"]) == []


class SharedStack(Stack):
    """The e2e stack with any number of API processes on ports of their own."""

    def __init__(self, tmp, s3_endpoint):
        super().__init__(tmp, s3_endpoint)
        self.env["SPINBOT_JOB_LEASE_SECONDS"] = str(LEASE_SECONDS)
        self.apis: dict[str, tuple[subprocess.Popen, int]] = {}

    def start_named_api(self, name: str) -> None:
        port = services.free_port()
        self.apis[name] = (self.serve(port, f"api-{name}.log"), port)

    def use(self, name: str) -> None:
        """Send the Stack's calls (submit, job, wait_job) to this API."""
        self.api, self.api_port = self.apis[name]

    def stop_all(self) -> None:
        for proc, _ in self.apis.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        super().stop_all()

    def cli_run(self, log: str) -> subprocess.Popen:
        args = [
            "run",
            "--prompt",
            "failing better",
            "--image",
            str(portrait_path(self.tmp)),
            "--voice",
            str(voice_path()),
            "--ref-text",
            BECKETT_TRANSCRIPT,
            "--set",
            f"script.text={SCRIPT}",
            "--out",
            str(self.tmp / "cli.mp4"),
        ]
        out = open(self.tmp / log, "ab")  # noqa: SIM115 - the child process writes it for its whole life
        return subprocess.Popen([sys.executable, "-m", "spinbot", *args], env=self.env, stdout=out, stderr=out)


@pytest.fixture
def shared(tmp_path_factory):
    with SharedStack.running(tmp_path_factory.mktemp("shared"), workers=2, api=False) as s:  # the tests start theirs
        yield s


def finals(stack: Stack, prefix: str) -> list[str]:
    """The objects under prefix but the live output (HLS segments, rewritten as a node runs)."""
    return [key for key in stack.bucket_keys(prefix) if "/live/" not in key]


def all_jobs(stack: Stack):
    return JobStore(get_engine(stack.database_url)).list(limit=100)[0]


def test_two_apis_and_a_cli_run_share_one_database_and_no_node_runs_twice(shared):
    shared.start_named_api("a")
    shared.use("a")
    from_a = [shared.submit(SCRIPT) for _ in range(2)]
    cli = shared.cli_run("cli.log")
    # b starts while a's jobs and the CLI's job run: its resume-at-start and its sweeps must take none of them.
    shared.start_named_api("b")
    unfinished_when_b_started = [j.id for j in all_jobs(shared) if j.status not in FINAL]
    assert unfinished_when_b_started, "b started too late to be tempted: the test proves nothing"
    shared.use("b")
    from_b = shared.submit(SCRIPT)
    assert cli.wait(300) == 0, (shared.tmp / "cli.log").read_text()[-3000:]
    # A third API comes and goes mid-way (a restart): it takes nothing either.
    shared.start_named_api("c")
    time.sleep(LEASE_SECONDS)
    shared.apis["c"][0].terminate()
    for job_id in [*from_a, from_b]:
        job = shared.wait_job(job_id, lambda j: j["status"] in FINAL, timeout=300)
        assert job["status"] == "succeeded", job
    jobs = all_jobs(shared)
    assert len(jobs) == 4 and all(j.status == "succeeded" for j in jobs)
    for job in jobs:
        assert [n.attempts for n in job.nodes] == [1, 1, 1, 1], (job.id, [(n.node_id, n.attempts) for n in job.nodes])
        assert finals(shared, f"jobs/{job.id}/upscale_video/") == [f"jobs/{job.id}/upscale_video/upscaled.mp4"]
        assert job.inputs and LeaseStore(get_engine(shared.database_url)).view(job.id).owner is None


def test_a_killed_apis_job_is_taken_over_by_the_other_one_once_its_lease_expired(shared):
    shared.start_named_api("a")
    shared.start_named_api("b")
    shared.use("b")
    job_id = shared.submit(" ".join([SCRIPT] * 4))
    shared.wait_job(job_id, lambda j: node(j, "infinite_talk")["status"] in ("queued", "running"))
    leases = LeaseStore(get_engine(shared.database_url))
    owner = leases.view(job_id).owner
    assert owner and owner.split(":")[1] == str(shared.apis["b"][0].pid)
    shared.kill(shared.apis["b"][0])
    killed_at = time.monotonic()
    shared.use("a")
    taken = services.wait_until(lambda: leases.view(job_id).owner not in (None, owner), 3 * LEASE_SECONDS, 0.05)
    assert taken and time.monotonic() - killed_at >= LEASE_SECONDS * 0.5  # not before b's lease ran out
    assert leases.view(job_id).owner.split(":")[1] == str(shared.apis["a"][0].pid)
    job = shared.wait_job(job_id, lambda j: j["status"] in FINAL, timeout=300)
    assert job["status"] == "succeeded", job
    assert node(job, "script")["attempts"] == 1 and node(job, "f5_to_tts")["attempts"] == 1
    # The worker ran the node b was waiting for once; a waited for that same run: one artifact set.
    assert finals(shared, f"jobs/{job_id}/infinite_talk/") == [f"jobs/{job_id}/infinite_talk/talk.mp4"]
    assert len(finals(shared, f"jobs/{job_id}/")) == 3


def test_deleting_a_finished_job_removes_its_objects_from_s3_and_its_rows_from_postgres(shared):
    shared.start_named_api("a")
    shared.use("a")
    earlier_uploads = set(shared.bucket_keys("uploads/"))  # the bucket outlives each test
    job_id = shared.submit(SCRIPT)
    shared.wait_job(job_id, lambda j: j["status"] in FINAL, timeout=300)
    uploads = set(shared.bucket_keys("uploads/")) - earlier_uploads
    assert finals(shared, f"jobs/{job_id}/") and len(uploads) == 2
    gc = subprocess.run(
        [sys.executable, "-m", "spinbot", "gc", "--job", job_id],
        env=shared.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert gc.returncode == 0, gc.stderr
    assert gc.stdout.split() == [job_id]
    assert shared.bucket_keys(f"jobs/{job_id}/") == [] and set(shared.bucket_keys("uploads/")) == earlier_uploads
    assert shared.call("GET", f"/v1/jobs/{job_id}", KEY_A).status_code == 404
    assert all(j.id != job_id for j in all_jobs(shared))
