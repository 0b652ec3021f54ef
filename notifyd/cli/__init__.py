"""The ``notifyd`` command line: the click group ``main`` (the console entry point
``notifyd = "notifyd.cli:main"``) and its commands, one module per area.

- :mod:`notifyd.cli.app`: the group, ``serve``, ``send``, ``tail``, ``history``, ``read``, ``tui``
- :mod:`notifyd.cli.admin`: ``users``, ``tokens``, ``acl``
- :mod:`notifyd.cli.delivery`: ``channels``, ``deliveries``, ``stats``, ``prefs``, ``plugins``
- :mod:`notifyd.cli.ops`: ``backup``, ``export``, ``import``, ``doctor``
- :mod:`notifyd.cli.config`: ``config show``
- :mod:`notifyd.cli.options`: shared option bundles and output helpers
- :mod:`notifyd.cli.format`: tables and human formatting (also used by the TUI)

``main`` is loaded on first access, so importing :mod:`notifyd.cli.format` (as the
TUI does) does not build the whole command tree or import click.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from notifyd.cli.app import main

__all__ = ["main"]


def __getattr__(name: str) -> Any:
    if name == "main":
        from notifyd.cli.app import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
