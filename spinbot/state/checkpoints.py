"""The LangGraph checkpointer: SQLite next to the embedded database, PostgreSQL when the database is."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from spinbot.settings import Settings

_setup_done: set[str] = set()
_setup_lock = threading.Lock()


def _postgres_dsn(url: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url.removeprefix(prefix)
    return url


@contextmanager
def open_checkpointer(settings: Settings) -> Iterator[Any]:
    url = settings.resolved_database_url
    if url.startswith(("postgresql", "postgres:")):
        from langgraph.checkpoint.postgres import PostgresSaver

        dsn = _postgres_dsn(url)
        with PostgresSaver.from_conn_string(dsn) as saver:
            with _setup_lock:
                if dsn not in _setup_done:
                    saver.setup()  # creates or migrates LangGraph's own tables, idempotent
                    _setup_done.add(dsn)
            yield saver
        return
    from langgraph.checkpoint.sqlite import SqliteSaver

    settings.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(settings.checkpoint_path), check_same_thread=False, timeout=30)
    try:
        yield SqliteSaver(conn)
    finally:
        conn.close()
