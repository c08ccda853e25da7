"""The services the integration tests need, on loopback: an S3 server (moto), Redis and PostgreSQL.

(Past 400 lines: the test fixtures and `scripts/test-services` start and stop the services through the same
functions, so that what one started the other stops exactly; one module per service would split that record.)

Redis (127.0.0.1:6379) and PostgreSQL (127.0.0.1:5432, trust auth, database `test`) are the machine's own: they are
checked, started only if stopped, and stopped again only if this module started them (checked by process id, so a
server someone else restarted meanwhile is left alone). The S3 server is always ours: moto on a free port, either in
a thread of the test process (`moto_s3()`) or as a background process for `scripts/test-services start`, whose
record of what it started lives in a small state file so that `stop` undoes exactly that.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

LOOPBACK = "127.0.0.1"
REDIS_PORT = 6379
PG_PORT = 5432
PG_DATABASE = "test"
PG_USER = "postgres"
TEST_BUCKET = "spinbot-test"
# moto accepts any credentials; fixed fake ones keep boto3 from looking for real ones (profiles, instance metadata).
TEST_AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
REPO = Path(__file__).resolve().parents[2]


class ServiceError(RuntimeError):
    """A service that could not be reached or started; the message says which and why."""


# --- small network helpers ---------------------------------------------------------------------------------------


def free_port() -> int:
    """A free loopback port. Another process could take it before we bind it again; for tests that risk is fine."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout):
            return True
    except OSError:
        return False


def wait_until(check: Callable[[], bool], timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(step)
    return check()


def set_test_aws_env(environ: dict | None = None) -> None:
    """Fake AWS credentials for moto; a real profile or session token in the environment must not leak into tests."""
    environ = os.environ if environ is None else environ
    environ.update(TEST_AWS_ENV)
    environ.pop("AWS_SESSION_TOKEN", None)
    environ.pop("AWS_PROFILE", None)


# --- S3 (moto) ---------------------------------------------------------------------------------------------------


@contextmanager
def moto_s3() -> Iterator[str]:
    """A moto S3 server in a thread of this process on a free loopback port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=LOOPBACK, port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_up(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


def start_moto_process(log: Path) -> tuple[int, str]:
    """A moto server process that outlives this one (for the script); returns (pid, endpoint URL)."""
    port = free_port()
    endpoint = f"http://{LOOPBACK}:{port}"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # not killed with the shell that ran `scripts/test-services start`
        )
    if not wait_until(lambda: proc.poll() is not None or s3_up(endpoint), 30) or proc.poll() is not None:
        stop_process(proc.pid, "moto.server")
        raise ServiceError(f"the moto S3 server did not start on {endpoint}; see {log}")
    return proc.pid, endpoint


def create_bucket(endpoint: str, bucket: str = TEST_BUCKET) -> None:
    from spinbot.storage.s3 import S3Store

    set_test_aws_env()
    store = S3Store(bucket, endpoint_url=endpoint)
    store.ensure_bucket()
    store.close()


def stop_process(pid: int, marker: str, timeout: float = 5.0) -> bool:
    """SIGTERM (then SIGKILL) the process `pid`, only if its command line still contains `marker`: a pid recorded
    long ago may belong to some other program by now."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    if marker not in cmdline:
        return False
    os.kill(pid, signal.SIGTERM)
    if not wait_until(lambda: not Path(f"/proc/{pid}").exists() or _is_zombie(pid), timeout):
        os.kill(pid, signal.SIGKILL)
    return True


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True


# --- Redis -------------------------------------------------------------------------------------------------------


def redis_command(*args: str, port: int = REDIS_PORT, timeout: float = 2.0) -> bytes:
    """One command in Redis's wire protocol (RESP) without a client library; returns the raw reply payload."""
    parts = [arg.encode() for arg in args]
    request = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
    with socket.create_connection((LOOPBACK, port), timeout) as sock, sock.makefile("rb") as reply:
        sock.sendall(request)
        line = reply.readline()
        if line.startswith(b"$") and int(line[1:]) >= 0:
            return reply.read(int(line[1:]) + 2)[:-2]
        return line.rstrip(b"\r\n")


def redis_up(port: int = REDIS_PORT) -> bool:
    try:
        return redis_command("PING", port=port) == b"+PONG"
    except OSError:
        return False


def redis_pid(port: int = REDIS_PORT) -> int | None:
    try:
        match = re.search(rb"process_id:(\d+)", redis_command("INFO", "server", port=port))
    except OSError:
        return None
    return int(match.group(1)) if match else None


def ensure_redis(port: int = REDIS_PORT) -> int | None:
    """Start Redis if it is stopped; returns its pid when this call started it, None when it was already up."""
    if redis_up(port):
        return None
    if port_open(port):
        raise ServiceError(f"something listens on {LOOPBACK}:{port} but does not answer Redis PING")
    # The machine's own start command (/work/.library/env/machines/python-svc.md): nothing kept on disk.
    subprocess.run(
        [
            "redis-server",
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "-::1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            "/var/lib/redis",
            "--logfile",
            "/var/log/redis/ci.log",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    if not wait_until(lambda: redis_up(port), 10):
        raise ServiceError(f"Redis did not come up on {LOOPBACK}:{port}; see /var/log/redis/ci.log")
    return redis_pid(port)


def stop_redis(pid: int, port: int = REDIS_PORT) -> bool:
    if redis_pid(port) != pid:
        return False  # not the server we started: leave it be
    with suppress(OSError):  # a successful SHUTDOWN closes the connection without a reply
        redis_command("SHUTDOWN", "NOSAVE", port=port)
    return wait_until(lambda: not port_open(port), 10)


# --- PostgreSQL ---------------------------------------------------------------------------------------------------


def postgres_up(port: int = PG_PORT, database: str = PG_DATABASE) -> bool:
    """A real login to `database` with psql where it is installed (the port alone says nothing of the database)."""
    if not shutil.which("psql"):
        return port_open(port)
    try:
        done = subprocess.run(
            ["psql", "-h", LOOPBACK, "-p", str(port), "-U", PG_USER, "-d", database, "-tAc", "select 1"],
            capture_output=True,
            text=True,
            timeout=15,
            env={**os.environ, "PGCONNECT_TIMEOUT": "3"},
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0 and done.stdout.strip() == "1"


def postgres_cluster() -> str:
    versions = sorted((p.name for p in Path("/etc/postgresql").iterdir()), key=lambda v: [int(x) for x in v.split(".")])
    if not versions:
        raise ServiceError("no PostgreSQL cluster under /etc/postgresql")
    return versions[-1]


def _pg_ctl(version: str, action: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
        capture_output=True,
        text=True,
        timeout=60,
    )


def postgres_pid(version: str) -> int | None:
    match = re.search(r"PID: (\d+)", _pg_ctl(version, "status").stdout)
    return int(match.group(1)) if match else None


def ensure_postgres(port: int = PG_PORT) -> dict | None:
    """Start the cluster if it is stopped; returns {"cluster", "pid"} when this call started it, else None."""
    if postgres_up(port):
        return None
    if port_open(port):
        raise ServiceError(f"PostgreSQL answers on {LOOPBACK}:{port} but database '{PG_DATABASE}' is not usable")
    version = postgres_cluster()
    done = _pg_ctl(version, "start")
    if done.returncode != 0:
        raise ServiceError(f"pg_ctlcluster {version} main start failed: {done.stderr.strip()}")
    if not wait_until(lambda: postgres_up(port), 30, step=0.5):
        raise ServiceError(f"PostgreSQL {version} started but {LOOPBACK}:{port}/{PG_DATABASE} does not answer")
    return {"cluster": version, "pid": postgres_pid(version)}


def stop_postgres(started: dict) -> bool:
    version = started["cluster"]
    if postgres_pid(version) != started["pid"]:
        return False  # restarted by someone else since: not ours any more
    return _pg_ctl(version, "stop").returncode == 0


# --- for pytest fixtures -----------------------------------------------------------------------------------------


@contextmanager
def machine_services() -> Iterator[None]:
    """Redis and PostgreSQL up for the duration; stops on exit only what it had to start."""
    redis_started = ensure_redis()
    try:
        pg_started = ensure_postgres()
    except BaseException:
        if redis_started:
            stop_redis(redis_started)
        raise
    try:
        yield
    finally:
        if pg_started:
            stop_postgres(pg_started)
        if redis_started:
            stop_redis(redis_started)


@contextmanager
def scratch_postgres(prefix: str) -> Iterator[str]:
    """A database of the test's own on the machine's PostgreSQL (up for the duration): its URL; dropped on exit,
    with the pooled connections spinbot's engine holds to it."""
    import uuid

    import psycopg

    from spinbot.state.db import get_engine

    admin_url = f"postgresql://{PG_USER}@{LOOPBACK}:{PG_PORT}/{PG_DATABASE}"
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with machine_services():
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        url = f"postgresql://{PG_USER}@{LOOPBACK}:{PG_PORT}/{name}"
        try:
            yield url
        finally:
            get_engine(url).dispose()
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def service_env(s3_endpoint: str, bucket: str = TEST_BUCKET) -> dict[str, str]:
    """The environment that points spinbot (and boto3) at the test services."""
    return {
        "SPINBOT_REDIS_URL": f"redis://{LOOPBACK}:{REDIS_PORT}/0",
        "SPINBOT_DATABASE_URL": f"postgresql://{PG_USER}@{LOOPBACK}:{PG_PORT}/{PG_DATABASE}",
        "SPINBOT_STORAGE_URL": f"s3://{bucket}",
        "SPINBOT_S3_ENDPOINT_URL": s3_endpoint,
        **TEST_AWS_ENV,
    }


# --- the script: start | stop | status, remembering what it started ----------------------------------------------


def state_dir() -> Path:
    return Path(os.environ.get("SPINBOT_TEST_SERVICES_DIR") or REPO / ".cache" / "test-services")


def load_state(folder: Path) -> dict:
    path = folder / "state.json"
    return json.loads(path.read_text()) if path.exists() else {}


def save_state(folder: Path, state: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "state.json").write_text(json.dumps(state, indent=2))


def start_all(folder: Path) -> dict:
    """Start what is missing; the state is saved after each service so that `stop` can undo a half-done start."""
    state = load_state(folder)
    if not (state.get("s3") and s3_up(state["s3"]["endpoint"])):
        folder.mkdir(parents=True, exist_ok=True)
        pid, endpoint = start_moto_process(folder / "moto.log")
        state["s3"] = {"pid": pid, "endpoint": endpoint}
        save_state(folder, state)
        create_bucket(endpoint)
    if pid := ensure_redis():
        state["redis"] = {"pid": pid}
        save_state(folder, state)
    if started := ensure_postgres():
        state["postgres"] = started
        save_state(folder, state)
    (folder / "env").write_text(_exports(service_env(state["s3"]["endpoint"])))
    return state


def stop_all(folder: Path) -> list[str]:
    state, stopped = load_state(folder), []
    if "s3" in state and stop_process(state["s3"]["pid"], "moto.server"):
        stopped.append("s3")
    if "redis" in state and stop_redis(state["redis"]["pid"]):
        stopped.append("redis")
    if "postgres" in state and stop_postgres(state["postgres"]):
        stopped.append("postgres")
    for name in ("state.json", "env"):
        (folder / name).unlink(missing_ok=True)
    return stopped


def status_lines(folder: Path) -> tuple[list[str], bool]:
    state = load_state(folder)
    endpoint = state.get("s3", {}).get("endpoint")
    checks = {
        "s3": (endpoint is not None and s3_up(endpoint), endpoint or "not started by this script"),
        "redis": (redis_up(), f"{LOOPBACK}:{REDIS_PORT}"),
        "postgres": (postgres_up(), f"{LOOPBACK}:{PG_PORT}/{PG_DATABASE}"),
    }
    lines = [
        f"{name:9}{'up  ' if up else 'DOWN'}  {where}{'  (started by test-services)' if name in state else ''}"
        for name, (up, where) in checks.items()
    ]
    return lines, all(up for up, _ in checks.values())


def _exports(env: dict[str, str]) -> str:
    return "".join(f"export {key}='{value}'\n" for key, value in env.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/test-services",
        description="Start/stop the integration-test services on loopback. "
        '`eval "$(scripts/test-services start)"` also exports the variables that point spinbot at them.',
    )
    parser.add_argument("command", choices=["start", "stop", "status"])
    command, folder = parser.parse_args(argv).command, state_dir()
    try:
        if command == "start":
            state = start_all(folder)
            print(f"test services up; S3 at {state['s3']['endpoint']} (env in {folder / 'env'})", file=sys.stderr)
            print(_exports(service_env(state["s3"]["endpoint"])), end="")
        elif command == "stop":
            stopped = stop_all(folder)
            print(f"stopped: {', '.join(stopped) or 'nothing (this script had started nothing)'}", file=sys.stderr)
        else:
            lines, all_up = status_lines(folder)
            print("\n".join(lines))
            return 0 if all_up else 1
    except (ServiceError, subprocess.SubprocessError, OSError) as err:
        print(f"test-services {command}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
