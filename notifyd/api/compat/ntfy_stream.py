"""ntfy's subscribe API over notifyd's streams: ``/<topics>/json``, ``/sse``, ``/raw``
and ``/ws`` (one topic or several, comma-separated).

A subscription is a :class:`~notifyd.api.streams.StreamSession` — the same
replay-then-live, gap-free machinery as ``/v1/stream`` — whose sink writes ntfy's
message objects instead of notifyd's frames: first an ``open`` event, then the
messages (replayed ones first, after ``since``), and a ``keepalive`` event every
``ntfy_keepalive_seconds``. Each event's ntfy encodings are built once per event
(:meth:`Frame.derived`) and shared by every ntfy subscriber; only the filters
(``id``, ``message``, ``title``, ``priority``, ``tags``) are applied per client.
``poll=1`` answers what is stored and ends; with ``id=<message id>`` it reads just
that event (how the ntfy iOS app fetches what a poll request announced).

New connections are served on the raw socket by the connection front like
notifyd's own streams (:func:`serve_raw`); a stream asked for on a reused
keep-alive connection goes through hypercorn (:class:`HTTPStreamResponse`,
:func:`serve_websocket`).
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import trio
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from ...core.acl import Principal
from ...core.errors import Forbidden, NotifydError
from ...core.frames import Frame, ws_close, ws_frame
from ...core.hub import StreamSlot
from ...core.prefs import Preferences
from ...core.services import Services
from ...core.store import HistoryQuery
from ..responses import render_ntfy
from ..routes.stream import until_websocket_closes
from ..streams import StreamSession
from ..transport import (
    RawSink,
    RequestHead,
    WebSocketProtocol,
    read_until_eof,
    read_websocket,
    refuse,
    websocket_problem,
)
from .ntfy_auth import authenticate
from .ntfy_message import to_message
from .ntfy_params import (
    SINCE,
    WS_UPGRADE,
    Filters,
    NtfyError,
    Params,
    address_of,
    bad,
    check_topic_name,
    from_notifyd,
    parse_filters,
)
from .ntfy_time import Since, from_unix, parse_since

log = logging.getLogger("notifyd.ntfy")

CONTENT_TYPES = {
    "json": "application/x-ndjson; charset=utf-8",
    "sse": "text/event-stream; charset=utf-8",
    "raw": "text/plain; charset=utf-8",
}
MAX_TOPICS = 64
_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
#: the version is left to the transport, which refuses all but HTTP/1.x in ntfy's shape
_STREAM_LINE = re.compile(rb"^GET /([A-Za-z0-9_.,\-]+)/(json|sse|raw|ws)(?:\?\S*)? HTTP/")


def random_id() -> str:
    return "".join(secrets.choice(_ID_CHARS) for _ in range(12))


# -- the subscription ---------------------------------------------------------------


@dataclass
class Subscription:
    principal: Principal
    topics: tuple[str, ...]
    #: the topics as the client wrote them (ntfy's ``topic`` of open/keepalive events)
    topics_str: str
    fmt: str
    poll: bool
    #: replay events after this id (None: live only)
    cursor: int | None
    filters: Filters
    #: the user's stream slot (max_streams_per_user), taken before answering; None for polls
    slot: StreamSlot | None = None
    #: what uploaded attachments' URLs start with (base_url, else the client's Host)
    base_url: str = ""


def parse_topics(topics_str: str, reserved: frozenset[str]) -> tuple[str, ...]:
    topics = tuple(dict.fromkeys(t.strip() for t in topics_str.split(",") if t.strip()))
    if not topics or len(topics) > MAX_TOPICS:
        raise bad(40009, "invalid request: topic invalid", f"name 1–{MAX_TOPICS} topics")
    for t in topics:
        check_topic_name(t)
        if t in reserved:
            raise bad(40010, "invalid request: topic name is disallowed",
                      f"{t!r} is a name notifyd uses itself")  # fmt: skip
    return topics


async def _latest(svc: Services, principal: Principal, topics: tuple[str, ...]) -> int:
    """The cursor just below the newest event of ``topics`` (ntfy's ``since=latest``)."""
    newest = 0
    for t in topics:
        q = HistoryQuery(principal.user_id, principal.visibility(), topic=t, limit=1,
                         archived="include")  # fmt: skip
        events = await svc.store.history(q)
        if events:
            newest = max(newest, events[0]["id"])
    return newest - 1 if newest else svc.hub.last_id


async def resolve_cursor(
    svc: Services, since: Since, principal: Principal, topics: tuple[str, ...]
) -> int:
    if since.kind == "all":
        return 0
    if since.kind == "id":
        return int(since.value)
    if since.kind == "time":
        try:
            at = from_unix(max(0.0, since.value))
        except (ValueError, OverflowError, OSError):  # past what datetime can hold
            raise bad(SINCE, "invalid since parameter", "that time is out of range") from None
        return await svc.store.cursor_at(at)
    if since.kind == "latest":
        return await _latest(svc, principal, topics)
    # "none": live only. Replaying from the newest id known now (not just following
    # the hub) keeps the stream gap-free although `open` is written before the
    # session subscribes: whatever commits in between is read from the store.
    return svc.hub.last_id


async def open_subscription(
    svc: Services,
    *,
    fmt: str,
    topics_str: str,
    reserved: frozenset[str],
    via_socket: bool,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    address: str,
) -> Subscription:
    """Check a subscribe request (topics, credentials, rights, parameters); raises
    :class:`NtfyError` in ntfy's shape."""
    topics = parse_topics(topics_str, reserved)
    principal = await authenticate(
        svc, via_socket=via_socket, method="GET", headers=headers, query=query,
        address=address,
    )  # fmt: skip
    try:
        if principal.visibility().empty:
            raise Forbidden("this credential may not read any topic")
        for t in topics:
            principal.require_read(t)
    except NotifydError as exc:
        raise from_notifyd(exc) from None
    params = Params(headers, query)
    poll = params.flag(False, "x-poll", "poll", "po")
    raw_since = params.get("x-since", "since", "si")
    last_id = headers.get("last-event-id", "")
    if not raw_since and fmt == "sse" and last_id.isascii() and last_id.isdigit():
        raw_since = last_id  # an EventSource reconnecting
    if not raw_since.isascii():
        # ids, times and durations are ASCII; other digits ('²', '١') are not numbers here
        raise bad(SINCE, "invalid since parameter", "use ASCII digits")
    since = parse_since(raw_since, poll)
    filters = parse_filters(params)
    cursor = await resolve_cursor(svc, since, principal, topics)
    slot = None
    if not poll:
        try:
            slot = svc.hub.reserve(principal, svc.config.max_streams_per_user)
        except NotifydError as exc:
            raise from_notifyd(exc) from None
    base_url = svc.config.base_url or address_of(headers)
    return Subscription(principal, topics, topics_str, fmt, poll, cursor, filters, slot, base_url)


# -- encoding ----------------------------------------------------------------------


def _control_message(event: str, topics: str) -> dict[str, Any]:
    return {"id": random_id(), "time": int(time.time()), "event": event, "topic": topics}


class NtfySink:
    """A :class:`~notifyd.api.streams.Sink` writing ntfy's wire format ``fmt``."""

    def __init__(self, fmt: str, transport: Any, sub: Subscription, retention_days: float):
        self.fmt = fmt
        self.kind = f"ntfy-{fmt}"
        self.transport = transport
        self.filters = sub.filters
        self.retention_days = retention_days
        self.base_url = sub.base_url
        # frames cache what they derive per key: the attachment URLs depend on base_url
        # (the client's Host when it is unset), which stays out of the metric's labels
        self._label = f"ntfy:unit:{fmt}" + (":wire" if transport.framed else "")
        self._key = f"{self._label}:{sub.base_url}"
        self._msg_key, self._body_key = f"ntfy:message:{sub.base_url}", f"ntfy:body:{sub.base_url}"

    def _message(self, frame: Frame) -> dict[str, Any]:
        assert frame.event is not None
        return to_message(frame.event, self.retention_days, self.base_url)

    def _json(self, frame: Frame) -> bytes:
        return orjson.dumps(frame.derived(self._msg_key, self._message, "ntfy:message"))

    def _encode(self, frame: Frame) -> bytes:
        if self.fmt == "raw":
            msg = frame.derived(self._msg_key, self._message, "ntfy:message")
            return msg["message"].replace("\n", " ").encode() + b"\n"
        body = frame.derived(self._body_key, self._json, "ntfy:body")
        if self.fmt == "json":
            return body + b"\n"
        if self.fmt == "sse":
            return b"id: " + str(frame.event_id).encode() + b"\ndata: " + body + b"\n\n"
        return ws_frame(body) if self.transport.framed else body

    def encode_control(self, event: str, topics: str) -> bytes:
        if self.fmt == "raw":
            return b"\n"
        body = orjson.dumps(_control_message(event, topics))
        if self.fmt == "json":
            return body + b"\n"
        if self.fmt == "sse":
            return b"event: " + event.encode() + b"\ndata: " + body + b"\n\n"
        return ws_frame(body) if self.transport.framed else body

    async def send(self, frames: list[Frame]) -> None:
        units = []
        for f in frames:
            if f.event is None:  # notifyd's keepalive and read-state frames
                continue
            if self.filters.active and not self.filters.passes(
                f.derived(self._msg_key, self._message, "ntfy:message"), f.event.get("title") or ""
            ):
                continue
            units.append(f.derived(self._key, self._encode, self._label))
        if units:
            await self.transport.send(units)

    async def control(self, event: str, topics: str) -> None:
        await self.transport.send([self.encode_control(event, topics)])

    async def finish(self, resync: str | None) -> None:
        await self.transport.finish(resync is not None)


async def _keepalive(sink: NtfySink, topics: str, interval: float, done: trio.CancelScope) -> None:
    try:
        while True:
            await trio.sleep(interval)
            await sink.control("keepalive", topics)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        done.cancel(reason="ntfy client gone")


async def _poll(svc: Services, sub: Subscription, sink: NtfySink) -> None:
    doc = await svc.store.get_preferences(sub.principal.user_id)
    prefs = Preferences.from_json(doc) if doc else None
    vis = sub.principal.visibility()
    # the newest committed id, not this node's hub's: in a cluster the hub may not
    # have heard yet what another node just stored
    cursor, upto = sub.cursor or 0, await svc.store.last_event_id()
    if sub.filters.id:
        # ``?poll=1&id=<message id>``: the ntfy iOS app fetching the message a poll
        # request (docs/mobile.md) announced. Read that one event, not the topic's
        # whole history: the same visibility, topics and mutes apply, so a caller
        # who may not read it, or asks on another topic, gets no lines (as in ntfy).
        wanted = sub.filters.event_id
        if wanted is None or not cursor < wanted <= upto:
            return
        cursor, upto = wanted - 1, wanted
    while cursor < upto:
        events = await svc.store.events_after(cursor, upto, vis, sub.topics, svc.config.replay_page)
        if not events:
            break
        frames = [Frame.for_event(ev) for ev in events if not (prefs and prefs.muted(ev))]
        with trio.move_on_after(svc.config.stream_send_timeout) as scope:
            await sink.send(frames)
        if scope.cancelled_caught:
            return
        cursor = events[-1]["id"]


async def run(svc: Services, sub: Subscription, sink: NtfySink) -> None:
    """Serve a subscription until it ends (poll done, client gone, shutdown)."""
    if sub.poll:
        await _poll(svc, sub, sink)
        return
    session = StreamSession(svc, sub.principal, sub.topics, sub.cursor, slot=sub.slot)
    await sink.control("open", sub.topics_str)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            _keepalive, sink, sub.topics_str, svc.config.ntfy_keepalive_seconds,
            nursery.cancel_scope,
        )  # fmt: skip
        await session.run(sink)
        nursery.cancel_scope.cancel(reason="ntfy stream ended")


# -- the raw-socket fast path ------------------------------------------------------


def fast_path_match(buf: bytes, reserved: frozenset[str]) -> bool:
    """Whether a new connection's first request line opens an ntfy stream that the
    connection front should serve on the raw socket."""
    m = _STREAM_LINE.match(buf)
    return m is not None and not any(t in reserved for t in m.group(1).decode("ascii").split(","))


class _RawHTTP(RawSink):
    framed = False

    async def send(self, units: list[bytes]) -> None:
        await self.write(b"".join(units))

    async def finish(self, resync: bool) -> None:
        pass  # the body ends when the connection closes


class _RawWebSocket(RawSink):
    framed = True

    async def send(self, units: list[bytes]) -> None:
        await self.write(b"".join(units))

    async def finish(self, resync: bool) -> None:
        if not self.broken:
            await self.write(ws_close(4000, "resync") if resync else ws_close(1001, "going away"))


async def serve_raw(
    svc: Services,
    reserved: frozenset[str],
    stream: trio.abc.Stream,
    head: RequestHead,
    via_socket: bool,
    address: str,
) -> None:
    """Serve an ntfy stream on a new connection (the connection front's fast path)."""
    topics_str, _, fmt = head.path[1:].rpartition("/")
    query = dict(head.query_items())
    ws = WebSocketProtocol() if fmt == "ws" else None
    try:
        if ws is not None:
            problem = websocket_problem(head)
            if problem is not None:
                status, message = problem
                if status == 426:
                    message = "client not using the websocket protocol"
                raise bad(WS_UPGRADE, f"invalid request: {message}")
        sub = await open_subscription(
            svc, fmt=fmt, topics_str=topics_str, reserved=reserved,
            via_socket=via_socket, headers=head.headers, query=query, address=address,
        )  # fmt: skip
        if ws is not None:
            try:
                handshake = ws.accept(head)
            except NotifydError as exc:
                if sub.slot is not None:
                    sub.slot.release()
                raise bad(WS_UPGRADE, f"invalid request: {exc.message}") from None
        else:
            handshake = (
                f"HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPES[fmt]}\r\n"
                "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\nConnection: close\r\n\r\n"
            ).encode()
    except NtfyError as err:
        await refuse(stream, render_ntfy(err).raw())
        return
    first = head.detach()
    transport = _RawWebSocket(stream) if ws is not None else _RawHTTP(stream)
    await transport.write(handshake)
    sink = NtfySink(fmt, transport, sub, svc.config.retention_days)
    async with trio.open_nursery() as nursery:
        if ws is not None:
            nursery.start_soon(read_websocket, stream, transport, ws, first, nursery.cancel_scope)
        else:
            nursery.start_soon(read_until_eof, stream, nursery.cancel_scope, "ntfy client closed")
        await run(svc, sub, sink)
        if ws is not None and sub.poll:
            await transport.write(ws_close(1000, "poll done"))
        nursery.cancel_scope.cancel(reason="ntfy stream ended")


# -- through hypercorn (a stream on a reused keep-alive connection) ------------------


class _ASGIHTTP:
    framed = False

    def __init__(self, send: Any) -> None:
        self._send = send
        self.lock = trio.Lock()

    async def send(self, units: list[bytes]) -> None:
        async with self.lock:
            await self._send(
                {"type": "http.response.body", "body": b"".join(units), "more_body": True}
            )

    async def finish(self, resync: bool) -> None:
        pass


class HTTPStreamResponse(Response):
    def __init__(self, svc: Services, sub: Subscription) -> None:
        super().__init__(media_type=CONTENT_TYPES[sub.fmt])
        self.svc = svc
        self.sub = sub

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", CONTENT_TYPES[self.sub.fmt].encode()),
                    (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no"),
                ],
            }
        )
        transport = _ASGIHTTP(send)
        sink = NtfySink(self.sub.fmt, transport, self.sub, self.svc.config.retention_days)
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                nursery.cancel_scope.cancel(reason="ntfy client closed")

            nursery.start_soon(watch)
            try:
                await run(self.svc, self.sub, sink)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            nursery.cancel_scope.cancel(reason="ntfy stream ended")
        with trio.move_on_after(2):
            await send({"type": "http.response.body", "body": b"", "more_body": False})


class _ASGIWebSocket:
    framed = False

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.lock = trio.Lock()

    async def send(self, units: list[bytes]) -> None:
        async with self.lock:
            try:
                for u in units:
                    await self.ws.send_text(u.decode())
            except (WebSocketDisconnect, RuntimeError) as exc:
                raise trio.BrokenResourceError("websocket closed") from exc

    async def finish(self, resync: bool) -> None:
        await self.ws.close(4000 if resync else 1001)


async def serve_websocket(ws: WebSocket, svc: Services, sub: Subscription) -> None:
    await ws.accept()
    transport = _ASGIWebSocket(ws)
    sink = NtfySink("ws", transport, sub, svc.config.retention_days)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            until_websocket_closes, ws, nursery.cancel_scope, "ntfy websocket closed"
        )
        try:
            await run(svc, sub, sink)
            if sub.poll:
                await ws.close(1000)
        except (trio.BrokenResourceError, trio.ClosedResourceError, RuntimeError):
            pass
        nursery.cancel_scope.cancel(reason="ntfy stream ended")
