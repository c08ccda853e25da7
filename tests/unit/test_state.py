from importlib import resources

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, inspect, text

from spinbot.control.requests import JobRequest
from spinbot.control.runner import Runner
from spinbot.pipelines.spec import get_pipeline
from spinbot.samples import portrait_path, voice_path
from spinbot.state.db import get_engine


def alembic_config(conn) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("spinbot.state") / "migrations"))
    cfg.attributes["connection"] = conn
    return cfg


def test_migrations_upgrade_an_existing_database_keeping_its_rows(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0001")
        conn.execute(
            text(
                "INSERT INTO jobs (id, pipeline, status, inputs, params, cancel_requested, created_at) "
                "VALUES ('a' , 'p', 'succeeded', '{}', '{}', 0, '2026-01-01')"
            )
        )
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "head")
    columns = {c["name"] for c in inspect(engine).get_columns("jobs")}
    assert {"priority", "lease_owner", "lease_expires_at", "heartbeat_at", "progress"} <= columns
    assert {"callback", "callback_event", "callback_due_at"} <= columns  # 0005: the webhook
    assert {"idempotency_key", "idempotency_digest"} <= columns  # 0006: the Idempotency-Key
    assert "estimated_end_at" in {c["name"] for c in inspect(engine).get_columns("node_runs")}  # 0007
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id, priority FROM jobs")).all() == [("a", None)]
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "base")
    assert inspect(engine).get_table_names() == ["alembic_version"]


def test_job_priority_travels_to_every_python_task_request(spinbot_env, tmp_path):
    runner = Runner()
    job_id = runner.create_job(
        JobRequest(prompt="hello", image=portrait_path(tmp_path), voice=voice_path(), ref_text="x", priority=3)
    )
    job = runner.jobs.get(job_id)
    assert job.priority == 3
    request = runner._request(
        job, job.node("f5_to_tts"), {"script": {"values": {"text": "Hi."}}}, get_pipeline(job.pipeline)
    )
    assert request.priority == 3 and request.values["text"] == "Hi."
    assert (request.job_id, request.node_id) == (job_id, "f5_to_tts")


def test_engine_migrates_a_new_database_once(spinbot_env):
    from spinbot.settings import get_settings

    engine = get_engine(get_settings().resolved_database_url)
    tables = set(inspect(engine).get_table_names())
    assert {"jobs", "node_runs", "artifacts", "alembic_version"} <= tables


def test_the_in_process_event_history_keeps_the_jobs_that_published_last():
    """A long-lived API process kept every job's events forever, deleted jobs included."""
    from spinbot.state.events import Event, EventBus

    bus = EventBus()
    for n in range(bus.jobs_limit + 50):
        bus.publish(Event(f"job-{n}", "job", "running"))
    bus.publish(Event("job-0", "job", "succeeded"))  # an old job that publishes again stays
    assert len(bus._history) == bus.jobs_limit
    assert [e.status for e in bus.subscribe_after_history("job-0", lambda e: None)[0]] == ["succeeded"]
    assert bus.subscribe_after_history("job-1", lambda e: None)[0] == []
    assert len(bus.subscribe_after_history(f"job-{bus.jobs_limit + 49}", lambda e: None)[0]) == 1
