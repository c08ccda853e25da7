"""One node's Redis records, shared by the dispatcher (reads) and the worker (writes).

result  a NodeResult as JSON; written once per run, before the queue marks the job completed
events  a stream: started, progress..., done; durable, so a reader that attaches late misses nothing
cancel  a flag the dispatcher sets and the worker polls
"""

from __future__ import annotations

from typing import cast

import redis

from spinbot.queue.keys import node_key
from spinbot.queue.records import DONE, NodeResult, event

EVENTS_MAXLEN = 1000  # progress is a live view, not a log: old entries may go

# Start a new run only if the node has not succeeded meanwhile: checking and deleting in one step closes the
# window in which a worker could store a success that a plain DEL would then throw away.
_CLEAR_UNLESS_SUCCEEDED = """
local record = redis.call('GET', KEYS[1])
if record and string.find(record, '"status":"succeeded"', 1, true) then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return 1
"""


class NodeChannel:
    def __init__(self, client: redis.Redis, job_id: str, node_id: str, ttl_seconds: int):
        self.client = client
        self.ttl = ttl_seconds
        self.result_key = node_key(job_id, node_id, "result")
        self.events_key = node_key(job_id, node_id, "events")
        self.cancel_key = node_key(job_id, node_id, "cancel")

    # ---- the final record ----------------------------------------------------------------------------------------
    def result(self) -> NodeResult | None:
        raw = self.client.get(self.result_key)
        return NodeResult.model_validate_json(raw) if raw else None

    def save_result(self, result: NodeResult, only_if_absent: bool = False) -> bool:
        """Store the record and announce it; with only_if_absent, an earlier record wins (returns False)."""
        if only_if_absent and not self.client.set(self.result_key, result.model_dump_json(), ex=self.ttl, nx=True):
            return False
        pipe = self.client.pipeline(transaction=True)
        if not only_if_absent:
            pipe.set(self.result_key, result.model_dump_json(), ex=self.ttl)
        self._add_event(pipe, event(DONE, status=result.status))
        pipe.execute()
        return True

    def start_new_run(self) -> bool:
        """Forget a failed or cancelled run (its record, events, cancel flag); False if the node succeeded."""
        keys = [self.result_key, self.events_key, self.cancel_key]
        return bool(self.client.eval(_CLEAR_UNLESS_SUCCEEDED, len(keys), *keys))

    # ---- progress --------------------------------------------------------------------------------------------------
    def publish(self, entry: dict[str, str]) -> None:
        pipe = self.client.pipeline(transaction=False)
        self._add_event(pipe, entry)
        pipe.execute()

    def announce_done(self) -> None:
        """Repeat the done event for a reader that waits on a run finished earlier."""
        result = self.result()
        if result is not None:
            self.publish(event(DONE, status=result.status))

    def read(self, after_id: str, block_ms: int) -> list[tuple[str, dict[str, str]]]:
        reply = cast(
            "list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]",  # streams and their entries
            self.client.xread({self.events_key: after_id}, block=block_ms),
        )
        return [(_text(entry_id), _decode(fields)) for _, entries in reply for entry_id, fields in entries]

    def _add_event(self, pipe, entry: dict[str, str]) -> None:
        pipe.xadd(self.events_key, entry, maxlen=EVENTS_MAXLEN, approximate=True)
        pipe.expire(self.events_key, self.ttl)

    # ---- cancellation ----------------------------------------------------------------------------------------------
    def request_cancel(self) -> None:
        self.client.set(self.cancel_key, "1", ex=self.ttl)

    def cancel_requested(self) -> bool:
        return bool(self.client.exists(self.cancel_key))


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decode(fields: dict) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in fields.items()}
