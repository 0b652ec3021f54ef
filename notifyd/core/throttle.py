"""Failure throttling: slow down guessing (sign-in now; anything keyed later).

Each key (a user name, a client address) may fail ``limit`` times within
``window`` seconds; after that, attempts for that key are refused with 429 and a
``Retry-After`` until its oldest failure ages out of the window. Success clears
the key. State is in memory: a restart forgets it, which costs a guesser nothing
they could not get by waiting, and keeps the database out of the hot path.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from .errors import RateLimited

#: keys tracked at most; the oldest are forgotten first (bounded memory under a flood)
MAX_KEYS = 50_000


class FailureThrottle:
    def __init__(
        self, limit: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def check(self, *keys: str) -> None:
        """Raise :class:`RateLimited` if any of ``keys`` has used up its failures."""
        now = self.clock()
        for key in keys:
            times = self._recent(key, now)
            if times is not None and len(times) >= self.limit:
                wait = times[0] + self.window - now
                raise RateLimited(
                    "too many failed sign-in attempts; try again later",
                    retry_after=max(1, math.ceil(wait)),
                )

    def failed(self, *keys: str) -> None:
        now = self.clock()
        for key in keys:
            times = self._recent(key, now)
            if times is None:
                if len(self._failures) >= MAX_KEYS:
                    del self._failures[next(iter(self._failures))]
                times = self._failures[key] = deque(maxlen=self.limit)
            times.append(now)

    def succeeded(self, *keys: str) -> None:
        for key in keys:
            self._failures.pop(key, None)
