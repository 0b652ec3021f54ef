"""The live stream protocol, independent of how bytes reach the client.

A :class:`StreamSession` replays what a client missed and then follows the hub;
a *sink* writes frames to one client. The raw transport's doors (``rawstream.py``
and ntfy's and Gotify's streams, all on ``transport.RawSink``) write the shared,
pre-framed bytes straight to the socket; the ASGI fallback
(``routes/stream.py``) serves the same protocol through hypercorn for the rare
client that asks for a stream on a reused keep-alive connection.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Mapping
from typing import Protocol, runtime_checkable

import orjson
import trio

from ..core.acl import Principal
from ..core.errors import Forbidden, StoreUnavailable, ValidationFailed
from ..core.frames import Frame
from ..core.hub import StreamSlot, Subscriber
from ..core.models import ascii_int, check_pattern
from ..core.prefs import Preferences
from ..core.services import Services
from .auth import resolve

log = logging.getLogger("notifyd.stream")

#: the resync reason of a stream ended because the database cannot be reached
STORE_AWAY = "the database cannot be reached right now; reconnect with since=<last id> shortly"
#: the resync reason of a stream whose credential (a JWT) expired: grants from a
#: token last as long as the token
TOKEN_EXPIRED = "the token has expired; reconnect with a fresh token and since=<last id>"


class Sink(Protocol):
    """Writes frames to one client. A sink may also be a :class:`DirectSink`."""

    kind: str

    async def send(self, frames: list[Frame]) -> None:
        """Write frames to the client; raise ``trio.BrokenResourceError`` if it is gone."""

    async def finish(self, resync: str | None) -> None:
        """End the stream: with a ``resync`` frame when the client lagged, else a normal close."""


@runtime_checkable
class DirectSink(Sink, Protocol):
    """A sink that can also write without waiting: the live loop then only waits,
    under the send timeout, when a client's socket is full — most deliveries cost
    no trip through the scheduler."""

    def send_nowait(self, frames: list[Frame]) -> bool:
        """Write frames without waiting; False leaves the rest queued in the sink."""

    async def flush(self) -> None:
        """Send what :meth:`send_nowait` left queued."""


def parse_topics(raw: str | None) -> tuple[str, ...] | None:
    if not raw:
        return None
    topics = tuple(t.strip() for t in raw.split(",") if t.strip())
    if len(topics) > 64:
        raise ValidationFailed("at most 64 topics per stream", field="topics")
    for t in topics:
        try:
            check_pattern(t)
        except ValueError as exc:
            raise ValidationFailed(f"topics: {t!r}: {exc}", field="topics") from None
    return topics or None


def parse_since(raw: str | None, last_event_id: str | None = None) -> int | None:
    value = raw if raw not in (None, "") else last_event_id
    if value in (None, ""):
        return None
    assert value is not None
    if value == "all":
        return 0
    since = ascii_int(value)
    if since is None:
        raise ValidationFailed("since must be an event id or 'all'", field="since")
    return since


def check_access(principal: Principal, topics: tuple[str, ...] | None) -> None:
    if principal.visibility().empty:
        raise Forbidden("this credential may not read any topic")
    for t in topics or ():
        if "*" not in t:
            principal.require_read(t)


class StreamSession:
    """One live stream: replay from ``since``, then follow the hub.

    Creating a session takes one of the user's ``max_streams_per_user`` slots
    (raises :class:`~notifyd.core.errors.RateLimited`, 429, when none is free), so
    callers create it *before* answering the request; pass ``slot`` when one was
    reserved earlier. The slot is given back when :meth:`run` returns or
    :meth:`close` is called (callers that fail before running call it).
    """

    def __init__(
        self,
        svc: Services,
        principal: Principal,
        topics: tuple[str, ...] | None,
        since: int | None,
        *,
        slot: StreamSlot | None = None,
    ) -> None:
        self.svc = svc
        self.principal = principal
        self.topics = topics
        self.since = since
        self.prefs: Preferences | None = None
        self._prefs_loaded = False
        self.slot = slot or svc.hub.reserve(principal, svc.config.max_streams_per_user)
        #: when the stream ends because its credential does (trio clock; inf: never)
        self.deadline = math.inf

    async def load_preferences(self) -> None:
        """Read the user's preferences (mutes) now: a door that calls this before it
        answers refuses the stream with 503 while the database cannot be reached,
        instead of accepting it and ending it at once."""
        doc = await self.svc.store.get_preferences(self.principal.user_id)
        self.prefs = Preferences.from_json(doc) if doc else None
        self._prefs_loaded = True

    def close(self) -> None:
        """Give the stream slot back (idempotent); :meth:`run` does it on return."""
        self.slot.release()

    async def run(self, sink: Sink) -> None:
        try:
            await self._run(sink)
        finally:
            self.slot.release()

    async def _run(self, sink: Sink) -> None:
        hub = self.svc.hub
        if not self._prefs_loaded:
            try:
                await self.load_preferences()
            except StoreUnavailable:
                await self._finish(sink, STORE_AWAY)
                return
        if self.principal.expires_at is not None:
            # a wall-clock instant turned into the trio clock once, so the live loop
            # waits under a plain deadline
            self.deadline = trio.current_time() + (self.principal.expires_at - time.time())
        sub = hub.subscribe(self.principal, self.topics, sink.kind)
        log.debug(
            "stream opened: %s for %s, topics %s, since %s",
            sink.kind, self.principal.name, self.topics or "*", self.since,
        )  # fmt: skip
        if self.prefs is not None and any(r.mute for r in self.prefs.rules):
            sub.prefs = self.prefs
        resync: str | None = None
        try:
            cursor = await self._replay(sub, sink)
            if not sub.doomed:
                await self._live(sub, sink, cursor)
            resync = sub.doomed
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        except StoreUnavailable:
            # the replay could not read: the client resumes from what it got
            resync = STORE_AWAY
        finally:
            hub.unsubscribe(sub)
        await self._finish(sink, resync)

    @staticmethod
    async def _finish(sink: Sink, resync: str | None) -> None:
        with trio.move_on_after(2):
            try:
                await sink.finish(resync)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    async def _replay(self, sub: Subscriber, sink: Sink) -> int:
        if self.since is None:
            sub.replaying = False
            return sub.start_id
        cursor = self.since
        # In a cluster the client may have read ids on another node that this
        # node's hub has not published yet: they are still to come live, and must
        # not be sent twice. A cursor past every committed id is bogus (say, from
        # before a restore): the client gets what comes next.
        if cursor > sub.start_id and cursor > await self.svc.store.last_event_id():
            cursor = sub.start_id
        vis = self.principal.visibility()
        page = self.svc.config.replay_page
        while True:
            while cursor < sub.start_id:
                if self._expired(sub):
                    return cursor
                events = await self.svc.store.events_after(
                    cursor, sub.start_id, vis, self.topics, page
                )
                if not events:
                    break
                shown = [ev for ev in events if not (self.prefs and self.prefs.muted(ev))]
                with trio.move_on_after(self.svc.config.stream_send_timeout) as scope:
                    if shown:
                        await sink.send([Frame.for_event(ev) for ev in shown])
                if scope.cancelled_caught:
                    sub.doom("the client did not read for too long")
                    return cursor
                cursor = events[-1]["id"]
            cursor = max(cursor, sub.start_id)
            if not sub.lagged:
                break
            # Publishing outran the replay and the queue overflowed: everything
            # is in the store, so move the mark and read on from the cursor.
            sub.restart()
        sub.replaying = False
        return cursor

    async def _live(self, sub: Subscriber, sink: Sink, cursor: int) -> None:
        direct = sink if isinstance(sink, DirectSink) else None
        sub.cursor = cursor
        # frames published while this task is idle are written by the hub itself
        sub.direct = None if direct is None else direct.send_nowait
        timeout = self.svc.config.stream_send_timeout
        while True:
            frames: list[Frame]
            if self.deadline == math.inf:
                frames = await sub.next_batch()
            else:
                # Only the wait is cut at the deadline, never a write: a frame cut
                # halfway would leave no way to tell the client why its stream ended.
                frames = []
                with trio.CancelScope(deadline=self.deadline):
                    frames = await sub.next_batch()
                if self._expired(sub):
                    return
            if sub.doomed or sub.closed:
                return
            if sub.unflushed:
                sub.unflushed = False
                # only a direct write (sub.direct) leaves frames unflushed
                if direct is not None and not await self._wait_send(sub, direct.flush(), timeout):
                    return
            out = []
            cursor = sub.cursor
            for f in frames:
                if f.event_id is not None:
                    if f.event_id <= cursor:
                        continue
                    cursor = f.event_id
                out.append(f)
            sub.cursor = cursor
            if not out:
                continue
            if direct is None:
                sent = sink.send(out)
            elif direct.send_nowait(out):
                continue
            else:
                sent = direct.flush()
            if not await self._wait_send(sub, sent, timeout):
                return

    def _expired(self, sub: Subscriber) -> bool:
        """Doom the stream if its credential has expired (the client is told
        :data:`TOKEN_EXPIRED` in a resync, as when its rights change); True if so."""
        if trio.current_time() < self.deadline or sub.closed:
            return False
        if not sub.doomed:
            sub.doom(TOKEN_EXPIRED)
        return True

    @staticmethod
    async def _wait_send(sub: Subscriber, sending: Awaitable[None], timeout: float) -> bool:
        """Await a send under the client's send timeout; False if that dooms it."""
        with trio.move_on_after(timeout) as scope:
            sub.send_scope = scope
            await sending
        sub.send_scope = None
        if scope.cancelled_caught and not sub.doomed:
            sub.doom("the client did not read for too long")
        return not sub.doomed


async def open_session(
    svc: Services,
    *,
    via_socket: bool,
    authorization: str | None,
    token: str | None,
    topics: str | None,
    since: str | None,
    last_event_id: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> StreamSession:
    """Authenticate and check a stream request; raises ``NotifydError`` (401/403/422).
    ``headers`` (lower-case names) let the web page's session cookie in."""
    principal = await resolve(svc, via_socket, authorization, token, headers=headers)
    parsed = parse_topics(topics)
    check_access(principal, parsed)
    session = StreamSession(svc, principal, parsed, parse_since(since, last_event_id))
    try:
        await session.load_preferences()  # StoreUnavailable: 503 before any answer
    except BaseException:
        session.close()
        raise
    return session


def resync_frame(reason: str) -> bytes:
    return orjson.dumps({"type": "resync", "reason": reason})
