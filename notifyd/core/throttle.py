"""Failure throttling: slow down guessing (sign-in now; anything keyed later).

Each key (a user name with a client address, a client address) may fail its
limit of times within ``window`` seconds; after that, attempts for that key are
refused with 429 and a ``Retry-After`` until its oldest counted failure ages out
of the window. Success clears the (user, address) key.

The failures are counted by the store (:class:`~notifyd.core.store.LimitStore`),
so that every node of a cluster sees the same counts: a guesser gains nothing
by spreading tries over nodes. :class:`FailureLog` is one process's failures in
memory, which the SQLite engine uses (one process writes its database): a
restart forgets them, which costs a guesser nothing they could not get by
waiting, and keeps the database out of the hot path.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from .errors import RateLimited, Unauthorized
from .store import LimitStore

#: keys tracked at most by a FailureLog; the oldest are forgotten first (bounded
#: memory under a flood)
MAX_KEYS = 50_000

#: failed sign-ins allowed per (user, client address), and per address, in WINDOW s
PER_USER = 5
PER_ADDRESS = 50
WINDOW = 15 * 60


class FailureLog:
    """Failure times per key in this process's memory (``clock``: monotonic
    seconds); the SQLite engine's half of :class:`LimitStore`."""

    def __init__(self, max_keys: int = MAX_KEYS,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.max_keys = max_keys
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    def __len__(self) -> int:
        return len(self._failures)

    def _recent(self, key: str, now: float, window: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def recent(self, limits: dict[str, int], window: float) -> dict[str, float]:
        """See :meth:`LimitStore.recent_failures`."""
        now = self.clock()
        found: dict[str, float] = {}
        for key, limit in limits.items():
            times = self._recent(key, now, window)
            if times is None:
                continue
            wait = 0.0
            if len(times) >= limit:
                # the limit-th newest failure must age out first
                wait = max(0.0, times[len(times) - limit] + window - now)
            found[key] = wait
        return found

    def record(self, limits: dict[str, int], window: float) -> None:
        now = self.clock()
        for key, limit in limits.items():
            times = self._recent(key, now, window)
            if times is None or times.maxlen != limit:
                if times is None and len(self._failures) >= self.max_keys:
                    del self._failures[next(iter(self._failures))]
                times = self._failures[key] = deque(times or (), maxlen=limit)
            times.append(now)

    def clear(self, keys: list[str]) -> None:
        for key in keys:
            self._failures.pop(key, None)


class FailureThrottle:
    """Failures counted per key by ``limits`` (the store) within ``window`` seconds;
    ``message`` is what a refusal says."""

    def __init__(self, limits: LimitStore, window: float, message: str) -> None:
        self.limits = limits
        self.window = window
        self.message = message

    async def check(self, keys: dict[str, int]) -> set[str]:
        """Raise :class:`RateLimited` if any of ``keys`` (key → failures allowed)
        has used up its failures; else return the keys with recent failures."""
        found = await self.limits.recent_failures(keys, self.window)
        wait = max(found.values(), default=0.0)
        if wait > 0:
            raise RateLimited(self.message, retry_after=max(1, math.ceil(wait)))
        return set(found)

    async def failed(self, keys: dict[str, int]) -> None:
        await self.limits.record_failure(keys, self.window)

    async def succeeded(self, keys: list[str]) -> None:
        await self.limits.clear_failures(keys)


class SignInThrottle:
    """Password checks from every door (the web page, ntfy's and Gotify's Basic
    auth), on every node, share these limits, so a guesser gets no more tries
    through one than through another."""

    def __init__(self, limits: LimitStore) -> None:
        self.failures = FailureThrottle(
            limits, WINDOW, "too many failed sign-in attempts; try again later"
        )

    @asynccontextmanager
    async def attempt(self, name: str, address: str) -> AsyncIterator[None]:
        """Wrap one password check: refuse with :class:`RateLimited` while either
        key is used up, count an :class:`Unauthorized` from the body as a failure,
        and clear the (user, address) key on success."""
        # bounded, so that a key always fits the engine's index (names and
        # addresses this long are not valid anyway)
        name, address = name[:64], address[:128]
        user_key = f"signin:user:{name}@{address}"
        keys = {user_key: PER_USER, f"signin:address:{address}": PER_ADDRESS}
        recent = await self.failures.check(keys)
        try:
            yield
        except Unauthorized:
            await self.failures.failed(keys)
            raise
        if user_key in recent:  # a success costs nothing more without failures
            await self.failures.succeeded([user_key])
