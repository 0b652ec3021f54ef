"""The FastAPI application (everything but the live streams, see ``streams.py``)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from .. import __version__
from ..core.services import Services
from .compat import gotify, ntfy, ntfy_account
from .cors import CORSMiddleware
from .responses import JSON, install_error_handlers
from .routes import (
    accounts,
    admin,
    attachments,
    channels,
    events,
    hooks,
    oidc,
    preferences,
    session,
    stream,
    system,
    web,
)

#: The error object every 4xx/5xx of the API carries (``responses.render_notifyd``).
ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "additionalProperties": False,
            "properties": {
                "code": {"type": "string", "description": "stable slug, e.g. `invalid`"},
                "message": {"type": "string", "description": "what went wrong, for people"},
                "field": {"type": "string", "description": "the offending field, if one"},
            },
        }
    },
}

_ERROR_RESPONSES = {
    "422": "Invalid field: the error names it (`field`)",
    "4XX": "Client error: 400 malformed, 401 no or bad credentials, 403 not allowed, "
    "404 unknown, 405 wrong method, 409 conflict, 413 too large, 415 wrong content type, "
    "429 rate-limited (see `Retry-After`)",
    "503": "Overloaded or shutting down: retry later",
}


def document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Give every operation of the OpenAPI document the error responses it can send,
    with notifyd's error object instead of FastAPI's validation error."""
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = ERROR_SCHEMA
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    content = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            for status, description in _ERROR_RESPONSES.items():
                if status not in responses or status == "422":
                    responses[status] = {"description": description, "content": content}
            for status, response in responses.items():
                # errors a route documents itself (401, 409, 413, 429 …) have the same shape
                if str(status)[0] in "45":
                    response.setdefault("content", content)
    return schema


def make_app(svc: Services) -> FastAPI:
    app = FastAPI(
        title="notifyd",
        version=__version__,
        description="Self-hosted notification daemon. Authenticate with `Authorization: Bearer nfy_…` "
        "(or, from the web page, the session cookie of `POST /v1/session`). Every error is "
        'JSON `{"error": {"code", "message", "field"?}}`.',
        openapi_url="/v1/openapi.json",
        # Swagger UI would load its scripts from a CDN into a page on this origin;
        # the OpenAPI document is enough for tools, docs/api.md for people.
        docs_url=None,
        redoc_url=None,
        default_response_class=JSON,
    )
    app.state.services = svc
    install_error_handlers(app)
    # answers other origins may read (cors_origins); the publish fast path and the
    # raw SSE stream add the same headers through api/cors.py
    app.add_middleware(CORSMiddleware, svc=svc)
    app.include_router(events.router)
    app.include_router(accounts.router)
    app.include_router(channels.router)
    app.include_router(preferences.router)
    app.include_router(stream.router)
    app.include_router(system.router)
    app.include_router(session.router)
    app.include_router(oidc.router)
    app.include_router(admin.router)
    app.include_router(hooks.router)
    app.include_router(attachments.router)
    app.include_router(ntfy_account.router)
    app.include_router(web.router)
    # last: ntfy's topic routes match any other top-level path
    app.include_router(gotify.router)
    app.include_router(ntfy.router)

    def openapi() -> dict[str, Any]:
        # built on first request, after plugins have added their routes
        if app.openapi_schema is None:
            app.openapi_schema = document_errors(FastAPI.openapi(app))
        return app.openapi_schema

    # FastAPI's documented way to customise the schema is to replace app.openapi,
    # which its stubs declare as a method
    app.openapi = openapi  # type: ignore[method-assign]
    return app
