"""The services' JSON log lines (and the CLI's plain ones) carry no terminal escape sequences: uvicorn's
`color_message` extra is dropped, and colours in any other field are taken out."""

from __future__ import annotations

import json
import logging

from spinbot.logs import JsonFormatter, PlainFormatter

ESC = "\x1b"


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, msg, args, None)
    made.__dict__.update(extra)
    return made


def test_uvicorn_color_message_is_dropped_and_no_field_keeps_an_escape_sequence():
    # what uvicorn.server logs as it starts: the message once plain, once coloured for its own formatter
    started = record("Started server process [%d]", 41, color_message=f"Started server process [{ESC}[36m%d{ESC}[0m]")
    line = JsonFormatter().format(started)
    entry = json.loads(line)
    assert entry["msg"] == "Started server process [41]" and entry["logger"] == "uvicorn.error"
    assert "color_message" not in entry and "\\u001b" not in line and ESC not in line

    coloured = record(
        f"{ESC}[1mbold{ESC}[0m and {ESC}]0;a title{ESC}\\ text{ESC}",
        client=f"{ESC}[32m127.0.0.1{ESC}[0m",
        status=200,
    )
    entry = json.loads(JsonFormatter().format(coloured))
    assert (entry["msg"], entry["client"], entry["status"]) == ("bold and  text", "127.0.0.1", 200)
    plain = PlainFormatter().format(started)
    assert plain == "info: Started server process [41]"
