"""A plugin whose channel registration itself fails."""

from notifyd.core.hookspecs import hookimpl


@hookimpl
def register_channels() -> list[type]:
    raise RuntimeError("cannot register")
