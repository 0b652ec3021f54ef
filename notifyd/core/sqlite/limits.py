"""The limit role (:class:`~notifyd.core.store.LimitStore`) for the SQLite engine:
in this process's memory.

One process writes an SQLite database, so memory is exact here: there are no
other nodes to count with. It also keeps the database out of the hot path (a
publish or a password check costs no extra write), and a restart forgets the
state, which gives a guesser or a publisher nothing they could not get by
waiting. The buckets are :class:`~notifyd.core.ratelimit.PublishLimiter`'s and
the failures :class:`~notifyd.core.throttle.FailureLog`'s, both bounded.

:class:`SQLiteLimitStore` is a mixin of :class:`~notifyd.core.sqlite.store.SQLiteStore`;
its state is made on first use, so it needs nothing from the store's constructor.
"""

from __future__ import annotations

from ..ratelimit import PublishLimiter
from ..store import LimitStore
from ..throttle import FailureLog


class SQLiteLimitStore(LimitStore):
    """Limits counted in memory, with the monotonic clock. Every method runs on
    the trio thread without awaiting, so each call is atomic."""

    _rate_buckets: PublishLimiter | None = None
    _failure_log: FailureLog | None = None

    def _buckets(self) -> PublishLimiter:
        if self._rate_buckets is None:
            self._rate_buckets = PublishLimiter()
        return self._rate_buckets

    def _failures(self) -> FailureLog:
        if self._failure_log is None:
            self._failure_log = FailureLog()
        return self._failure_log

    async def charge_rate(self, key: str, cost: int, rate: float, burst: int) -> float:
        if rate <= 0 or not 0 < cost <= burst:
            raise ValueError(
                f"charge_rate needs rate > 0 and 0 < cost <= burst ({cost}, {rate}, {burst})"
            )
        return self._buckets().take(key, cost, rate, burst)

    async def recent_failures(self, limits: dict[str, int], window: float) -> dict[str, float]:
        return self._failures().recent(limits, window)

    async def record_failure(self, limits: dict[str, int], window: float) -> None:
        self._failures().record(limits, window)

    async def clear_failures(self, keys: list[str]) -> None:
        self._failures().clear(keys)


__all__ = ["SQLiteLimitStore"]
