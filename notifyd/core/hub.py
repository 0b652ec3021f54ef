"""Live fan-out of committed events to stream subscribers.

The store calls :meth:`Hub.publish` on the trio thread after every commit, in id
order. Each event becomes one :class:`Frame`; each subscriber whose topics and
rights match gets a reference to it in its bounded queue. A subscriber whose
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
from collections.abc import Iterable
from typing import Any

import trio

from .acl import Principal, glob_match
from .frames import KEEPALIVE, Frame
from .metrics import STREAM_CLIENTS, STREAM_RESYNCS

log = logging.getLogger("notifyd.hub")


class Subscriber:
    """One live stream client's place in the hub: filters, queue, and its fate."""

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
        self._lot = trio.lowlevel.ParkingLot()
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
        self._lot.unpark_all()

    def doom(self, reason: str) -> None:
        STREAM_RESYNCS.inc()
        self.doomed = reason
        self.queue.clear()
        if self.send_scope is not None:
            self.send_scope.cancel(reason="stream client lagging")
        self._lot.unpark_all()

    def close(self) -> None:
        self.closed = True
        self._lot.unpark_all()

    async def next_batch(self, limit: int = 256) -> list[Frame]:
        """Wait for frames; return up to ``limit`` of them (empty when doomed/closed)."""
        while not self.queue and not self.doomed and not self.closed:
            await self._lot.park()
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
        self._by_topic: dict[str, set[Subscriber]] = {}
        self._wild: set[Subscriber] = set()
        self._by_user: dict[int, set[Subscriber]] = {}

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

    def publish(self, events: Iterable[dict]) -> None:
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

    def publish_state(self, user_id: int, message: dict, topic: str | None = None) -> None:
        """Tell the streams of ``user_id`` that read state changed — for an event's
        state, only the streams that would receive that event (a stream limited to
        some topics must not learn ids from others)."""
        subs = self._by_user.get(user_id)
        if subs:
            frame = Frame.of(message)
            for sub in list(subs):
                if topic is None or sub.wants(topic):
                    sub.push(frame)

    def keepalive(self) -> None:
        for subs in list(self._by_user.values()):
            for sub in list(subs):
                # keepalives never doom a client: skip queues that are not empty
                if not sub.queue:
                    sub.push(KEEPALIVE)

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
