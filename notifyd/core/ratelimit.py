"""Abuse limits: the publish rate limit (a token bucket per credential) and the
cap on channels per user.

Each publishing token has a bucket of ``publish_burst`` events that refills at
``publish_rate`` events per second; every event of a list takes one. A request
that needs more than its bucket holds is refused whole (:class:`RateLimited`, with
the seconds after which it would pass), so a refused request stores nothing.

Callers that are not limited: admin users and the Unix socket (the operator's own
tools), and everyone when ``publish_rate`` is 0. Callers without a token (a web
session, ntfy's user:password) share one bucket per user.

Memory stays bounded: a bucket that has refilled completely is the same as no
bucket and is forgotten when the table is full; if that is not enough, the least
recently used buckets go (down to 90 % of the table, so the scan stays rare).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from .acl import Principal
from .config import Config
from .errors import Conflict, PayloadTooLarge, RateLimited
from .store import Store

#: buckets kept at most (about 100 bytes each)
MAX_BUCKETS = 50_000


class PublishLimiter:
    """Token buckets keyed by credential. ``clock`` is monotonic seconds."""

    def __init__(self, max_buckets: int = MAX_BUCKETS,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.max_buckets = max_buckets
        self.clock = clock
        #: key → [tokens left, when they were counted]; oldest use first
        self._buckets: OrderedDict[tuple[str, int], list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def charge(self, key: tuple[str, int], events: int, rate: float, burst: int) -> None:
        """Take ``events`` from ``key``'s bucket, or raise without taking any.

        Raises :class:`RateLimited` (``retry_after``: whole seconds until the bucket
        holds enough) or :class:`PayloadTooLarge` if ``events`` is more than a full
        bucket ever holds. ``rate`` 0 means no limit.
        """
        if rate <= 0:
            return
        if events > burst:
            raise PayloadTooLarge(
                f"{events} events in one request are more than this token may publish at "
                f"once (publish_burst = {burst}); split the list",
                field="events",
            )
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            tokens = float(burst)
        else:
            tokens = min(float(burst), bucket[0] + (now - bucket[1]) * rate)
        if tokens < events:
            wait = math.ceil((events - tokens) / rate)
            raise RateLimited(
                f"publishing too fast: this token may publish {rate:g} events/s "
                f"(bursts of {burst}); retry in {wait} s",
                retry_after=max(1, wait),
            )
        if bucket is None:
            if len(self._buckets) >= self.max_buckets:
                self._make_room(now, rate, burst)
            self._buckets[key] = [tokens - events, now]
        else:
            bucket[0], bucket[1] = tokens - events, now
            self._buckets.move_to_end(key)

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


def check_publish(limiter: PublishLimiter, config: Config, principal: Principal,
                  events: int) -> None:  # fmt: skip
    """Charge ``events`` to ``principal`` under the live ``publish_rate``/``publish_burst``."""
    key = bucket_key(principal)
    if key is not None:
        limiter.charge(key, events, config.publish_rate, config.publish_burst)


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
