"""Plugins that misbehave, to show they cannot take the daemon down.

``register_channels`` of :data:`broken_registration` raises; the ``explosive``
channel kind raises a plain exception from ``send``; its ``startup`` hook raises.
"""

from __future__ import annotations

from typing import ClassVar

from notifyd.core.channels import Channel, Delivery
from notifyd.core.hookspecs import hookimpl


class ExplosiveChannel(Channel):
    kind: ClassVar[str] = "explosive"

    async def send(self, delivery: Delivery) -> None:
        raise RuntimeError("kaboom from a third-party plugin")


@hookimpl
def register_channels() -> list[type]:
    return [ExplosiveChannel]


@hookimpl
def startup(services: object) -> None:
    raise RuntimeError("startup hook crashed")
