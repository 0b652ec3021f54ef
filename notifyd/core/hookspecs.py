"""The plugin hooks of notifyd (pluggy). Built-in channels use exactly these.

A plugin is a module or object with functions named like the hooks below,
decorated with ``notifyd.core.hookspecs.hookimpl``; third-party plugins register
it under the ``notifyd`` entry-point group.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .services import Services

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
def startup(services: Services) -> None:
    """Called once when the daemon starts, before it serves (create keys, check config).

    ``services`` is the daemon's wiring (:class:`notifyd.core.services.Services`);
    the same object is handed to each channel kind's constructor. A plugin keeps
    its own state in its own module or channel objects, not on ``services``."""
