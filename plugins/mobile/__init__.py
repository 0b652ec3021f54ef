"""Built-in plugin: native mobile push (FCM and APNs) and device registration.

A phone app registers its push token at ``/v1/devices`` (:mod:`.devices`); the
device becomes a channel of kind ``fcm`` (:mod:`.fcm`, Firebase Cloud Messaging,
for Android and for iOS through Firebase) or ``apns`` (:mod:`.apns`, Apple's
service directly), which preferences and delivery treat like any other channel.
:mod:`.payload` builds what both say from an event. ``notifyd devices`` lists and
removes devices (:mod:`.cli`).

The hooks import their modules when called, so that CLI commands that merely list
plugins do not pay for httpx, google-auth or FastAPI.
"""

from __future__ import annotations

from typing import Any

from notifyd.core.hookspecs import hookimpl


@hookimpl
def register_channels() -> list[type]:
    from .apns import ApnsChannel
    from .fcm import FcmChannel

    return [FcmChannel, ApnsChannel]


@hookimpl
def register_routes(app: Any) -> None:
    from .devices import router

    app.include_router(router)


@hookimpl
def register_commands(cli: Any) -> None:
    from .cli import devices

    cli.add_command(devices)
