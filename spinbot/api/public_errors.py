"""Error text as clients see it. Job and node errors are stored whole for operators (database, logs); what the API
sends says what failed in the user's words: a storage failure becomes one sentence, and addresses, credentials,
object keys and server paths are taken out of anything else. Errors cross processes as text (a worker's failure
comes back through Redis), so this works on the text."""

from __future__ import annotations

import re
from typing import Any

STORAGE_FAILED = "the artifact storage could not be used; retry the job later"

_NODE_FAILED = re.compile(r"^(node '[^']*' \([^)]*\) failed: )(.*)$", re.DOTALL)
_STORAGE = re.compile(r"\bS3\b|\bAWS\b|\bbucket\b|\bendpoint\b|\bboto", re.IGNORECASE)
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"<>]+", re.IGNORECASE)
_ACCESS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")
_OBJECT_KEY = re.compile(r"\b(?:jobs|uploads)/(?:[\w.@+-]+/)+([\w.@+-]+)")
_SERVER_PATH = re.compile(r"(?<![\w.~])/(?:[\w.@+-]+/)+([\w.@+-]+)")


def public_error(message: str | None) -> str | None:
    if not message:
        return message
    match = _NODE_FAILED.match(message)
    prefix, detail = (match[1], match[2]) if match else ("", message)
    return prefix + (STORAGE_FAILED if _STORAGE.search(detail) else _redact(detail))


# Keys of a node's metadata whose text is an error's (a live output's or checkpoint's warning, the script's fallback
# reason): shown as errors are. Its other strings get the redaction alone (a user's param text stays as given).
_ERROR_KEYS = frozenset({"warning", "warnings", "reason"})


def public_meta(value: Any, error: bool = False) -> Any:
    """A node's metadata as clients see it: stored whole for operators, it names internals too (the script node
    records the Ollama host it asked, which may carry credentials; a warning holds a storage error)."""
    if isinstance(value, str):
        return public_error(value) if error else _redact(value)
    if isinstance(value, dict):
        return {key: public_meta(item, error or key in _ERROR_KEYS) for key, item in value.items()}
    if isinstance(value, list):
        return [public_meta(item, error) for item in value]
    return value


def _redact(text: str) -> str:
    text = _URL.sub("<internal address>", text)
    text = _ACCESS_KEY_ID.sub("<credential>", text)
    text = _OBJECT_KEY.sub(r"\1", text)  # a stored file by its name only
    return _SERVER_PATH.sub(r"\1", text)
