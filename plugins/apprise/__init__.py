"""The built-in Apprise plugin: the ``apprise`` channel kind (email and 100+ services)."""

from __future__ import annotations

from notifyd.core.hookspecs import hookimpl

from .channel import AppriseChannel

__all__ = ["AppriseChannel", "register_channels"]


@hookimpl
def register_channels() -> list[type]:
    """The ``apprise`` channel kind."""
    return [AppriseChannel]
