"""The limit role (:class:`~notifyd.core.store.LimitStore`) on PostgreSQL: limits
counted once for the whole cluster.

Rate limits are GCRA (the generic cell rate algorithm, a token bucket kept as one
number): ``rate_limits.tat`` is a key's *theoretical arrival time*, the moment
its bucket will be full again. With ``T = 1 / rate`` seconds per unit, taking
``cost`` units at ``now`` moves it to ``max(tat, now) + cost·T``, which is allowed
while that is at most ``now + burst·T`` (the bucket held enough). One statement
does it, ``INSERT … ON CONFLICT DO UPDATE … WHERE allowed``, so that two nodes
charging one key at once take the row lock one after the other and each sees
the other's charge; a refused charge updates nothing and its answer (the seconds
until it would pass) comes from the same statement. A row whose ``tat`` is in the
past is the same as no row (a full bucket).

Failures (sign-in) are one ``failures(key, at)`` row each, counted over a
sliding window by the ``(key, at)`` index.

Every time is the database server's clock (``clock_timestamp()``, as epoch
seconds), never a node's, so skew between the nodes' clocks changes nothing.
Writes commit without waiting for the WAL flush (see ``_CLOCK``): one statement,
no extra fsync, per charge.

Tables stay bounded: recording a failure deletes that key's failures that left
the window, and about once a minute a node deletes the rows that no longer
limit anything (rate rows in the past, failures older than the longest window
it has counted with), in the same worker call as a charge or a failure.

:class:`PostgresLimitStore` is a mixin composed with ``PostgresEventStore``,
whose connection pool and worker threads (``_run``) it uses.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import psycopg

from ..store import LimitStore
from .events import Conn

T = TypeVar("T")
log = logging.getLogger("notifyd.store")

#: seconds between a node's sweeps of rows that no longer limit anything
PRUNE_EVERY = 60.0

# Every statement that writes starts from this CTE: the server's clock, and
# synchronous_commit off for its own transaction (an autocommitted statement), so
# that a charge does not wait for the WAL to reach the disk. Limit state is not
# worth a flush: a server crash forgets at most the last fraction of a second of
# charges, which gives a publisher or a guesser no more than waiting would.
_CLOCK = (
    "c AS (SELECT extract(epoch FROM clock_timestamp())::float8 AS now, "
    "set_config('synchronous_commit', 'off', true) AS async_commit)"
)

# %(cost)s and %(tolerance)s are seconds: cost / rate and burst / rate. The main
# SELECT reads the snapshot taken before the upsert: on a refusal, the tat that
# refused it (NULL only if another node created the row meanwhile).
_CHARGE = f"""
WITH {_CLOCK},
charged AS (
    INSERT INTO rate_limits AS r (key, tat)
    SELECT %(key)s, c.now + %(cost)s FROM c
    ON CONFLICT (key) DO UPDATE
        SET tat = greatest(r.tat, (SELECT now FROM c)) + %(cost)s
        WHERE greatest(r.tat, (SELECT now FROM c)) + %(cost)s
            <= (SELECT now FROM c) + %(tolerance)s
    RETURNING r.tat
)
SELECT (SELECT count(*) FROM charged), (SELECT tat FROM rate_limits WHERE key = %(key)s), c.now
FROM c
"""

# per key with a failure in the window: the limit-th newest failure's time + the
# window - now, i.e. the seconds until the key is under its limit (NULL: it is)
_RECENT = """
WITH c AS (SELECT extract(epoch FROM clock_timestamp())::float8 AS now)
SELECT l.key, (
    SELECT f.at FROM failures f
    WHERE f.key = l.key AND f.at > c.now - %(window)s
    ORDER BY f.at DESC OFFSET l.n - 1 LIMIT 1
) + %(window)s - c.now
FROM c, unnest(%(keys)s::text[], %(limits)s::int[]) AS l (key, n)
WHERE EXISTS (SELECT 1 FROM failures f WHERE f.key = l.key AND f.at > c.now - %(window)s)
"""

_RECORD = f"""
WITH {_CLOCK},
expired AS (
    DELETE FROM failures
    WHERE key = ANY(%(keys)s) AND at <= (SELECT now FROM c) - %(window)s
)
INSERT INTO failures (key, at) SELECT k, c.now FROM c, unnest(%(keys)s::text[]) AS k
"""


class PostgresLimitStore(LimitStore):
    """The limit role; compose with ``PostgresEventStore`` (first in the bases: it
    gives ``_run``)."""

    if TYPE_CHECKING:

        async def _run(self, fn: Callable[[Conn], T]) -> T: ...

    #: when this node last swept (monotonic); the longest failure window it used
    _limits_swept_at: float = 0.0
    _failure_window: float = 0.0

    def _sweep_due(self) -> bool:
        now = time.monotonic()
        if now - self._limits_swept_at < PRUNE_EVERY:
            return False
        self._limits_swept_at = now
        return True

    def _sweep(self, conn: Conn) -> None:
        """Delete what no longer limits anything; a failure is logged and the
        next sweep tries again (the charge or failure it follows stands)."""
        try:
            conn.execute(f"WITH {_CLOCK} DELETE FROM rate_limits USING c WHERE tat < c.now")
            if self._failure_window > 0:
                conn.execute(
                    f"WITH {_CLOCK} DELETE FROM failures USING c WHERE at <= c.now - %s",
                    (self._failure_window,),
                )
        except psycopg.Error:
            log.warning("sweeping rate_limits and failures failed", exc_info=True)

    async def charge_rate(self, key: str, cost: int, rate: float, burst: int) -> float:
        if rate <= 0 or not 0 < cost <= burst:
            raise ValueError(
                f"charge_rate needs rate > 0 and 0 < cost <= burst ({cost}, {rate}, {burst})"
            )
        seconds, tolerance = cost / rate, burst / rate
        params = {"key": key, "cost": seconds, "tolerance": tolerance}
        sweep = self._sweep_due()

        def fn(conn: Conn) -> float:
            row = conn.execute(_CHARGE, params).fetchone()
            if sweep:
                self._sweep(conn)
            assert row is not None
            charged, tat, now = row
            if charged:
                return 0.0
            if tat is None:  # made by another node after this statement's snapshot
                return seconds
            wait = float(tat) + seconds - (float(now) + tolerance)
            # raced by another node's charge: at least the time this one costs
            return wait if wait > 0 else seconds

        return await self._run(fn)

    async def recent_failures(self, limits: dict[str, int], window: float) -> dict[str, float]:
        if not limits:
            return {}
        params = {"keys": list(limits), "limits": list(limits.values()), "window": window}

        def fn(conn: Conn) -> dict[str, float]:
            rows = conn.execute(_RECENT, params).fetchall()
            return {str(key): max(0.0, float(wait or 0.0)) for key, wait in rows}

        return await self._run(fn)

    async def record_failure(self, limits: dict[str, int], window: float) -> None:
        if not limits:
            return
        self._failure_window = max(self._failure_window, window)
        params = {"keys": list(limits), "window": window}
        sweep = self._sweep_due()

        def fn(conn: Conn) -> None:
            conn.execute(_RECORD, params)
            if sweep:
                self._sweep(conn)

        await self._run(fn)

    async def clear_failures(self, keys: list[str]) -> None:
        if not keys:
            return

        def fn(conn: Conn) -> None:
            conn.execute(
                f"WITH {_CLOCK} DELETE FROM failures USING c WHERE key = ANY(%s)", (list(keys),)
            )

        await self._run(fn)


__all__ = ["PostgresLimitStore"]
