"""Live fan-out of committed events to stream subscribers.

The store calls :meth:`Hub.publish` on the trio thread after every commit, in id
order. Each event becomes one :class:`Frame`; each subscriber whose topics and
rights match gets a reference to it in its bounded queue. At the end of the round
(one commit group), subscribers whose task is idle and whose transport can write
without waiting get their new frames' shared bytes written by the hub in one write
each, with no task wake-up; the task is woken only when the socket is full. A
subscriber whose
queue overflows is dropped with a ``resync`` frame, so one slow client never
slows publishing or anyone else.

Gap-free replay: :meth:`Hub.subscribe` records ``start_id``, the last event the hub
had published when the subscriber started queueing. Everything after it arrives
through the queue; everything up to it is committed and can be read from the
store. A client resuming at ``since`` therefore reads ``since < id <= start_id``
from the store, then drains the queue skipping ids it already sent.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import trio

from .acl import Principal, glob_match
from .errors import RateLimited
from .frames import KEEPALIVE, Frame
from .metrics import STREAM_CLIENTS, STREAM_RESYNCS, STREAMS_REFUSED

log = logging.getLogger("notifyd.hub")


class StreamSlot:
    """One of a user's ``max_streams_per_user`` live streams, taken before the stream
    is answered (so that a refusal is a plain 429) and given back exactly once."""

    __slots__ = ("hub", "user_id", "released")

    def __init__(self, hub: Hub, user_id: int) -> None:
        self.hub = hub
        self.user_id = user_id
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.hub._release(self.user_id)

    def __del__(self) -> None:
        # A safety net for a path that took a slot and then failed before its
        # stream ran (a client gone during the handshake): never leak the count.
        if not self.released:
            self.release()


class Subscriber:
    """One live stream client's place in the hub: filters, queue, and its fate."""

    __slots__ = (
        "hub", "principal", "topics", "kind", "maxlen", "queue", "_waiter", "_wants",
        "start_id", "replaying", "lagged", "prefs", "doomed", "closed", "send_scope",
        "direct", "cursor", "unflushed", "ready",
    )  # fmt: skip

    def __init__(
        self,
        hub: Hub,
        principal: Principal,
        topics: tuple[str, ...] | None,
        maxlen: int,
        kind: str,
    ) -> None:
        self.hub = hub
        self.principal = principal
        self.topics = topics
        self.kind = kind
        self.maxlen = maxlen
        self.queue: deque[Frame] = deque()
        #: the one task waiting in next_batch (a ParkingLot costs more per wake-up,
        #: and a publish wakes one subscriber task per matching client)
        self._waiter: trio.lowlevel.Task | None = None
        self._wants: dict[str, bool] = {}
        self.start_id = hub.last_id
        #: While replaying from the store, an overflow only means "replay again".
        self.replaying = True
        self.lagged = False
        #: the user's preferences, for mutes (None: nothing muted)
        self.prefs: Any = None
        #: Set when the hub gives up on this client: the reason goes out in a resync.
        self.doomed: str | None = None
        self.closed = False
        self.send_scope: trio.CancelScope | None = None
        #: Live mode only: write frames now without waiting; False when the
        #: transport kept part of them for the stream's task to flush. Set by the
        #: stream once it follows the hub live; see :meth:`push`.
        self.direct: Callable[[list[Frame]], bool] | None = None
        #: the last event id the client was sent (kept current in live mode)
        self.cursor = 0
        #: a direct write left bytes behind: the stream's task must flush them
        self.unflushed = False
        #: in the hub's list of subscribers to write to at the end of this round
        self.ready = False

    @property
    def exact(self) -> bool:
        return self.topics is not None and all("*" not in t for t in self.topics)

    def wants(self, topic: str) -> bool:
        hit = self._wants.get(topic)
        if hit is None:
            hit = self.principal.can_read(topic) and (
                self.topics is None or any(glob_match(t, topic) for t in self.topics)
            )
            if len(self._wants) < 4096:
                self._wants[topic] = hit
        return hit

    def push(self, frame: Frame) -> None:
        if self.doomed or self.closed:
            return
        if len(self.queue) >= self.maxlen:
            if self.replaying:
                self.queue.clear()
                self.lagged = True
                return
            self.doom("client fell too far behind; reconnect with since=<last id>")
            return
        self.queue.append(frame)
        if self.direct is not None and self._waiter is not None:
            # The stream's task is idle: the hub writes what this round queued
            # when the round ends (write_direct) instead of waking the task.
            if not self.ready:
                self.ready = True
                self.hub._ready.append(self)
        else:
            self._wake()

    def write_direct(self) -> None:
        """Write the queued frames through ``direct`` (end of a hub round, task idle)."""
        self.ready = False
        if self._waiter is None or self.doomed or self.closed or not self.queue:
            return  # the task is awake (or gone) and drains the queue itself
        frames, cursor = [], self.cursor
        for f in self.queue:
            if f.event_id is not None:
                if f.event_id <= cursor:
                    continue
                cursor = f.event_id
            frames.append(f)
        self.queue.clear()
        self.cursor = cursor
        if not frames:
            return
        assert self.direct is not None
        try:
            if not self.direct(frames):
                self.unflushed = True
                self._wake()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.close()

    def doom(self, reason: str) -> None:
        STREAM_RESYNCS.inc()
        self.doomed = reason
        self.queue.clear()
        if self.send_scope is not None:
            self.send_scope.cancel(reason="stream client lagging")
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        task = self._waiter
        if task is not None:
            self._waiter = None
            trio.lowlevel.reschedule(task)

    def _abort(self, _raise_cancel: Any) -> trio.lowlevel.Abort:
        self._waiter = None
        return trio.lowlevel.Abort.SUCCEEDED

    async def next_batch(self, limit: int = 256) -> list[Frame]:
        """Wait for frames; return up to ``limit`` of them (empty when doomed/closed,
        or when only ``unflushed`` needs attention)."""
        while not self.queue and not self.doomed and not self.closed and not self.unflushed:
            self._waiter = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort)
        if self.doomed or self.closed:
            return []
        q = self.queue
        if len(q) <= limit:
            out = list(q)
            q.clear()
            return out
        return [q.popleft() for _ in range(limit)]

    def restart(self) -> None:
        """Begin another replay round after lagging: forget the queue, move the mark."""
        self.queue.clear()
        self.lagged = False
        self.start_id = self.hub.last_id


class Hub:
    def __init__(self, queue_size: int = 1000) -> None:
        self.queue_size = queue_size
        self.last_id = 0
        #: idle live subscribers that got frames this round (see Subscriber.push)
        self._ready: list[Subscriber] = []
        self._by_topic: dict[str, set[Subscriber]] = {}
        self._wild: set[Subscriber] = set()
        self._by_user: dict[int, set[Subscriber]] = {}
        #: live streams per user id, counted from the moment a slot is reserved
        self._streams: dict[int, int] = {}

    def reserve(self, principal: Principal, limit: int) -> StreamSlot:
        """Take one of the ``limit`` live streams ``principal``'s user may hold.

        Raises :class:`RateLimited` (429) when the user holds ``limit`` already.
        Every stream kind (notifyd's WebSocket and SSE, ntfy's and Gotify's) goes
        through :class:`~notifyd.api.streams.StreamSession`, which reserves here."""
        uid = principal.user_id
        held = self._streams.get(uid, 0)
        if held >= limit:
            STREAMS_REFUSED.inc()
            raise RateLimited(
                f"too many live streams: user {principal.name!r} holds {held}, the limit "
                f"is {limit} (max_streams_per_user); close one before opening another",
                retry_after=5,
            )
        self._streams[uid] = held + 1
        return StreamSlot(self, uid)

    def _release(self, user_id: int) -> None:
        held = self._streams.get(user_id, 0) - 1
        if held > 0:
            self._streams[user_id] = held
        else:
            self._streams.pop(user_id, None)

    def __len__(self) -> int:
        return sum(len(s) for s in self._by_user.values())

    def subscribe(
        self, principal: Principal, topics: tuple[str, ...] | None, kind: str
    ) -> Subscriber:
        sub = Subscriber(self, principal, topics, self.queue_size, kind)
        if sub.exact:
            assert sub.topics is not None
            for t in sub.topics:
                self._by_topic.setdefault(t, set()).add(sub)
        else:
            self._wild.add(sub)
        self._by_user.setdefault(principal.user_id, set()).add(sub)
        STREAM_CLIENTS.labels(kind).inc()
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        sub.close()
        if sub.exact:
            assert sub.topics is not None
            for t in sub.topics:
                subs = self._by_topic.get(t)
                if subs is not None:
                    subs.discard(sub)
                    if not subs:
                        del self._by_topic[t]
        else:
            self._wild.discard(sub)
        users = self._by_user.get(sub.principal.user_id)
        if users is not None:
            users.discard(sub)
            if not users:
                del self._by_user[sub.principal.user_id]
        STREAM_CLIENTS.labels(sub.kind).dec()

    def publish(self, events: Iterable[dict[str, Any]]) -> None:
        """Fan committed events out (trio thread, id order)."""
        by_topic, wild = self._by_topic, self._wild
        for event in events:
            frame = Frame.for_event(event)
            self.last_id = event["id"]
            subs = by_topic.get(event["topic"])
            if subs:
                for sub in subs:
                    if sub.principal.can_read(event["topic"]) and not (
                        sub.prefs and sub.prefs.muted(event)
                    ):
                        sub.push(frame)
            for sub in wild:
                if sub.wants(event["topic"]) and not (sub.prefs and sub.prefs.muted(event)):
                    sub.push(frame)
        self._write_ready()

    def _write_ready(self) -> None:
        """End of a round: write what idle live subscribers were given, one write
        each. Until now a round's frames sat in the queues, so a round larger than
        a queue dooms its client just as if the client's task had been queueing."""
        ready, self._ready = self._ready, []
        for sub in ready:
            sub.write_direct()

    def publish_state(
        self, user_id: int, message: dict[str, Any], topic: str | None = None
    ) -> None:
        """Tell the streams of ``user_id`` that read state changed — for an event's
        state, only the streams that would receive that event (a stream limited to
        some topics must not learn ids from others)."""
        subs = self._by_user.get(user_id)
        if subs:
            frame = Frame.of(message)
            for sub in list(subs):
                if topic is None or sub.wants(topic):
                    sub.push(frame)
            self._write_ready()

    def keepalive(self) -> None:
        for subs in list(self._by_user.values()):
            for sub in list(subs):
                # keepalives never doom a client: skip queues that are not empty
                if not sub.queue:
                    sub.push(KEEPALIVE)
        self._write_ready()

    def user_changed(self, user_id: int | None = None) -> None:
        """Rights changed: drop clients whose rights may have shrunk; they reconnect."""
        targets = (
            [s for subs in self._by_user.values() for s in subs]
            if user_id is None
            else list(self._by_user.get(user_id, ()))
        )
        for sub in targets:
            sub.doom("your access rights changed; reconnect")

    def close_all(self) -> None:
        for subs in list(self._by_user.values()):
            for sub in list(subs):
                sub.close()

    async def run_keepalive(
        self, interval: float, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        while True:
            await trio.sleep(interval)
            self.keepalive()
