"""Abuse limits: the publish rate limit (a token bucket per credential) and the
cap on channels per user.

Each publishing token has a bucket of ``publish_burst`` events that refills at
``publish_rate`` events per second; every event of a list takes one. A request
that needs more than its bucket holds is refused whole (:class:`RateLimited`, with
the seconds after which it would pass), so a refused request stores nothing.

Callers that are not limited: admin users and the Unix socket (the operator's own
tools), and everyone when ``publish_rate`` is 0. Callers without a token (a web
session, ntfy's user:password) share one bucket per user.

The buckets are kept by the store (:class:`~notifyd.core.store.LimitStore`), so
that every node of a cluster charges the same bucket: a publisher gains nothing
by spreading its requests over nodes. :func:`check_publish` is the front end
every publishing door calls. :class:`PublishLimiter` is one process's buckets in
memory, which the SQLite engine uses (one process writes its database).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

from .acl import Principal
from .config import Config
from .errors import Conflict, PayloadTooLarge, RateLimited
from .store import LimitStore, Store

#: buckets kept at most (about 100 bytes each)
MAX_BUCKETS = 50_000


def too_many(events: int, burst: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"{events} events in one request are more than this token may publish at "
        f"once (publish_burst = {burst}); split the list",
        field="events",
    )


def too_fast(wait: float, rate: float, burst: int) -> RateLimited:
    seconds = max(1, math.ceil(wait))
    return RateLimited(
        f"publishing too fast: this token may publish {rate:g} events/s "
        f"(bursts of {burst}); retry in {seconds} s",
        retry_after=seconds,
    )


class PublishLimiter:
    """Token buckets in this process's memory, keyed by anything hashable.
    ``clock`` is monotonic seconds.

    Memory stays bounded: a bucket that has refilled completely is the same as no
    bucket and is forgotten when the table is full; if that is not enough, the
    least recently used buckets go (down to 90 % of the table, so the scan stays
    rare)."""

    def __init__(self, max_buckets: int = MAX_BUCKETS,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.max_buckets = max_buckets
        self.clock = clock
        #: key → [tokens left, when they were counted]; oldest use first
        self._buckets: OrderedDict[Hashable, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: Hashable, events: int, rate: float, burst: int) -> float:
        """Take ``events`` from ``key``'s bucket: 0.0 when taken, else the seconds
        until the bucket holds enough (nothing taken). Needs ``rate > 0`` and
        ``events <= burst``."""
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            tokens = float(burst)
        else:
            tokens = min(float(burst), bucket[0] + (now - bucket[1]) * rate)
        if tokens < events:
            return (events - tokens) / rate
        if bucket is None:
            if len(self._buckets) >= self.max_buckets:
                self._make_room(now, rate, burst)
            self._buckets[key] = [tokens - events, now]
        else:
            bucket[0], bucket[1] = tokens - events, now
            self._buckets.move_to_end(key)
        return 0.0

    def charge(self, key: Hashable, events: int, rate: float, burst: int) -> None:
        """Take ``events`` from ``key``'s bucket, or raise without taking any.

        Raises :class:`RateLimited` (``retry_after``: whole seconds until the bucket
        holds enough) or :class:`PayloadTooLarge` if ``events`` is more than a full
        bucket ever holds. ``rate`` 0 means no limit.
        """
        if rate <= 0:
            return
        if events > burst:
            raise too_many(events, burst)
        wait = self.take(key, events, rate, burst)
        if wait > 0:
            raise too_fast(wait, rate, burst)

    def _make_room(self, now: float, rate: float, burst: int) -> None:
        full = [
            k for k, (tokens, at) in self._buckets.items() if tokens + (now - at) * rate >= burst
        ]
        for key in full:
            del self._buckets[key]
        # down to 90 %, so that the scan above runs once per many new buckets
        while len(self._buckets) >= self.max_buckets * 0.9:
            self._buckets.popitem(last=False)


def bucket_key(principal: Principal) -> tuple[str, int] | None:
    """The bucket ``principal`` publishes from, or None if it is not limited."""
    if principal.via == "socket" or principal.is_admin:
        return None
    if principal.token_id is not None:
        return ("token", principal.token_id)
    return ("user", principal.user_id)


async def check_publish(limits: LimitStore, config: Config, principal: Principal,
                        events: int) -> None:  # fmt: skip
    """Charge ``events`` to ``principal``'s bucket under the live ``publish_rate`` /
    ``publish_burst``, counted by ``limits`` (the store: one bucket for every node).

    Raises :class:`RateLimited` (``retry_after`` in whole seconds) or
    :class:`PayloadTooLarge` when ``events`` is more than a full bucket holds."""
    key = bucket_key(principal)
    rate, burst = config.publish_rate, config.publish_burst
    if key is None or rate <= 0:
        return
    if events > burst:
        raise too_many(events, burst)
    wait = await limits.charge_rate(f"publish:{key[0]}:{key[1]}", events, rate, burst)
    if wait > 0:
        raise too_fast(wait, rate, burst)


async def require_channel_room(store: Store, config: Config, user_id: int) -> None:
    """Raise :class:`Conflict` (409, ``too_many_channels``) if ``user_id`` already has
    ``max_channels_per_user`` channels. Two concurrent additions may both pass."""
    cap = config.max_channels_per_user
    if len(await store.list_channels(user_id)) >= cap:
        raise Conflict(
            f"this user has {cap} channels, the most allowed (max_channels_per_user); "
            "remove one first",
            code="too_many_channels",
        )
