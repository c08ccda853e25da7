"""Settings that name a service the CLI cannot use (database, Redis, the data folder) are one `error:` line naming
the setting, exit 2, before anything is stored; `spinbot serve` checks its port before the app starts."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import pytest

from spinbot.samples import portrait_path, voice_path
from tests.support.cli import made_database, run_cli


def stored_jobs(data_dir: Path) -> int:
    """Job rows and job files in the embedded data folder."""
    files = [p for p in (data_dir / "jobs").rglob("*") if p.is_file()] if (data_dir / "jobs").exists() else []
    if not (data_dir / "spinbot.db").exists():
        return len(files)
    with sqlite3.connect(data_dir / "spinbot.db") as db:
        return len(files) + db.execute("SELECT count(*) FROM jobs").fetchone()[0]


BAD_SETTINGS = [
    ("database_url", "foo://bar", "SPINBOT_DATABASE_URL: cannot use the database (Can't load plugin: "),
    ("database_url", "postgresql://u:secret@127.0.0.1:1/x", "SPINBOT_DATABASE_URL: cannot use the database ("),
    ("redis_url", "redis://127.0.0.1:1/0", "SPINBOT_REDIS_URL: cannot reach Redis (Error 111 connecting"),
    ("redis_url", "notaurl", "SPINBOT_REDIS_URL: not a Redis URL (Redis URL must specify one of"),
    ("data_dir", "/proc/nope", "SPINBOT_DATA_DIR=/proc/nope: cannot use it as the data folder (No such file"),
    ("data_dir", "A_FILE", "SPINBOT_DATA_DIR=A_FILE: not a folder"),
]


@pytest.mark.parametrize("name, value, expected", BAD_SETTINGS, ids=[f"{n}={v}" for n, v, _ in BAD_SETTINGS])
def test_run_with_a_service_it_cannot_use_is_one_line_and_stores_no_job(
    spinbot_env, use_settings, tmp_path, name, value, expected
):
    """They were tracebacks of 70 to 500 lines, exit 1; an unreachable Redis also left a `pending` job behind that a
    later `spinbot serve` rendered."""
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    value, expected = value.replace("A_FILE", str(a_file)), expected.replace("A_FILE", str(a_file))
    use_settings(**{name: value})
    args = ["run", "--image", str(portrait_path(tmp_path)), "--voice", str(voice_path()), "--set", "script.text=Hi."]
    code, lines = run_cli(*args)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: {expected}"), lines
    assert "secret" not in lines[0]
    assert stored_jobs(spinbot_env) == 0


@pytest.fixture
def no_server(monkeypatch):
    """Records what `serve` would start, without starting it."""
    import spinbot.api.app
    import spinbot.api.limits

    started: list[tuple] = []
    monkeypatch.setattr(spinbot.api.app, "create_app", lambda settings: "the app")
    monkeypatch.setattr(spinbot.api.limits, "run_server", lambda app, host, port, *limits: started.append((app, port)))
    return started


JOB_COMMANDS = ("gc", "cancel")  # on jobs made before: they read the database that a job made
OTHER_COMMANDS = [["demo"], ["gc", "--older-than", "1"], ["cancel", "0" * 32], ["worker"], ["serve"]]
CASES = [
    (command, BAD_SETTINGS[i])
    for command in OTHER_COMMANDS
    for i in (0, 3, 4)
    if not (command == ["worker"] and BAD_SETTINGS[i][0] == "database_url")  # a worker does not use the database
    # a data folder with no database is no data to gc or cancel (tests/unit/test_cli_no_data.py)
    and not (command[0] in JOB_COMMANDS and BAD_SETTINGS[i][0] == "data_dir")
]


@pytest.mark.parametrize("command, setting", CASES, ids=[f"{c[0]}-{s[0]}" for c, s in CASES])
def test_every_command_that_opens_the_services_says_which_setting_is_wrong(
    spinbot_env, use_settings, no_server, command, setting
):
    name, value, expected = setting
    if command[0] in JOB_COMMANDS:
        made_database()
    use_settings(**{name: value})
    code, lines = run_cli(*command)
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {expected}"), lines
    assert no_server == []


@pytest.mark.parametrize("port", ["99999", "65536", "-1", "0"])
def test_serve_refuses_a_port_out_of_range(spinbot_env, no_server, port):
    """99999 was announced as such and served on 34463 (99999 mod 65536); -1 was uvicorn's JSON log and exit 3."""
    code, lines = run_cli("serve", "--port", port)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: invalid value for '--port'"), lines
    assert no_server == []


def test_serve_refuses_a_port_in_use_before_the_app_starts(spinbot_env, no_server):
    """It failed after the app's startup, which takes over unfinished jobs."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, lines = run_cli("serve", "--port", str(port))
    assert (code, lines) == (2, [f"error: cannot listen on 127.0.0.1:{port} (Address already in use)"])
    assert no_server == []
    assert run_cli("serve", "--port", str(port))[0] == 0 and no_server == [("the app", port)]


@pytest.mark.parametrize(
    "content, expected",
    [
        (None, "cannot read pipelines file (No such file or directory)"),
        ("root:x:0:0:root:/root:/bin/bash\n", "not valid JSON (line 1: Expecting value)"),
        ('{"p": {"nodes": [], "edges": []}}', "pipeline 'p': has no nodes"),
    ],
    ids=["missing", "not-json", "invalid"],
)
def test_serve_refuses_a_pipelines_file_it_cannot_use(
    spinbot_env, use_settings, no_server, tmp_path, content, expected
):
    """It started, answered /readyz ready, and then failed every job, /v1/pipelines and each takeover of an unfinished
    job with the file's error (a 400 naming a server path)."""
    path = tmp_path / "pipelines.json"
    if content is not None:
        path.write_text(content)
    use_settings(pipelines=path)
    code, lines = run_cli("serve")
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: SPINBOT_PIPELINES: ") and expected in lines[0], lines
    assert no_server == []
    path.write_bytes((Path(__file__).parents[2] / "spinbot/pipelines/pipelines.json").read_bytes())
    assert run_cli("serve") == (0, []) and no_server == [("the app", 8000)]
