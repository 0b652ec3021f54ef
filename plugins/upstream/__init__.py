"""Built-in plugin: poll requests to an upstream ntfy server (``upstream_base_url``).

Provides the ``ntfy-upstream`` channel kind, which wakes the stock ntfy iOS app
through an upstream such as ntfy.sh without sending it any content; see
:mod:`notifyd.core.upstream` for how events reach it and ``docs/mobile.md`` for
the privacy trade-off. Users cannot add channels of this kind: the daemon keeps
the one it needs.
"""

from __future__ import annotations

from notifyd.core.hookspecs import hookimpl


@hookimpl
def register_channels() -> list[type]:
    from .channel import UpstreamChannel

    return [UpstreamChannel]
