"""The FastAPI application (everything but the live streams, see ``streams.py``)."""

from __future__ import annotations

from fastapi import FastAPI

from .. import __version__
from ..core.services import Services
from .compat import gotify, ntfy
from .responses import JSON, install_error_handlers
from .routes import accounts, admin, channels, events, preferences, session, stream, system, web


def make_app(svc: Services) -> FastAPI:
    app = FastAPI(
        title="notifyd",
        version=__version__,
        description="Self-hosted notification daemon. Authenticate with `Authorization: Bearer nfy_…` "
        "(or, from the web page, the session cookie of `POST /v1/session`).",
        openapi_url="/v1/openapi.json",
        docs_url="/v1/docs",
        redoc_url=None,
        default_response_class=JSON,
    )
    app.state.services = svc
    install_error_handlers(app)
    app.include_router(events.router)
    app.include_router(accounts.router)
    app.include_router(channels.router)
    app.include_router(preferences.router)
    app.include_router(stream.router)
    app.include_router(system.router)
    app.include_router(session.router)
    app.include_router(admin.router)
    app.include_router(web.router)
    # last: ntfy's topic routes match any other top-level path
    app.include_router(gotify.router)
    app.include_router(ntfy.router)
    return app
