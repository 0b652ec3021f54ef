"""Built-in plugin: Web Push (VAPID-signed, RFC 8291-encrypted pushes to browsers).

Hooks: ``startup`` creates the VAPID key pair on first start, ``register_routes``
adds ``/v1/webpush/…`` and ``register_channels`` provides the ``webpush`` kind.
The hooks import their modules when called: pywebpush pulls in aiohttp and
requests (~0.2 s), which CLI commands that merely list plugins should not pay.
"""

from __future__ import annotations

from typing import Any

from notifyd.core.hookspecs import hookimpl


@hookimpl
def startup(services: Any) -> None:
    from .vapid import load_or_create

    # Created here rather than on the first request so that the key exists before
    # anyone can subscribe, and an unwritable data directory shows in the start log.
    load_or_create(services.config.data_path)


@hookimpl
def register_channels() -> list[type]:
    from .channel import WebPushChannel

    return [WebPushChannel]


@hookimpl
def register_routes(app: Any) -> None:
    from .routes import router

    app.include_router(router)
