"""Every error the API answers is JSON {"error": "one line"} with a status that says whose fault it was; nothing
internal (a traceback, a storage endpoint, an object key) reaches the client."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from spinbot.api.auth import Forbidden, Unauthorized
from spinbot.api.public_errors import public_error
from spinbot.errors import (
    BackendUnavailable,
    Conflict,
    InputError,
    JobNotFound,
    SpinBotError,
    TooManyJobs,
    echo,
    shorten,
)

log = logging.getLogger(__name__)


class UploadTooLarge(InputError):
    """An upload body past SPINBOT_MAX_UPLOAD_BYTES, or past what the key's uploads may hold in all (413)."""


class InvalidField(InputError):
    """A request field missing or out of its values (422), where FastAPI does not check it itself."""


class TooManyStreams(SpinBotError):
    """A key with SPINBOT_MAX_STREAMS_PER_KEY event streams open (429)."""


class TooManyUploads(SpinBotError):
    """A key with SPINBOT_MAX_UPLOADS_PER_KEY uploads in progress (429)."""


class ErrorBody(BaseModel):
    error: str = Field(description="what went wrong, in one line")


_MEANINGS = {
    400: "bad input: the message names the field or file and the rule",
    401: "missing or unknown API key",
    403: "the key may not do this: a job's priority needs a key of SPINBOT_PRIORITY_API_KEYS",
    404: "no such job, upload or artifact for this key",
    409: "the job's state forbids this now",
    413: "too large: an upload over SPINBOT_MAX_UPLOAD_BYTES, a key's uploads over SPINBOT_MAX_UPLOAD_STORAGE_BYTES, "
    "or a request body over SPINBOT_MAX_REQUEST_BYTES",
    416: "the byte range starts past the end of the file (Content-Range: bytes */SIZE says its size)",
    422: "a field is missing or has the wrong type, or the body is no JSON object (Content-Type: application/json)",
    429: "the key has SPINBOT_MAX_ACTIVE_JOBS jobs waiting or running (a new job), SPINBOT_MAX_STREAMS_PER_KEY "
    "event streams open (an event stream), or SPINBOT_MAX_UPLOADS_PER_KEY uploads in progress (an upload)",
    501: "not available in this version",
    503: "a service the API needs (storage, database, a native backend's model files, a free upload checker) is "
    "unavailable",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The documented error answers of a route, for its `responses=`."""
    return {code: {"model": ErrorBody, "description": _MEANINGS[code]} for code in codes}


MAX_ERROR_CHARS = 1000  # an error is one readable line, whatever a client's input made of it


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    if len(message) > MAX_ERROR_CHARS:
        message = f"{message[:MAX_ERROR_CHARS]}..."
    # a client's text echoed in it may hold a lone surrogate (JSON's "\ud800"), which has no UTF-8: written as
    # that escape, not a 500
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _status_for(err: SpinBotError) -> int:
    from spinbot.media.sandbox import CheckUnavailable
    from spinbot.storage.s3 import RangeNotSatisfiable, StorageUnavailable

    for kind, status in (
        (Unauthorized, 401),
        (Forbidden, 403),
        (JobNotFound, 404),
        (Conflict, 409),
        (UploadTooLarge, 413),
        (RangeNotSatisfiable, 416),
        (InvalidField, 422),
        (TooManyJobs, 429),
        (TooManyStreams, 429),
        (TooManyUploads, 429),
        (StorageUnavailable, 503),
        (BackendUnavailable, 503),
        (CheckUnavailable, 503),
    ):
        if isinstance(err, kind):
            return status
    return 400


def document_validation_errors(app: FastAPI) -> None:
    """FastAPI documents a 422 it adds by itself as its own HTTPValidationError; the handler below answers every
    422 as ErrorBody, so /openapi.json says so for every route, including ones that list no errors."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for operation in (op for ops in schema.get("paths", {}).values() for op in ops.values()):
                reply = operation.get("responses", {}).get("422")
                if reply and "HTTPValidationError" in str(reply):
                    reply.update(
                        description=_MEANINGS[422],
                        content={"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
                    )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.pop("HTTPValidationError", None)
            components.pop("ValidationError", None)
            components.setdefault("ErrorBody", ErrorBody.model_json_schema())
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _detail(request: Request, err: StarletteHTTPException) -> str:
    """The error's line; Starlette's bare "Not Found" for a path no route serves says which path, and for one with
    a trailing slash (never redirected: app.py) that no path of the API ends in one. The path is the client's own
    text, quoted and shortened."""
    path = request.url.path
    if err.status_code == 400 and err.detail == "There was an error parsing the body":
        return f"malformed JSON body: {_unparsed_why(err.__cause__)}"
    if err.status_code != 404 or err.detail != "Not Found":
        return str(err.detail)
    if len(path) > 1 and path.endswith("/"):
        return f"nothing at {echo(path)}: no path of this API ends in '/'"
    return f"nothing at {echo(path)}"


def _body_problem(request: Request, first: dict[str, Any]) -> str:
    """The whole body is wrong (no field to name): JSON sent as a form or as text is read as no JSON at all, and
    pydantic's "Input should be a valid dictionary or object to extract fields from" said neither."""
    given = request.headers.get("content-type", "").split(";")[0].strip()
    if given.lower() != "application/json" and not given.lower().endswith("+json"):
        sent = f"it came as {echo(given)}" if given else "it came with no Content-Type"
        return f"the body must be a JSON object with Content-Type: application/json; {sent}"
    if first.get("type") == "missing":
        return "the body is empty; send a JSON object"
    return f"the body must be a JSON object, not {_json_kind(first.get('input'))}"


def _json_kind(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "true or false", type(None): "null"}
    return names.get(type(value), "a number")


def _unparsed_why(cause: BaseException | None) -> str:
    """Why FastAPI could not read a JSON body that is no JSONDecodeError (it said only "There was an error parsing
    the body"); nothing of the exception itself is echoed."""
    if isinstance(cause, RecursionError):
        return "lists or objects nested too deep"
    if isinstance(cause, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return "a number of more than 4,300 digits"
    return "unreadable"


def install_error_handlers(app: FastAPI) -> None:
    document_validation_errors(app)

    @app.exception_handler(SpinBotError)
    async def _spinbot_error(request: Request, err: SpinBotError):
        status = _status_for(err)
        if status == 503:
            log.warning("service unavailable", extra={"path": request.url.path, "error": str(err)})
        return error(status, public_error(str(err)) or type(err).__name__)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, err: RequestValidationError):
        first = err.errors()[0]
        if first.get("type") == "json_invalid":
            return error(400, f"malformed JSON body: {first.get('ctx', {}).get('error', first['msg'])}")
        where = shorten(".".join(str(p) for p in first["loc"] if p != "body"))  # a dict key is the client's text
        if not where and tuple(first["loc"]) == ("body",):
            return error(422, _body_problem(request, first))
        return error(422, f"{where}: {first['msg']}" if where else first["msg"])

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException):
        return error(err.status_code, _detail(request, err), getattr(err, "headers", None))

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, err: ClientDisconnect):
        # A client that closed its connection mid-upload was uvicorn's "Exception in ASGI application" with a
        # traceback at error level: any client could fill the error log. Nobody reads the answer.
        log.info("a client closed its connection before its request's body ended", extra={"path": request.url.path})
        return error(400, "the connection was closed before the request's body ended")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception):
        # Starlette raises the error again after this answer, so the server log gets its traceback.
        return error(500, "internal error; the server log has the details")
