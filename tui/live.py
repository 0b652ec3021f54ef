"""The live feed: the daemon's SSE stream, read by an async Textual worker.

:meth:`LiveFeed.run` is one coroutine that the app runs as a worker (``run_worker``,
group ``live``) on the app's own asyncio loop. It talks to the daemon with an
``httpx.AsyncClient`` built by :meth:`notifyd.client.Client.async_http` (the Unix
socket or TCP with a token, resolved exactly as for the CLI) and:

* follows ``GET /v1/stream/sse``, resuming with the ``Last-Event-ID`` header set to
  the newest event id it has posted, so a reconnection replays what was missed,
  once; ids it has already posted are dropped all the same;
* posts :class:`LiveFeed.Frame` (``event`` and ``state`` frames) and
  :class:`LiveFeed.StatusChanged` (connecting, connected, reconnecting with the
  reason and the delay, failed) to the app;
* reconnects after a drop, a ``resync`` frame or a failed attempt, with one
  :class:`Backoff` (exponential with jitter, capped; reset once a connection has
  stayed up for :data:`HEALTHY_AFTER` seconds). A 4xx other than 429 (a bad token,
  no ``subscribe`` scope) is final: the state becomes ``failed``.

Stopping is cancelling the worker: the cancellation ends the pending read or sleep,
and the ``async with`` blocks close the response and the client. Nothing runs in a
thread.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import httpx
from textual.message import Message
from textual.message_pump import MessagePump

from notifyd.client import BACKOFF_MAX, BACKOFF_MIN, Client, ClientError

State = Literal["idle", "connecting", "connected", "reconnecting", "failed"]

#: seconds a connection must stay up before the back-off starts again from its minimum
HEALTHY_AFTER = 5.0
#: event ids remembered to drop a frame posted already (a replay that overlaps)
SEEN_IDS = 4096


@dataclass(frozen=True)
class ConnectionStatus:
    """Where the live stream stands.

    ``connects`` counts successful connections: more than one means the feed has
    reconnected (and resumed with ``Last-Event-ID``). ``reason`` says why it is not
    connected; ``retry_in`` is the delay before the next attempt, in seconds.
    """

    state: State = "idle"
    reason: str = ""
    retry_in: float | None = None
    connects: int = 0
    cursor: int | None = None


class Backoff:
    """Delays between connection attempts: ``initial`` × 2ⁿ, at most ``cap``, each
    shortened by up to ``jitter`` (a fraction) at random so that clients dropped by
    one restart do not all come back in the same instant."""

    def __init__(
        self,
        initial: float = BACKOFF_MIN,
        cap: float = BACKOFF_MAX,
        jitter: float = 0.25,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.initial, self.cap, self.jitter, self.rand = initial, cap, jitter, rand
        self.attempts = 0

    def next(self) -> float:
        """The delay before the next attempt (and count the attempt)."""
        base = min(self.cap, self.initial * 2 ** min(self.attempts, 32))
        self.attempts += 1
        return base * (1 - self.jitter * self.rand())

    def reset(self) -> None:
        self.attempts = 0


class _Resync(Exception):
    """The daemon sent a ``resync`` frame and is closing the stream."""


class LiveFeed:
    """Follows the stream and posts :class:`LiveFeed.Frame` and
    :class:`LiveFeed.StatusChanged` messages to ``target`` (the app).

    Args:
        target: where messages go.
        client: the app's :class:`Client`; the feed takes its connection settings
            (:meth:`Client.async_http`) and its error messages from it, never its
            synchronous connection.
        topics: stream only these topics (names or ``*`` patterns); all by default.
    """

    @dataclass
    class Frame(Message):
        """A stream frame: ``{"type": "event", "event": {...}}`` or a ``state`` frame."""

        frame: dict

    @dataclass
    class StatusChanged(Message):
        """The connection changed state."""

        status: ConnectionStatus

    def __init__(self, target: MessagePump, client: Client, topics: tuple[str, ...] = ()) -> None:
        self.target = target
        self.client = client
        self.topics = topics
        self.status = ConnectionStatus()
        self.backoff = Backoff()
        #: seconds a connection must stay up to count as healthy (resets the back-off)
        self.healthy_after = HEALTHY_AFTER
        #: how the feed waits between attempts (tests hold a reconnection with it)
        self.sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
        self._seen: dict[int, None] = {}  # insertion-ordered set of posted event ids
        self._opened_at: float | None = None  # when the current connection was accepted

    async def run(self, since: int | None) -> None:
        """Follow the stream after event ``since`` (None: from the newest event now)
        until cancelled, or until the daemon refuses the stream for good."""
        self._set_status(ConnectionStatus("connecting", cursor=since))
        async with self.client.async_http() as http:
            while True:
                self._opened_at = None
                try:
                    if self.status.cursor is None:
                        self._set_status(replace(self.status, cursor=await self._newest(http)))
                    await self._follow(http)
                    reason = "the stream ended"
                except _Resync as exc:
                    reason = f"the daemon asked to resync ({exc})"
                except ClientError as exc:
                    if not exc.retryable:
                        self._set_status(
                            replace(self.status, state="failed", reason=str(exc), retry_in=None)
                        )
                        return
                    reason = str(exc)
                opened_at = self._opened_at
                if opened_at is not None and time.monotonic() - opened_at >= self.healthy_after:
                    self.backoff.reset()
                delay = self.backoff.next()
                self._set_status(
                    replace(self.status, state="reconnecting", reason=reason, retry_in=delay)
                )
                await self.sleep(delay)

    async def _newest(self, http: httpx.AsyncClient) -> int:
        """The newest event id the caller can see now (0: none): where to start when
        the app has no cursor, so that a reconnection leaves no gap."""
        params = {"limit": 1, "archived": "include"}
        page = await self._json(http, "/v1/events", params)
        events = page.get("events") if isinstance(page, dict) else None
        return int(events[0]["id"]) if events else 0

    async def _json(self, http: httpx.AsyncClient, path: str, params: dict) -> Any:
        try:
            resp = await http.get(path, params=params)
        except httpx.TransportError as exc:
            raise self.client.transport_error(exc) from exc
        return self.client.answer(resp, f"GET {path}")

    async def _follow(self, http: httpx.AsyncClient) -> None:
        """One connection: post its frames until it ends (returns) or fails (raises)."""
        headers = {"Accept": "text/event-stream"}
        cursor = self.status.cursor
        if cursor is not None:
            headers["Last-Event-ID"] = str(cursor)
        params = {"topics": ",".join(self.topics)} if self.topics else None
        # no read timeout: keepalives come at the daemon's pace
        timeout = httpx.Timeout(self.client.timeout, read=None)
        try:
            async with http.stream(
                "GET", "/v1/stream/sse", params=params, headers=headers, timeout=timeout
            ) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    raise self.client.http_error(resp)
                self._opened_at = time.monotonic()
                status = self.status
                self._set_status(
                    ConnectionStatus(
                        "connected", connects=status.connects + 1, cursor=status.cursor
                    )
                )
                data: list[str] = []
                async for line in resp.aiter_lines():
                    if line:
                        if line.startswith(":"):
                            continue  # an SSE comment
                        name, _, value = line.partition(":")
                        if name == "data":
                            data.append(value[1:] if value.startswith(" ") else value)
                        continue
                    if data:
                        self._frame("\n".join(data))
                        data = []
        except httpx.TransportError as exc:
            raise self.client.transport_error(exc) from exc

    def _frame(self, data: str) -> None:
        try:
            frame = json.loads(data)
        except ValueError:
            return  # one garbled frame does not end the feed
        if not isinstance(frame, dict):
            return
        kind = frame.get("type")
        if kind == "resync":
            raise _Resync(str(frame.get("reason") or "behind"))
        if kind == "event":
            eid = (frame.get("event") or {}).get("id")
            if isinstance(eid, int):
                if eid in self._seen:
                    return
                self._seen[eid] = None
                if len(self._seen) > SEEN_IDS:
                    self._seen.pop(next(iter(self._seen)))
                cursor = self.status.cursor
                self.status = replace(
                    self.status, cursor=eid if cursor is None else max(cursor, eid)
                )
            self.target.post_message(LiveFeed.Frame(frame))
        elif kind == "state":
            self.target.post_message(LiveFeed.Frame(frame))

    def _set_status(self, status: ConnectionStatus) -> None:
        self.status = status
        self.target.post_message(LiveFeed.StatusChanged(status))
