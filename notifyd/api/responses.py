"""JSON responses serialized with orjson, the error handlers of the API, and the
error shape of each door (notifyd's, ntfy's, Gotify's) for answers the connection
guard (``server.py``) gives when a handler fails."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from ..core.errors import NotifydError
from .compat import gotify_map
from .compat.ntfy_params import for_status as ntfy_error

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
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "rate_limited",
    503: "unavailable",
}


def error_response(status: int, code: str, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None) -> JSON:  # fmt: skip
    err: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        err["field"] = field
    return JSON({"error": err}, status_code=status, headers=headers)


#: the protocols a request may speak, each with its own error shape
NOTIFYD, NTFY, GOTIFY = "notifyd", "ntfy", "gotify"
INTERNAL_MESSAGE = "internal error; the daemon log has details"
_gotify_names: frozenset[str] | None = None


def door_of(path: str, method: str, reserved: frozenset[str]) -> str:
    """Which protocol a request to ``path`` speaks: Gotify's endpoints, notifyd's own
    names (``reserved``: ``/v1``, the page, plugins), else an ntfy topic. Only called
    when an error has to be shaped, never on the hot path."""
    global _gotify_names
    if _gotify_names is None:
        from .compat import gotify  # imports this module: looked up on first use

        _gotify_names = frozenset(r.path.lstrip("/").split("/", 1)[0] for r in gotify.router.routes)
    first = path.lstrip("/").split("/", 1)[0]
    if first in _gotify_names:
        return GOTIFY
    if first in reserved or (not first and method not in ("POST", "PUT")):
        return NOTIFYD
    return NTFY


def door_error(door: str, status: int, message: str) -> bytes:
    """The JSON body of an error answer in ``door``'s shape: notifyd's
    ``{"error": {"code", "message"}}``, ntfy's ``{"code", "http", "error"}``, Gotify's
    ``{"error", "errorCode", "errorDescription"}``."""
    if door == NTFY:
        return orjson.dumps(ntfy_error(status, message).to_json()) + b"\n"
    if door == GOTIFY:
        return orjson.dumps(gotify_map.error_body(status, message))
    code = "internal" if status >= 500 else _STATUS_CODES.get(status, "error")
    return orjson.dumps({"error": {"code": code, "message": message}})


def _closing(request: Request, headers: dict[str, str] | None) -> dict[str, str] | None:
    """Close the connection after an error to a request that carried a body:
    the body may be unread, and leaving it in the pipe would garble the next
    request on a keep-alive connection."""
    if "content-length" in request.headers or "transfer-encoding" in request.headers:
        return {**(headers or {}), "Connection": "close"}
    return headers


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(NotifydError)
    async def _notifyd(request: Request, exc: NotifydError) -> Response:
        headers = {}
        if exc.retry_after is not None:
            headers["Retry-After"] = str(int(exc.retry_after))
        if exc.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="notifyd"'
        return error_response(
            exc.status, exc.code, exc.message, exc.field, _closing(request, headers or None)
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        err = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in err.get("loc", ()) if p not in ("query", "path", "body", "header")]
        field = ".".join(loc) or None
        msg = err.get("msg", "invalid request")
        return error_response(
            422, "invalid", f"{field}: {msg}" if field else msg, field, _closing(request, None)
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = _STATUS_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        return error_response(
            exc.status_code, code, message, headers=_closing(request, getattr(exc, "headers", None))
        )

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> Response:
        # Starlette raises the exception on after this answer; the connection guard
        # (api/server.py) catches it there and logs it, once.
        door = door_of(request.url.path, request.method, _reserved(app))
        return Response(door_error(door, 500, INTERNAL_MESSAGE), status_code=500,
                        media_type="application/json", headers={"Connection": "close"})  # fmt: skip


def _reserved(app: FastAPI) -> frozenset[str]:
    from .compat import ntfy  # imports this module

    return ntfy.reserved_names(app)
