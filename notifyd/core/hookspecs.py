"""The plugin hooks of notifyd (pluggy). Built-in channels use exactly these.

A plugin is a module or object with functions named like the hooks below,
decorated with ``notifyd.core.hookspecs.hookimpl``; third-party plugins register
it under the ``notifyd`` entry-point group.
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("notifyd")
hookimpl = pluggy.HookimplMarker("notifyd")


@hookspec
def register_channels() -> list[type]:
    """Return Channel subclasses (see notifyd.core.channels.Channel) this plugin provides."""


@hookspec
def register_commands(cli: Any) -> None:
    """Add click commands to the ``notifyd`` command group ``cli``."""


@hookspec
def register_routes(app: Any) -> None:
    """Add HTTP routes to the FastAPI app (under /v1/<plugin>/ by convention)."""


@hookspec
def startup(services: Any) -> None:
    """Called once when the daemon starts, before it serves (create keys, check config)."""
