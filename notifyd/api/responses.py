"""JSON responses serialized with orjson, and the one place where errors are
formatted: one renderer per wire dialect (notifyd's, ntfy's, Gotify's) turns a
domain error into status, body and headers (:class:`ErrorAnswer`: an ASGI answer,
a Starlette response or raw HTTP/1.1 bytes, all from the same fields), plus the
request-body size limit (:class:`BodyTooLarge`, :func:`check_body_size`).

Every door raises domain errors (:class:`~notifyd.core.errors.NotifydError`,
ntfy's :class:`~notifyd.api.compat.ntfy_params.NtfyError`) and answers them with
its dialect's renderer: the FastAPI exception handlers below, the publish fast
paths (``fastpath.py``, ``compat/ntfy_publish.py``), the raw-transport stream
doors (``rawstream.py``, ``compat/ntfy_stream.py``, Gotify's ``/stream``), ntfy's
and Gotify's routes and the
connection guard (``server.py``)."""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute

from ..core.errors import NotifydError, PayloadTooLarge, ValidationFailed
from .compat import gotify_map
from .compat.ntfy_params import NtfyError, from_notifyd

log = logging.getLogger("notifyd.api")


class JSON(JSONResponse):  # a JSONResponse, so the OpenAPI document says application/json objects
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "rate_limited",
    503: "unavailable",
}

#: reason phrases of the raw HTTP/1.1 form
_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict",
            413: "Content Too Large", 415: "Unsupported Media Type",
            422: "Unprocessable Content", 426: "Upgrade Required", 429: "Too Many Requests",
            500: "Internal Server Error", 501: "Not Implemented",
            503: "Service Unavailable"}  # fmt: skip

#: the protocols a request may speak, each with its own error shape
NOTIFYD, NTFY, GOTIFY = "notifyd", "ntfy", "gotify"
INTERNAL_MESSAGE = "internal error; the daemon log has details"
_gotify_names: frozenset[str] | None = None


#: paths under notifyd's names that speak ntfy's dialect (errors in ntfy's shape)
NTFY_PATHS = ("/v1/account/", "/file/")


def door_of(path: str, method: str, reserved: frozenset[str]) -> str:
    """Which protocol a request to ``path`` speaks: Gotify's endpoints, notifyd's own
    names (``reserved``: ``/v1``, the page, plugins), else an ntfy topic. ntfy's own
    paths among notifyd's names (:data:`NTFY_PATHS`: the account API, ``/file/``)
    are ntfy's. Cheap (a split and set lookups): also asked for every body's limit."""
    global _gotify_names
    if _gotify_names is None:
        from .compat import gotify  # imports this module: looked up on first use

        _gotify_names = frozenset(
            r.path.lstrip("/").split("/", 1)[0]
            for r in gotify.router.routes
            if isinstance(r, Route | WebSocketRoute)  # every route of it: each has a path
        )
    first = path.lstrip("/").split("/", 1)[0]
    if first in _gotify_names:
        return GOTIFY
    if path == "/v1/account" or path.startswith(NTFY_PATHS):
        return NTFY
    if first in reserved or (not first and method not in ("POST", "PUT")):
        return NOTIFYD
    return NTFY


# -- one renderer per wire dialect ----------------------------------------------------------


def retry_after_value(seconds: float | None) -> str | None:
    """``Retry-After`` as HTTP has it: whole seconds, rounded up, at least 1 (a ``0``
    would invite an immediate retry); None when the error names no delay."""
    if seconds is None:
        return None
    return str(max(1, math.ceil(seconds)))


def status_error(status: int, message: str, *, code: str | None = None) -> NotifydError:
    """A core error of any HTTP ``status`` (Starlette's 404/405, 408, 426, 501, a 500),
    with notifyd's slug for that status unless ``code`` names one."""
    slug = code or _STATUS_CODES.get(status) or ("internal" if status >= 500 else "error")
    exc = NotifydError(message, code=slug)
    exc.status = status
    return exc


@dataclass(frozen=True, slots=True)
class ErrorAnswer:
    """An error answer as a renderer made it: status, body and headers (Content-Type
    first; Content-Length is added by each form). Its forms: :meth:`asgi` (bare ASGI
    handlers, the guard), :meth:`response` (FastAPI handlers, WebSocket denials) and
    :meth:`raw` (the raw-socket doors: HTTP/1.1 bytes that end the connection)."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...]

    def asgi(self, websocket: bool = False) -> list[dict[str, Any]]:
        """``http.response.start`` and ``.body`` (``websocket.http.response.*`` for a
        WebSocket refused before its handshake)."""
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers]
        headers.append((b"content-length", b"%d" % len(self.body)))
        kind = "websocket.http.response." if websocket else "http.response."
        return [
            {"type": kind + "start", "status": self.status, "headers": headers},
            {"type": kind + "body", "body": self.body},
        ]

    async def send(self, send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        for message in self.asgi():
            await send(message)

    def response(self) -> Response:
        return Response(self.body, status_code=self.status, headers=dict(self.headers))

    def raw(self) -> bytes:
        """The whole answer as HTTP/1.1 bytes; always ``Connection: close``."""
        lines = [f"HTTP/1.1 {self.status} {_REASONS.get(self.status, 'Error')}"]
        lines += [f"{k}: {v}" for k, v in self.headers if k != "Connection"]
        lines += [f"Content-Length: {len(self.body)}", "Connection: close", "", ""]
        return "\r\n".join(lines).encode("latin-1") + self.body


def _answer(
    status: int, body: bytes, challenge: str, retry_after: float | None, close: bool,
    extra: Mapping[str, str] | None = None,
) -> ErrorAnswer:  # fmt: skip
    headers = [("Content-Type", "application/json")]
    if status == 401:
        headers.append(("WWW-Authenticate", challenge))
    retry = retry_after_value(retry_after)
    if retry is not None:
        headers.append(("Retry-After", retry))
    if extra:
        own = ("content-length", "content-type")
        headers += [(k, v) for k, v in extra.items() if k.lower() not in own]
    if close:
        headers.append(("Connection", "close"))
    return ErrorAnswer(status, body, tuple(headers))


def render_notifyd(
    exc: NotifydError, *, close: bool = False, headers: Mapping[str, str] | None = None
) -> ErrorAnswer:
    """notifyd's dialect: ``{"error": {"code", "message", "field"?}}``; a 401 carries
    ``WWW-Authenticate: Bearer``. ``close`` adds ``Connection: close`` (the request's
    body may be unread); ``headers`` are kept (Starlette's ``Allow`` on a 405)."""
    err: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.field is not None:
        err["field"] = exc.field
    return _answer(exc.status, orjson.dumps({"error": err}), 'Bearer realm="notifyd"',
                   exc.retry_after, close, headers)  # fmt: skip


#: the ``link`` ntfy puts on its authentication refusals
NTFY_AUTH_LINKS = {
    401: "https://ntfy.sh/docs/publish/#authentication",
    403: "https://ntfy.sh/docs/publish/#authentication",
}


def render_ntfy(exc: NtfyError | NotifydError, *, close: bool = False) -> ErrorAnswer:
    """ntfy's dialect: ``{"code", "http", "error", "link"?}`` and a newline, as ntfy
    writes it; a core error is mapped to ntfy's code for it (``from_notifyd``). A 401
    carries ``WWW-Authenticate: Basic`` (ntfy's apps send Basic credentials)."""
    err = exc if isinstance(exc, NtfyError) else from_notifyd(exc)
    doc: dict[str, Any] = {"code": err.code, "http": err.http, "error": err.error}
    link = err.link if err.link is not None else NTFY_AUTH_LINKS.get(err.http)
    if link is not None:  # ntfy's clients (aiontfy: Home Assistant) expect it on 401/403
        doc["link"] = link
    return _answer(err.http, orjson.dumps(doc) + b"\n", 'Basic realm="notifyd"',
                   err.retry_after, close)  # fmt: skip


def render_gotify(exc: NotifydError, *, close: bool = False) -> ErrorAnswer:
    """Gotify's dialect: ``{"error", "errorCode", "errorDescription"}``; invalid input
    (notifyd's 422) is Gotify's 400. A 401 carries ``WWW-Authenticate: Basic``."""
    status = gotify_map.gotify_status(exc.status)
    doc = {
        "error": gotify_map.STATUS_TEXT.get(status, "Error"),
        "errorCode": status,
        "errorDescription": exc.message,
    }
    return _answer(status, orjson.dumps(doc), 'Basic realm="notifyd"', exc.retry_after, close)


def render(door: str, exc: NotifydError | NtfyError, *, close: bool = False) -> ErrorAnswer:
    """``exc`` in ``door``'s dialect (the connection guard, which knows only the door)."""
    if door == NTFY:
        return render_ntfy(exc, close=close)
    if isinstance(exc, NtfyError):  # not expected outside ntfy's door; keep its status
        exc = status_error(exc.http, exc.error)
    if door == GOTIFY:
        return render_gotify(exc, close=close)
    return render_notifyd(exc, close=close)


def carries_body(headers: Mapping[str, str]) -> bool:
    """Whether a request announces a body (which an error answer may leave unread, so
    that the connection must close: the rest would garble the next request)."""
    return "content-length" in headers or "transfer-encoding" in headers


# -- the request-body size limit ------------------------------------------------------------


class BodyTooLarge(PayloadTooLarge, StarletteHTTPException):
    """A request body over ``max_request_bytes``: the one 413 for it, on every door.

    Raised by the connection guard's ``receive()`` (``server.py``), which enforces the
    limit for every route, and by :func:`check_body_size` wherever a door checks a
    size itself first (ntfy's publishing, whose own limit is smaller). It is a core
    error, so that each door answers it in its own dialect, and also Starlette's
    HTTPException, which FastAPI's body parsing lets through (it turns any other
    error into a 400)."""

    def __init__(self, limit: int) -> None:
        PayloadTooLarge.__init__(
            self, f"the request body is larger than {limit} bytes (max_request_bytes)"
        )
        self.status_code, self.detail, self.headers = 413, self.message, None


def declared_length(value: bytes | str | None) -> int:
    """A ``Content-Length`` value as a number; -1 when absent or not ASCII digits."""
    if value is None or not (value.isascii() and value.isdigit()):
        return -1
    return int(value)


def check_body_size(size: int, limit: int) -> None:
    """Refuse a body of ``size`` bytes (declared, or read so far) over ``limit``
    (``max_request_bytes``)."""
    if size > limit:
        raise BodyTooLarge(limit)


# -- FastAPI's exception handlers -----------------------------------------------------------


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(NotifydError)
    async def _notifyd(request: Request, exc: NotifydError) -> Response:
        return render_notifyd(exc, close=carries_body(request.headers)).response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        err = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in err.get("loc", ()) if p not in ("query", "path", "body", "header")]
        field = ".".join(loc) or None
        msg = err.get("msg", "invalid request")
        invalid = ValidationFailed(f"{field}: {msg}" if field else msg, field=field)
        return render_notifyd(invalid, close=carries_body(request.headers)).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = _STATUS_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        error = status_error(exc.status_code, message, code=code)
        return render_notifyd(error, close=carries_body(request.headers),
                              headers=getattr(exc, "headers", None)).response()  # fmt: skip

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> Response:
        # Starlette raises the exception on after this answer; the connection guard
        # (api/server.py) catches it there and logs it, once.
        door = door_of(request.url.path, request.method, _reserved(app))
        return render(door, NotifydError(INTERNAL_MESSAGE), close=True).response()


def _reserved(app: FastAPI) -> frozenset[str]:
    from .compat import ntfy  # imports this module

    return ntfy.reserved_names(app)
