"""What the CLI checks before it does any work, so that a mistake costs one line (exit 2) rather than a traceback,
a stored job or a render written over the user's own file: --out, the address `serve` binds, and the services the
settings name (the data folder, the database, the artifact storage, Redis)."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

from spinbot.errors import InputError, NoData, SettingsError, SpinBotError
from spinbot.settings import Settings

log = logging.getLogger(__name__)

REDIS_TIMEOUT_SECONDS = 5.0
REASON_CHARS = 200  # a driver's message can be long (PostgreSQL's names host, port and what failed): one line


# What defines a new job (`spinbot run`'s option names): with --resume they would be silently ignored.
NEW_JOB_OPTIONS = ("prompt", "image", "voice", "ref_text", "set_", "pipeline", "priority")


def refuse_new_job_options(ctx: Any) -> None:
    """--resume continues a job with its own inputs: an option that would define another job is refused."""
    given = [
        param.opts[0]
        for param in ctx.command.params
        if param.name in NEW_JOB_OPTIONS and ctx.get_parameter_source(param.name).name != "DEFAULT"
    ]
    if given:
        raise InputError(f"--resume continues a job with its own inputs: {', '.join(given)} cannot be given with it")


# ---- worker --queues -----------------------------------------------------------------------------------------------
BUILT_IN_QUEUES = ("gpu", "cpu")  # SPINBOT_WORKER_QUEUES' default: always accepted


def worker_queues(given: str | None, settings: Settings) -> list[str]:
    """The queues a worker serves (--queues, else SPINBOT_WORKER_QUEUES). A name no task is routed to by this
    machine's settings (the default routes, SPINBOT_QUEUE_ROUTES, SPINBOT_QUEUE_DEFAULT) is served with a warning,
    not refused: the routes that count are those of the process that submits the jobs, which may differ (a
    misspelled name otherwise started a worker that served nothing, silently)."""
    from spinbot.queue.config import DEFAULT_ROUTES

    option = "--queues" if given is not None else "SPINBOT_WORKER_QUEUES"
    names = [q.strip() for q in (given if given is not None else settings.worker_queues).split(",") if q.strip()]
    routed = {*DEFAULT_ROUTES.values(), *settings.queue_routes.values(), settings.queue_default}
    known = sorted({*BUILT_IN_QUEUES, *routed})
    if not names:
        raise InputError(f"{option}: no queue named (known: {', '.join(known)})")
    for queue in (q for q in names if q not in known):
        log.warning(
            "no task is routed to this queue by this machine's settings; serving it, as the process that submits "
            "jobs may route tasks there (SPINBOT_QUEUE_ROUTES)",
            extra={"option": option, "queue": queue, "known": ", ".join(known)},
        )
    return list(dict.fromkeys(names))


# ---- --out -------------------------------------------------------------------------------------------------------
VIDEO_SUFFIX = ".mp4"  # what every pipeline's last node delivers (its `video`)


def check_out(out: Path | None, inputs: dict[str, Path | None]) -> bool:
    """--out before any work: never one of the job's input files; an existing folder (the video goes in it), or an
    .mp4 file whose folder exists or can be made and is writable (a folder not there yet is made as the video is
    delivered). True when --out is a file there already (the video will replace it)."""
    if out is None:
        return False
    for option, path in inputs.items():
        if path is not None and _same_file(out, path):
            raise InputError(f"--out {out}: is the {option} file; the video would overwrite it")
    if out.is_dir():
        _check_writable(out, out)
        return False
    if out.exists() and not out.is_file():
        raise InputError(f"--out {out}: exists and is not a regular file")
    if out.suffix.lower() != VIDEO_SUFFIX:  # the video is an mp4 whatever the name; a folder must exist already
        raise InputError(
            f"--out {out}: the video is an {VIDEO_SUFFIX} file; give a name ending in {VIDEO_SUFFIX} "
            f"(e.g. {out.with_suffix(VIDEO_SUFFIX) if out.suffix else f'{out}{VIDEO_SUFFIX}'}) or a folder that exists"
        )
    _check_writable(out, _nearest_existing(out))
    return out.exists()


def _nearest_existing(out: Path) -> Path:
    """out's folder, or its nearest parent that is there, which must be a folder: the folders in between are made
    only as the video is delivered (made here, a run refused a moment later, for a missing --image say, left them
    behind)."""
    there = next((p for p in out.parents if os.path.lexists(p)), Path("."))  # a broken link counts
    if not there.is_dir():
        raise InputError(f"--out {out}: cannot make its folder: {there} is not a folder")
    return there


def _same_file(a: Path, b: Path) -> bool:
    # samefile sees through links and other spellings of a path; a path that is not there yet only by its name
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _check_writable(out: Path, folder: Path) -> None:
    try:
        _write_in(folder)
    except OSError as err:
        # `folder` is out's own, or the parent its missing folders would be made in
        raise InputError(f"--out {out}: cannot write in {folder} ({err.strerror or err})") from None


# ---- spinbot serve's address --------------------------------------------------------------------------------------
def check_serve_address(host: str, port: int, settings: Settings) -> None:
    """A public address only with API keys; and one this process can listen on."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not settings.api_key_list:
        raise InputError(f"refusing to serve on {host} without API keys: set SPINBOT_API_KEYS (comma-separated)")
    check_bindable(host, port)


def check_bindable(host: str, port: int) -> None:
    """Bind each address `host` names (as uvicorn will) and let it go: a port in use or an address that is not this
    machine's is one line, before the server starts (and takes over unfinished jobs)."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _, address in addresses:
            with socket.socket(family, kind, proto) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: TIME_WAIT is no conflict
                sock.bind(address)
    except OSError as err:  # socket.gaierror too: an unknown host name
        raise InputError(f"cannot listen on {host}:{port} ({err.strerror or err})") from None


# ---- the services -------------------------------------------------------------------------------------------------
def open_runner(watch: bool = False, reachable: bool = True, existing: bool = False) -> Any:
    """The control plane in this process, once the services the settings name answer (one line naming the setting
    otherwise, before anything is stored); jobs it runs write their live output only when watched (--watch).
    existing: the command works on jobs made before (`jobs`, `cancel`, `gc`, `run --resume`), so a database that
    is not there is NoData, and nothing is made (opening it would create an empty data folder and database)."""
    from spinbot.control.runner import Runner
    from spinbot.logs import setup_logging
    from spinbot.settings import get_settings

    setup_logging("WARNING", plain=True)  # a person reads these, between the progress lines
    settings = get_settings()
    if existing:
        require_data(settings)
    check_services(settings, reachable=reachable)
    return Runner(settings.model_copy(update={"live_output": settings.live_output and watch}))


def require_data(settings: Settings) -> None:
    """NoData where the jobs' database is a SQLite file that does not exist (the embedded default, or a
    SPINBOT_DATABASE_URL naming one); a server database is opened as usual (it is never made here)."""
    from sqlalchemy.engine import make_url

    url = make_url(settings.resolved_database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return
    db = Path(url.database).resolve()
    if db.is_file() or (settings.data_dir.exists() and not settings.data_dir.is_dir()):
        return  # there, or a data folder setting that check_services names as wrong
    if settings.database_url:
        raise NoData(f"no SpinBot data found: the SQLite file SPINBOT_DATABASE_URL names ({db}) does not exist")
    raise NoData(
        f"no SpinBot data found at {settings.data_dir.resolve()} (no spinbot.db there): run spinbot in the folder "
        "you made your jobs in, or set SPINBOT_DATA_DIR to their data folder"
    )


def check_services(settings: Settings, *, database: bool = True, reachable: bool = True) -> None:
    """Open what the settings name, in the order a job needs it; SettingsError naming the setting and the problem.
    reachable: also ask Redis and an S3 bucket now (a command that works at once: a job is submitted only when it
    can run). `serve` and `worker` leave that out: they ride out an outage (/readyz reports it)."""
    if (database and not settings.database_url) or not settings.storage_url:
        _check_data_dir(settings.data_dir)
    if database:
        _check_database(settings)
    _check_storage(settings, reachable)
    if settings.redis_url:
        _check_redis(settings.redis_url, reachable)


def check_pipelines(settings: Settings) -> None:
    """SPINBOT_PIPELINES, loaded and validated whole, as `spinbot pipelines validate` does: `serve` started on a
    missing or broken file answered /readyz ready and then every job, /v1/pipelines and each takeover failed."""
    from spinbot.pipelines.spec import load_pipelines_file

    if settings.pipelines:
        try:
            load_pipelines_file(settings.pipelines)
        except SpinBotError as err:
            raise SettingsError(f"SPINBOT_PIPELINES: {err}") from None


def _check_data_dir(folder: Path) -> None:
    name = f"SPINBOT_DATA_DIR={folder}"
    if folder.exists() and not folder.is_dir():
        raise SettingsError(f"{name}: not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write_in(folder)
    except OSError as err:
        raise SettingsError(f"{name}: cannot use it as the data folder ({err.strerror or err})") from None


def _check_database(settings: Settings) -> None:
    from spinbot.state.db import get_engine

    try:
        get_engine(settings.resolved_database_url)  # connects and migrates; the Runner reuses the engine
    except Exception as err:  # noqa: BLE001 - an unknown dialect, a refused connection, a bad login: one line each
        raise SettingsError(f"SPINBOT_DATABASE_URL: cannot use the database ({reason(err)})") from None


def _check_storage(settings: Settings, reachable: bool) -> None:
    from spinbot.storage.base import open_store
    from spinbot.storage.local import LocalStore
    from spinbot.storage.s3 import S3Store

    name = "SPINBOT_STORAGE_URL" if settings.storage_url else f"SPINBOT_DATA_DIR={settings.data_dir}"
    try:
        store = open_store(settings.resolved_storage_url)
        if isinstance(store, LocalStore):
            _write_in(store.root)
        elif isinstance(store, S3Store) and reachable:
            store.check_bucket()
    except SpinBotError as err:
        raise SettingsError(f"{name}: {err}") from None
    except Exception as err:  # noqa: BLE001 - whatever the store's client raised: one line
        raise SettingsError(f"{name}: cannot use the artifact storage ({reason(err)})") from None


def _check_redis(url: str, reachable: bool) -> None:
    import redis

    try:
        client = redis.Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
        )
    except ValueError as err:
        raise SettingsError(f"SPINBOT_REDIS_URL: not a Redis URL ({reason(err)})") from None
    try:
        if reachable:
            client.ping()
    except redis.RedisError as err:
        raise SettingsError(f"SPINBOT_REDIS_URL: cannot reach Redis ({reason(err)})") from None
    finally:
        client.close()


def _write_in(folder: Path) -> None:
    # a file made and removed: permission bits do not say it for root, nor for /proc-like folders
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".spinbot-check-"):
        pass


def reason(err: BaseException) -> str:
    """An exception's first line, for one error line (SQLAlchemy's own is the driver's, then more lines)."""
    if isinstance(err, OSError) and err.strerror:  # without its "[Errno 2]"
        text = err.strerror + (f": {err.filename}" if err.filename else "")
    else:
        text = str(getattr(err, "orig", None) or err).strip() or type(err).__name__
    line = " ".join(text.splitlines()[0].split())
    return line if len(line) <= REASON_CHARS else line[: REASON_CHARS - 3] + "..."
