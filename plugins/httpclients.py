"""What the HTTP channels share: httpx clients made on first use, and
``Retry-After`` read one way.

Clients are made on first use.

A client loads its CA certificates when it is made (about 0.1 s of CPU with
certifi's bundle), and every process that loads the channel plugins makes the
channel objects: the daemon and the delivery worker, in every start, whether or
not anything is ever sent through that kind. So channels keep a :class:`Pools`
and get their clients from it when they send.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from email.utils import parsedate_to_datetime

import httpx


class Pools:
    """Clients made by ``make`` on first use, one per key (e.g. "may reach private
    addresses": a connection opened for such a send must not be reused by one that
    may not)."""

    def __init__(self, make: Callable[[], httpx.AsyncClient]) -> None:
        self._make = make
        self._made: dict[Hashable, httpx.AsyncClient] = {}

    @classmethod
    def standard(cls, timeout: float, connections: int) -> Pools:
        """The clients most channels want: ``timeout`` per request (5 s to connect),
        no redirects (a push service or upstream answers, it does not send us
        elsewhere), notifyd's User-Agent, at most ``connections`` connections."""
        from notifyd import __version__

        return cls(
            lambda: httpx.AsyncClient(
                timeout=httpx.Timeout(timeout, connect=5.0),
                follow_redirects=False,
                headers={"User-Agent": f"notifyd/{__version__}"},
                limits=httpx.Limits(max_connections=connections),
            )
        )

    def get(self, key: Hashable = None) -> httpx.AsyncClient:
        client = self._made.get(key)
        if client is None:
            client = self._made[key] = self._make()
        return client

    async def aclose(self) -> None:
        made, self._made = self._made, {}
        for client in made.values():
            await client.aclose()


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from ``now``: delay-seconds (capped at a day) or
    an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(min(int(value[:9]), 86400))
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
