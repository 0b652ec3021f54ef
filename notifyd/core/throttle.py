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
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .errors import RateLimited, Unauthorized

#: keys tracked at most; the oldest are forgotten first (bounded memory under a flood)
MAX_KEYS = 50_000

#: failed sign-ins allowed per (user, client address), and per address, in WINDOW s
PER_USER = 5
PER_ADDRESS = 50
WINDOW = 15 * 60


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


class SignInThrottle:
    """Password checks from every door (the web page, ntfy's and Gotify's Basic
    auth) share these limits, so a guesser gets no more tries through one than
    through another."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_user = FailureThrottle(PER_USER, WINDOW, clock)
        self.per_address = FailureThrottle(PER_ADDRESS, WINDOW, clock)

    @contextmanager
    def attempt(self, name: str, address: str) -> Iterator[None]:
        """Wrap one password check: refuse with :class:`RateLimited` while either
        key is used up, count an :class:`Unauthorized` from the body as a failure,
        and clear the (user, address) key on success."""
        user_key = f"{name}@{address}"
        self.per_user.check(user_key)
        self.per_address.check(address)
        try:
            yield
        except Unauthorized:
            self.per_user.failed(user_key)
            self.per_address.failed(address)
            raise
        self.per_user.succeeded(user_key)
