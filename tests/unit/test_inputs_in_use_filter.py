"""jobs_naming reads in Python only the jobs whose inputs may name the keys (the database filters their JSON text):
it decoded every job of the owner on each upload or job deletion, 0.5 s for 50,000 jobs (SQLite)."""

from __future__ import annotations

import uuid

from sqlalchemy import insert
from sqlalchemy.orm import Session

from spinbot.settings import get_settings
from spinbot.state.db import get_engine
from spinbot.state.inputs_in_use import jobs_naming
from spinbot.state.models import Job


def _job(owner: str, key: str, n: int) -> dict:
    inputs = {"values": {"prompt": "p"}, "artifacts": {"narrator_voice": key}}
    return {"id": f"job{n:05d}", "pipeline": "p", "status": "succeeded", "owner": owner, "inputs": inputs}


def test_only_the_jobs_that_may_name_a_key_are_read(spinbot_env, monkeypatch):
    engine = get_engine(get_settings().resolved_database_url)
    keys = ["uploads/o/a_b%c.wav", "uploads/o/été.wav", "uploads/o/A.wav", "uploads/o/a.wav"]
    others = [_job("o", f"uploads/o/{uuid.uuid4().hex}.wav", n) for n in range(2_000)]
    with engine.begin() as c:
        c.execute(insert(Job), [*others, *(_job("o", key, 3_000 + n) for n, key in enumerate(keys))])
    read = []
    real = Session.execute

    def counting(self, statement, *args, **kwargs):
        result = real(self, statement, *args, **kwargs).all()
        read.append(len(result))
        return result

    monkeypatch.setattr(Session, "execute", counting)
    with Session(engine) as s:
        assert jobs_naming(s, "o", ["uploads/o/a.wav"]) == {"uploads/o/a.wav": "job03003"}
        assert read[-1] <= 2  # SQLite's LIKE lets the same key in another case through; never the 2,000 others
        assert jobs_naming(s, "o", ["uploads/o/aXbYc.wav", "uploads/o/a_b%c.wav"]) == {
            "uploads/o/a_b%c.wav": "job03000"
        }
        assert jobs_naming(s, "o", ["uploads/o/été.wav"]) == {"uploads/o/été.wav": "job03001"}  # read them all
        assert jobs_naming(s, "other", ["uploads/o/a.wav"]) == {}
