"""Live streams against a real daemon: WebSocket and SSE over TCP and the Unix socket.

Covers delivery, authentication and ACLs (and losing access mid-stream), topic
filters, replay (`since`, `Last-Event-ID`) including the race between replay and
concurrent publishing, read-state sync, keepalives, slow and overflowing consumers,
control frames, shutdown, and streams asked for on a reused keep-alive connection
(served by the ASGI fallback instead of the fast path). Every wait is on a
condition under a deadline.
"""

from __future__ import annotations

import base64
import json
import os
import socket as stdsocket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import trio
import trio_websocket
from conftest import TLS, Daemon, wait_for
from trio_websocket import ConnectionClosed, ConnectionRejected, WebSocketConnection

#: every daemon here runs on SQLite and on PostgreSQL (tests/conftest.py)
pytestmark = pytest.mark.both_engines

# -- helpers ------------------------------------------------------------------------


async def sync(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """Run a blocking helper (the fixture's httpx calls) off the trio loop."""
    return await trio.to_thread.run_sync(partial(fn, *args, **kw))


def resource(path: str = "/v1/stream", **params: str | None) -> str:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return path + ("?" + query if query else "")


@asynccontextmanager
async def ws_tcp(
    daemon: Daemon,
    token: str | None = None,
    *,
    query_token: str | None = None,
    message_queue_size: int = 1,
    **params: str | None,
) -> AsyncIterator[WebSocketConnection]:
    """A trio-websocket client over TCP; ``token`` goes in a Bearer header.

    With the default ``message_queue_size=1`` the client stops reading the socket
    while the test is not asking for messages (backpressure reaches the server).
    """
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else None
    url = daemon.url.replace("http://", "ws://", 1) + resource(token=query_token, **params)
    async with trio_websocket.open_websocket_url(
        url,
        extra_headers=headers,
        connect_timeout=10,
        disconnect_timeout=5,
        message_queue_size=message_queue_size,
        receive_buffer_size=65536,
    ) as ws:
        yield ws


@asynccontextmanager
async def ws_unix(daemon: Daemon, **params: str | None) -> AsyncIterator[WebSocketConnection]:
    """A trio-websocket client over the Unix socket (acts as the admin)."""
    stream = await trio.open_unix_socket(str(daemon.socket))
    try:
        async with trio.open_nursery() as nursery:
            ws = await trio_websocket.wrap_client_stream(
                nursery, stream, "notifyd", resource(**params), receive_buffer_size=65536
            )
            try:
                yield ws
            finally:
                with trio.move_on_after(5):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:  # one failure inside: show it, not the group
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


async def recv(ws: WebSocketConnection, timeout: float = 10.0, *, keepalives: bool = False) -> dict:
    """The next frame (keepalives skipped unless asked for)."""
    with trio.fail_after(timeout):
        while True:
            frame = json.loads(await ws.get_message())
            if keepalives or frame["type"] != "keepalive":
                return frame


async def recv_events_until(ws: WebSocketConnection, last_id: int, timeout: float = 20.0) -> list:
    """Event frames up to and including event ``last_id``; anything else fails."""
    events: list[dict] = []
    with trio.fail_after(timeout):
        while not events or events[-1]["id"] < last_id:
            frame = await recv(ws, timeout)
            assert frame["type"] == "event", frame
            events.append(frame["event"])
    return events


def admin_async(daemon: Daemon) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(uds=str(daemon.socket), verify=TLS),
        base_url="http://notifyd",
        timeout=30,
    )


async def publish(client: httpx.AsyncClient, payload: dict | list[dict]) -> list[dict]:
    """Publish one event or a batch (title defaults to "hello"); return the stored events."""
    for ev in payload if isinstance(payload, list) else [payload]:
        ev.setdefault("title", "hello")
    r = await client.post("/v1/events", json=payload)
    assert r.status_code == 201, r.text
    body = r.json()
    return body["events"] if isinstance(payload, list) else [body]


async def publish_admin(daemon: Daemon, payload: dict | list[dict]) -> list[dict]:
    async with admin_async(daemon) as c:
        return await publish(c, payload)


async def wait_stream_clients(daemon: Daemon, n: int, timeout: float = 10.0) -> None:
    """Wait until the hub has exactly ``n`` subscribers.

    A stream without ``since`` only gets events published after it subscribed, and
    the subscription happens just after the handshake answer; tests that publish
    "live" events wait for it here.
    """

    def check() -> bool:
        with daemon.admin() as c:
            return c.get("/healthz").json()["stream_clients"] == n

    await sync(wait_for, check, timeout, message=f"{n} stream clients")


async def metric(daemon: Daemon, name: str) -> float:
    async with admin_async(daemon) as c:
        text = (await c.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"metric {name} not found")


class RawSSE:
    """A hand-rolled SSE client on a trio stream (TCP or the Unix socket)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buf = b""
        self.status = 0
        self.head = b""

    @classmethod
    async def open(
        cls,
        daemon: Daemon,
        *,
        unix: bool = False,
        headers: dict[str, str] | None = None,
        **params: str | None,
    ) -> RawSSE:
        if unix:
            stream: trio.abc.Stream = await trio.open_unix_socket(str(daemon.socket))
        else:
            stream = await trio.open_tcp_stream("127.0.0.1", daemon.port)
        self = cls(stream)
        lines = [f"GET {resource('/v1/stream/sse', **params)} HTTP/1.1", "Host: notifyd"]
        lines += ["Accept: text/event-stream"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
        with trio.fail_after(10):
            while b"\r\n\r\n" not in self.buf:
                await self._fill()
        self.head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.status = int(self.head.split(b" ", 2)[1])
        return self

    async def _fill(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise EOFError("the server closed the stream")
        self.buf += data

    async def next(
        self, timeout: float = 10.0, *, keepalives: bool = False
    ) -> tuple[int | None, dict]:
        """The next record as (``id:`` value or None, decoded ``data:`` frame)."""
        with trio.fail_after(timeout):
            while True:
                while b"\n\n" not in self.buf:
                    await self._fill()
                record, self.buf = self.buf.split(b"\n\n", 1)
                event_id, data = None, []
                for line in record.split(b"\n"):
                    if line.startswith(b":"):
                        continue  # comment
                    name, _, value = line.partition(b":")
                    value = value[1:] if value.startswith(b" ") else value
                    if name == b"id":
                        event_id = int(value)
                    elif name == b"data":
                        data.append(value)
                if not data:
                    continue
                frame = json.loads(b"\n".join(data))
                if keepalives or frame["type"] != "keepalive":
                    return event_id, frame

    async def rest(self, timeout: float = 10.0) -> bytes:
        """Everything until the server closes the connection."""
        with trio.fail_after(timeout):
            try:
                while True:
                    await self._fill()
            except EOFError:
                pass
        data, self.buf = self.buf, b""
        return data

    async def aclose(self) -> None:
        await self.stream.aclose()


def ws_handshake(path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: notifyd\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def client_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A masked client-to-server WebSocket frame."""
    mask = os.urandom(4)
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    if n < 126:
        header = struct.pack("!BB", b0, 0x80 | n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", b0, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", b0, 0x80 | 127, n)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def server_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Split unmasked server frames; returns (complete frames, incomplete tail)."""
    frames = []
    while len(data) >= 2:
        opcode, n, pos = data[0] & 0x0F, data[1] & 0x7F, 2
        if n == 126:
            if len(data) < 4:
                break
            n, pos = struct.unpack("!H", data[2:4])[0], 4
        elif n == 127:
            if len(data) < 10:
                break
            n, pos = struct.unpack("!Q", data[2:10])[0], 10
        if len(data) < pos + n:
            break
        frames.append((opcode, data[pos : pos + n]))
        data = data[pos + n :]
    return frames, data


async def read_head(stream: trio.abc.Stream) -> tuple[bytes, bytes]:
    buf = b""
    with trio.fail_after(10):
        while b"\r\n\r\n" not in buf:
            data = await stream.receive_some(65536)
            assert data, f"connection closed during the handshake: {buf!r}"
            buf += data
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head, rest


def first_difference(got: list[int], want: list[int]) -> str:
    for i, (a, b) in enumerate(zip(got, want, strict=False)):
        if a != b:
            return f"at index {i}: got {got[max(0, i - 3) : i + 4]}, expected {want[max(0, i - 3) : i + 4]}"
    return f"lengths differ: got {len(got)}, expected {len(want)}"


# -- live delivery ----------------------------------------------------------------


@pytest.mark.trio
@pytest.mark.parametrize("how", ["bearer-header", "query-token"])
async def test_ws_live_event_over_tcp_with_token(daemon: Daemon, how: str) -> None:
    token = await sync(daemon.user, "bob", grants={"news": "read"})
    kw = {"token": token} if how == "bearer-header" else {"query_token": token}
    async with ws_tcp(daemon, **kw) as ws:
        await wait_stream_clients(daemon, 1)
        [event] = await publish_admin(daemon, {"topic": "news", "title": "Hello", "body": "wörld"})
        assert await recv(ws) == {"type": "event", "event": event}


@pytest.mark.trio
async def test_ws_live_event_over_unix_socket_as_admin(daemon: Daemon) -> None:
    async with ws_unix(daemon) as ws:
        await wait_stream_clients(daemon, 1)
        events = await publish_admin(
            daemon, [{"topic": "a", "title": "one"}, {"topic": "b/c", "title": "two"}]
        )
        assert await recv_events_until(ws, events[-1]["id"]) == events


@pytest.mark.trio
async def test_sse_live_events_over_tcp_with_httpx(daemon: Daemon) -> None:
    token = await sync(daemon.user, "bob", grants={"news": "read"})
    records: list[tuple[int | None, dict]] = []
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx.AsyncClient(base_url=daemon.url, headers=headers, timeout=10) as client,
        client.stream("GET", "/v1/stream/sse") as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        await wait_stream_clients(daemon, 1)
        events = await publish_admin(
            daemon, [{"topic": "news", "title": f"n{i}"} for i in range(3)]
        )
        event_id: int | None = None
        data: list[str] = []
        with trio.fail_after(10):
            async for line in response.aiter_lines():
                if line.startswith("id:"):
                    event_id = int(line[3:].strip())
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif line == "" and data:
                    records.append((event_id, json.loads("\n".join(data))))
                    event_id, data = None, []
                    if len(records) == len(events):
                        break
    assert [r[0] for r in records] == [e["id"] for e in events]
    assert [r[1] for r in records] == [{"type": "event", "event": e} for e in events]


@pytest.mark.trio
async def test_sse_live_events_over_unix_socket(daemon: Daemon) -> None:
    sse = await RawSSE.open(daemon, unix=True)
    try:
        assert sse.status == 200
        await wait_stream_clients(daemon, 1)
        events = await publish_admin(daemon, [{"topic": "x", "title": "1"}, {"topic": "y"}])
        for ev in events:
            assert await sse.next() == (ev["id"], {"type": "event", "event": ev})
    finally:
        await sse.aclose()


# -- authentication and access ------------------------------------------------------


@pytest.mark.trio
@pytest.mark.parametrize("token", [None, "nfy_not-a-real-token", "garbage"])
async def test_stream_without_valid_credentials_is_rejected_401(
    daemon: Daemon, token: str | None
) -> None:
    with pytest.raises(ConnectionRejected) as info:
        async with ws_tcp(daemon, token):
            pass
    assert info.value.status_code == 401
    sse = await RawSSE.open(daemon, token=token)
    try:
        assert sse.status == 401
        body = await sse.rest()
        assert json.loads(body)["error"]["code"]
    finally:
        await sse.aclose()


@pytest.mark.trio
async def test_stream_on_unreadable_topic_is_forbidden_403(daemon: Daemon) -> None:
    token = await sync(daemon.user, "bob", grants={"news": "read", "drop": "write"})
    writer_only = await sync(daemon.user, "wanda", grants={"drop": "write"})
    for who, topics in ((token, "secret"), (token, "news,secret"), (writer_only, None)):
        with pytest.raises(ConnectionRejected) as info:
            async with ws_tcp(daemon, who, topics=topics):
                pass
        assert info.value.status_code == 403, (who, topics)
        sse = await RawSSE.open(daemon, token=who, topics=topics)
        try:
            assert sse.status == 403
            assert json.loads(await sse.rest())["error"]
        finally:
            await sse.aclose()
    # a readable one still works
    async with ws_tcp(daemon, token, topics="news") as ws:
        await wait_stream_clients(daemon, 1)
        [ev] = await publish_admin(daemon, {"topic": "news"})
        assert (await recv(ws))["event"]["id"] == ev["id"]


TOPICS = [
    "team/a",
    "secret",
    "alerts",
    "team/b/c",
    "other",
    "teams",
    "alerts",
    "team/a",
    "x/team/a",
]


@pytest.mark.trio
async def test_user_only_receives_topics_it_may_read(daemon: Daemon) -> None:
    token = await sync(daemon.user, "bob", grants={"team/*": "read", "alerts": "rw"})
    async with ws_tcp(daemon, token) as ws:
        sse = await RawSSE.open(daemon, token=token)
        try:
            await wait_stream_clients(daemon, 2)
            events = await publish_admin(daemon, [{"topic": t, "title": t} for t in TOPICS])
            [sentinel] = await publish_admin(daemon, {"topic": "alerts", "title": "end"})
            readable = {"team/a", "team/b/c", "alerts"}
            want = [e for e in events if e["topic"] in readable] + [sentinel]
            assert await recv_events_until(ws, sentinel["id"]) == want
            got = []
            while not got or got[-1]["id"] != sentinel["id"]:
                _, frame = await sse.next()
                got.append(frame["event"])
            assert got == want
        finally:
            await sse.aclose()


@pytest.mark.trio
@pytest.mark.parametrize(
    ("topics", "wanted"),
    [
        ("alerts,team/a", {"alerts", "team/a"}),
        ("team/*", {"team/a", "team/b/c"}),
        ("*/a,alerts", {"team/a", "x/team/a", "alerts"}),
        ("team/*,other", {"team/a", "team/b/c", "other"}),
    ],
)
async def test_topics_filter(daemon: Daemon, topics: str, wanted: set[str]) -> None:
    async with ws_unix(daemon, topics=topics) as ws:
        await wait_stream_clients(daemon, 1)
        events = await publish_admin(daemon, [{"topic": t, "title": t} for t in TOPICS])
        want = [e for e in events if e["topic"] in wanted]
        assert await recv_events_until(ws, want[-1]["id"]) == want
        # nothing else was queued before a later matching event
        [after] = await publish_admin(daemon, {"topic": sorted(wanted)[0]})
        assert await recv(ws) == {"type": "event", "event": after}


# -- replay ---------------------------------------------------------------------------


@pytest.mark.trio
@pytest.mark.parametrize("transport", ["ws", "sse"])
@pytest.mark.parametrize("since", ["all", "third"])
async def test_since_replays_in_order_then_follows_live(
    daemon: Daemon, transport: str, since: str
) -> None:
    old = await publish_admin(daemon, [{"topic": "t", "title": f"old {i}"} for i in range(5)])
    cursor = "all" if since == "all" else str(old[2]["id"])
    expected = old if since == "all" else old[3:]
    if transport == "ws":
        async with ws_unix(daemon, since=cursor) as ws:
            assert await recv_events_until(ws, old[-1]["id"]) == expected
            [live] = await publish_admin(daemon, {"topic": "t", "title": "live"})
            assert await recv(ws) == {"type": "event", "event": live}
    else:
        sse = await RawSSE.open(daemon, unix=True, since=cursor)
        try:
            for ev in expected:
                assert await sse.next() == (ev["id"], {"type": "event", "event": ev})
            [live] = await publish_admin(daemon, {"topic": "t", "title": "live"})
            assert await sse.next() == (live["id"], {"type": "event", "event": live})
        finally:
            await sse.aclose()


@pytest.mark.trio
async def test_sse_last_event_id_resumes_exactly(daemon: Daemon) -> None:
    token = await sync(daemon.user, "bob", grants={"feed": "read"})
    first = await publish_admin(daemon, [{"topic": "feed", "title": f"a{i}"} for i in range(3)])
    sse = await RawSSE.open(daemon, token=token, since="all")
    try:
        seen = [await sse.next() for _ in first]
    finally:
        await sse.aclose()
    assert [i for i, _ in seen] == [e["id"] for e in first]
    last_id = seen[-1][0]
    missed = await publish_admin(
        daemon, [{"topic": "feed", "title": f"b{i}"} for i in range(4)] + [{"topic": "other"}]
    )
    sse = await RawSSE.open(daemon, token=token, headers={"Last-Event-ID": str(last_id)})
    try:
        assert sse.status == 200
        for ev in missed[:4]:
            assert await sse.next() == (ev["id"], {"type": "event", "event": ev})
        [live] = await publish_admin(daemon, {"topic": "feed", "title": "live"})
        assert await sse.next() == (live["id"], {"type": "event", "event": live})
    finally:
        await sse.aclose()


RACE_TOPICS = ["race/a", "race/x", "secret", "race/b/c"]  # round-robin in the filtered variant


@pytest.mark.trio
@pytest.mark.parametrize(
    ("queue", "filtered"),
    [(None, False), (50, False), (50, True)],
    ids=["default-queue", "tiny-queue", "tiny-queue-user-topics"],
)
async def test_replay_races_concurrent_publishing_without_gaps_or_duplicates(
    make_daemon: Callable[..., Daemon], queue: int | None, filtered: bool
) -> None:
    """Resume from the middle of 2,000 events while 1,000 more are published.

    The client reads one replayed frame and then stops reading until ten batches
    (200 events) have been acknowledged behind the replay. The replay (1,000 events
    of ~2 KB) is far larger than the socket buffers, so the server is mid-replay
    while they are published. With a 50-frame hub queue the events published
    meanwhile overflow the subscriber's queue during the replay, which must start
    another replay round rather than lose or repeat anything.

    Unfiltered: the admin over the Unix socket sees everything. Filtered: a user
    over TCP who may read ``race/*`` asks for ``topics=race/a,race/b/*``, so the
    replay pages go through both the ACL and the topic filter and half of the
    events (``race/x``, ``secret``) must never arrive.
    """
    # The client deliberately stops reading; on a loaded machine publishing the
    # ten batches may take longer than the default send timeout, which is not
    # what this test is about.
    env = {"NOTIFYD_REPLAY_PAGE": "100", "NOTIFYD_STREAM_SEND_TIMEOUT": "60"}
    if queue is not None:
        env["NOTIFYD_STREAM_QUEUE"] = str(queue)
    d = await sync(make_daemon(extra_env=env).start)
    filler = "·" * 1000

    def topic(n: int) -> str:
        return RACE_TOPICS[n % 4] if filtered else "race"

    acked: list[dict] = []
    received: list[int] = []
    async with admin_async(d) as client:
        for start in range(0, 2000, 500):
            batch = [{"topic": topic(i), "title": f"pre {i}", "body": filler} for i in range(start, start + 500)]  # fmt: skip
            acked += await publish(client, batch)
        since = acked[999]["id"]
        batches_done = 0
        held = trio.Event()

        async def publisher() -> None:
            nonlocal batches_done
            for b in range(50):
                batch = [{"topic": topic(i), "title": f"live {b}.{i}", "body": filler} for i in range(20)]  # fmt: skip
                acked.extend(await publish(client, batch))
                batches_done += 1
                if batches_done == 10:
                    held.set()
            acked.extend(await publish(client, {"topic": topic(0), "title": "sentinel"}))

        if filtered:
            token = await sync(d.user, "racer", grants={"race/*": "read"})
            stream = ws_tcp(d, token, since=str(since), topics="race/a,race/b/*")
        else:
            stream = ws_unix(d, since=str(since))
        async with stream as ws:
            first = await recv(ws)
            assert first["type"] == "event", first
            received.append(first["event"]["id"])
            with trio.fail_after(90):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(publisher)
                    await held.wait()  # not reading: the replay is stuck behind us
                    while True:
                        frame = await recv(ws, 30)
                        assert frame["type"] == "event", (frame, len(received))
                        received.append(frame["event"]["id"])
                        if frame["event"]["title"] == "sentinel":
                            break
    visible = {"race/a", "race/b/c"} if filtered else {"race"}
    want = sorted(e["id"] for e in acked if e["id"] > since and e["topic"] in visible)
    assert len(want) == (1001 if filtered else 2001)
    assert received == want, first_difference(received, want)


# -- read state --------------------------------------------------------------------------


@pytest.mark.trio
async def test_read_state_syncs_to_every_connection_of_that_user_only(daemon: Daemon) -> None:
    carol = await sync(daemon.user, "carol", grants={"inbox/*": "read"})
    dave = await sync(daemon.user, "dave", grants={"inbox/*": "read"})
    evs = await publish_admin(daemon, [{"topic": "inbox/a", "title": f"m{i}"} for i in range(3)])
    cursor = str(evs[-1]["id"])
    async with (
        ws_tcp(daemon, carol, since=cursor) as c1,
        ws_tcp(daemon, query_token=carol, since=cursor) as c2,
        ws_tcp(daemon, dave, since=cursor) as d1,
        httpx.AsyncClient(
            base_url=daemon.url, headers={"Authorization": f"Bearer {carol}"}, timeout=10
        ) as http,
    ):
        sse = await RawSSE.open(daemon, token=carol, since=cursor)
        try:
            await wait_stream_clients(daemon, 4)
            r = await http.post(f"/v1/events/{evs[0]['id']}/read")
            assert r.status_code == 200, r.text
            state = {"type": "state", "id": evs[0]["id"], "state": "read"}
            assert await recv(c1) == state
            assert await recv(c2) == state
            assert await sse.next() == (None, state)

            r = await http.post("/v1/inbox/read-all")
            assert r.status_code == 200, r.text
            for ws in (c1, c2):
                frame = await recv(ws)
                assert frame["type"] == "state" and frame["state"] == "read", frame
                assert frame["all"] is True and frame["upto"] == evs[-1]["id"], frame
            _, frame = await sse.next()
            assert frame["all"] is True and frame["upto"] == evs[-1]["id"], frame

            # dave saw none of it: his next frame is the next event
            [ev] = await publish_admin(daemon, {"topic": "inbox/b", "title": "after"})
            assert await recv(d1) == {"type": "event", "event": ev}
            assert await recv(c1) == {"type": "event", "event": ev}
            assert await recv(c2) == {"type": "event", "event": ev}
            # and his read state is untouched
            r = await sync(
                user_request, daemon, dave, "GET", "/v1/events", params={"unread": "true"}
            )
            assert {e["id"] for e in r.json()["events"]} == {e["id"] for e in evs} | {ev["id"]}
        finally:
            await sse.aclose()


# -- access changes ----------------------------------------------------------------------


def admin_request(daemon: Daemon, method: str, path: str, **kw: Any) -> httpx.Response:
    with daemon.admin() as c:
        return c.request(method, path, **kw)


def user_request(daemon: Daemon, token: str, method: str, path: str, **kw: Any) -> httpx.Response:
    with daemon.http(token) as c:
        return c.request(method, path, **kw)


async def expect_resync(ws: WebSocketConnection) -> str:
    frame = await recv(ws)
    assert frame["type"] == "resync", frame
    with trio.fail_after(10), pytest.raises(ConnectionClosed):
        await ws.get_message()
    assert ws.closed is not None and ws.closed.code == 4000, ws.closed
    return frame["reason"]


@pytest.mark.trio
async def test_revoked_acl_or_token_ends_the_stream(daemon: Daemon) -> None:
    token = await sync(daemon.user, "bob", grants={"news": "read", "misc": "read"})
    with daemon.admin() as c:
        r = c.post("/v1/tokens", json={"user": "bob"})
        assert r.status_code == 201, r.text
        second = r.json()

    # an ACL grant taken away: the stream ends; the topic is now refused
    async with ws_tcp(daemon, token, topics="news") as ws:
        await wait_stream_clients(daemon, 1)
        params = {"user": "bob", "pattern": "news"}
        r = await sync(admin_request, daemon, "DELETE", "/v1/acl", params=params)
        assert r.status_code == 204, r.text
        assert await expect_resync(ws)
    with pytest.raises(ConnectionRejected) as info:
        async with ws_tcp(daemon, token, topics="news"):
            pass
    assert info.value.status_code == 403

    # a token revoked: its stream ends and it cannot reconnect
    async with ws_tcp(daemon, second["token"]) as ws:
        await wait_stream_clients(daemon, 1)
        r = await sync(admin_request, daemon, "DELETE", f"/v1/tokens/{second['id']}")
        assert r.status_code == 204, r.text
        assert await expect_resync(ws)
    with pytest.raises(ConnectionRejected) as info:
        async with ws_tcp(daemon, second["token"]):
            pass
    assert info.value.status_code == 401
    # bob's other token still streams
    async with ws_tcp(daemon, token) as ws:
        await wait_stream_clients(daemon, 1)
        [ev] = await publish_admin(daemon, {"topic": "misc"})
        assert await recv(ws) == {"type": "event", "event": ev}


@pytest.mark.trio
async def test_revoking_a_token_leaves_other_users_streams_alone(daemon: Daemon) -> None:
    alice = await sync(daemon.user, "alice", grants={"news": "read"})
    await sync(daemon.user, "bob", grants={"news": "read"})
    with daemon.admin() as c:
        r = c.post("/v1/tokens", json={"user": "bob"})
        assert r.status_code == 201, r.text
        bobs = r.json()
    async with ws_tcp(daemon, alice) as ws:
        await wait_stream_clients(daemon, 1)
        r = await sync(admin_request, daemon, "DELETE", f"/v1/tokens/{bobs['id']}")
        assert r.status_code == 204, r.text
        [ev] = await publish_admin(daemon, {"topic": "news"})
        assert await recv(ws) == {"type": "event", "event": ev}


# -- keepalives -----------------------------------------------------------------------------


@pytest.mark.trio
async def test_keepalive_frames(make_daemon: Callable[..., Daemon]) -> None:
    d = await sync(make_daemon(extra_env={"NOTIFYD_KEEPALIVE_SECONDS": "0.2"}).start)
    async with ws_unix(d) as ws:
        sse = await RawSSE.open(d, unix=True)
        try:
            with trio.fail_after(10):
                for _ in range(3):
                    assert await recv(ws, keepalives=True) == {"type": "keepalive"}
                    assert await sse.next(keepalives=True) == (None, {"type": "keepalive"})
            # events still flow between keepalives
            [ev] = await publish_admin(d, {"topic": "k"})
            assert await recv(ws) == {"type": "event", "event": ev}
            assert await sse.next() == (ev["id"], {"type": "event", "event": ev})
        finally:
            await sse.aclose()


@pytest.mark.trio
@pytest.mark.slow
async def test_streams_live_longer_than_the_request_head_timeout(
    make_daemon: Callable[..., Daemon],
) -> None:
    d = await sync(make_daemon(extra_env={"NOTIFYD_KEEPALIVE_SECONDS": "1"}).start)
    token = await sync(d.user, "bob", grants={"long": "read"})
    async with ws_tcp(d, token) as ws:
        sse = await RawSSE.open(d, unix=True)
        try:
            await wait_stream_clients(d, 2)
            opened = trio.current_time()
            # stay connected for 12 s, i.e. past the server's 10 s request-head timeout
            while trio.current_time() - opened < 12:
                assert await recv(ws, 5, keepalives=True) == {"type": "keepalive"}
                assert await sse.next(5, keepalives=True) == (None, {"type": "keepalive"})
            [ev] = await publish_admin(d, {"topic": "long", "title": "still there?"})
            assert await recv(ws) == {"type": "event", "event": ev}
            assert await sse.next() == (ev["id"], {"type": "event", "event": ev})
        finally:
            await sse.aclose()


# -- lagging and slow consumers -------------------------------------------------------------


@pytest.mark.trio
@pytest.mark.parametrize("transport", ["ws", "sse"])
async def test_overflowing_client_gets_resync_and_can_resume(
    make_daemon: Callable[..., Daemon], transport: str
) -> None:
    d = await sync(make_daemon(extra_env={"NOTIFYD_STREAM_QUEUE": "20"}).start)
    [first] = await publish_admin(d, {"topic": "burst", "title": "before"})
    burst = [{"topic": "burst", "title": f"b{i}"} for i in range(30)]
    if transport == "ws":
        async with ws_unix(d) as ws:
            await wait_stream_clients(d, 1)
            events = await publish_admin(d, burst)  # 30 frames at once into a 20-frame queue
            frame = await recv(ws)
            assert frame["type"] == "resync" and frame["reason"], frame
            with trio.fail_after(10), pytest.raises(ConnectionClosed):
                await ws.get_message()
            assert ws.closed is not None and ws.closed.code == 4000
    else:
        sse = await RawSSE.open(d, unix=True)
        try:
            await wait_stream_clients(d, 1)
            events = await publish_admin(d, burst)
            event_id, frame = await sse.next()
            assert event_id is None and frame["type"] == "resync", frame
            assert await sse.rest() == b""
        finally:
            await sse.aclose()
    assert await metric(d, "notifyd_stream_resyncs_total") == 1
    await wait_stream_clients(d, 0)
    # reconnecting from the last id seen gets everything, once
    async with ws_unix(d, since=str(first["id"])) as ws:
        assert await recv_events_until(ws, events[-1]["id"]) == events


def sse_records(data: bytes) -> list[dict]:
    """The complete ``data:`` frames in raw SSE bytes (an incomplete tail is ignored)."""
    out = []
    for record in data.split(b"\n\n")[:-1]:
        for line in record.split(b"\n"):
            if line.startswith(b"data: "):
                out.append(json.loads(line[6:]))
    return out


#: events of the first phase; the slow client's queue holds them all, so it stays connected
SLOW_PHASE1 = 1500
SLOW_QUEUE = SLOW_PHASE1 + 50


@pytest.mark.trio
@pytest.mark.parametrize("transport", ["ws", "sse"])
async def test_slow_consumer_is_dropped_without_slowing_anyone(
    make_daemon: Callable[..., Daemon], transport: str
) -> None:
    """Ordering, not latency. Phase 1: the slow client stops reading, but its queue can
    hold every event of the phase and its send timeout is an hour, so only a publisher
    (or a fan-out) waiting on it could block, and then the phase would never end: every
    publish is acknowledged and the fast client gets every event while the slow one is
    still connected. Phase 2: its queue overflows and it is dropped with a resync; the
    fast one goes on. The slow one got fewer events, in order: it really was stuck."""
    env = {"NOTIFYD_STREAM_QUEUE": str(SLOW_QUEUE), "NOTIFYD_STREAM_SEND_TIMEOUT": "3600"}
    d = await sync(make_daemon(extra_env=env).start)
    token = await sync(d.user, "reader", grants={"bulk": "read"})

    # The slow client: a hand-made request on a socket with a tiny receive buffer,
    # after which it never reads, so the server's writes soon block.
    sock = trio.socket.socket(stdsocket.AF_INET, stdsocket.SOCK_STREAM)
    sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", d.port))
    slow = trio.SocketStream(sock)
    if transport == "ws":
        await slow.send_all(ws_handshake(resource(token=token)))
    else:
        path = resource("/v1/stream/sse", token=token)
        await slow.send_all(f"GET {path} HTTP/1.1\r\nHost: notifyd\r\n\r\n".encode())
    head, early = await read_head(slow)
    assert head.startswith(b"HTTP/1.1 101 " if transport == "ws" else b"HTTP/1.1 200 "), head

    body = "#" * 4000  # 1,500 events of ~4 KB: far more than the socket buffers hold
    per_batch = 10
    acked: list[int] = []
    got: list[int] = []
    # the fast client reads the socket eagerly, whatever the test is doing
    async with ws_tcp(d, token, message_queue_size=4096) as fast:
        await wait_stream_clients(d, 2)

        async def consume(total: int) -> None:
            while len(got) < total:
                frame = await recv(fast, 30)
                assert frame["type"] == "event", frame
                got.append(frame["event"]["id"])

        async def phase(client: httpx.AsyncClient, n: int, text: str) -> None:
            with trio.fail_after(120):  # a publisher blocked on the slow client never ends
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(consume, len(acked) + n)
                    for b in range(n // per_batch):
                        batch = [{"topic": "bulk", "title": f"{b}.{i}", "body": text}
                                 for i in range(per_batch)]  # fmt: skip
                        acked.extend(e["id"] for e in await publish(client, batch))

        async with admin_async(d) as client:
            await phase(client, SLOW_PHASE1, body)
            # the fast subscriber got everything, in order ...
            assert got == acked and len(acked) == SLOW_PHASE1
            # ... while the slow one was still connected and not yet dropped
            assert await metric(d, "notifyd_stream_resyncs_total") == 0
            with d.admin() as c:
                assert (await sync(c.get, "/healthz")).json()["stream_clients"] == 2
            # now its queue overflows: it is dropped for lagging, the fast one goes on
            await phase(client, SLOW_QUEUE + 2 * per_batch, "small")
        assert got == acked
        assert await metric(d, "notifyd_stream_resyncs_total") >= 1
        await wait_stream_clients(d, 1)

    # Reading now: a prefix of the events, then the end of the connection, with a
    # resync frame (and close 4000) if the server was not stuck in the middle of a frame.
    data = early
    with trio.fail_after(60):
        try:
            while chunk := await slow.receive_some(1 << 20):
                data += chunk
        except trio.BrokenResourceError:
            pass  # reset instead of FIN: closed all the same
    await slow.aclose()
    if transport == "ws":
        frames, _tail = server_frames(data)
        messages = [json.loads(p) for op, p in frames if op == 0x1]
        closes = [p for op, p in frames if op == 0x8]
        if closes:
            assert struct.unpack("!H", closes[0][:2])[0] == 4000
            assert messages[-1]["type"] == "resync"
    else:
        messages = sse_records(data)
    ids = [m["event"]["id"] for m in messages if m["type"] == "event"]
    assert ids == acked[: len(ids)]
    assert len(ids) < SLOW_PHASE1, "the slow client was never stuck"
    assert all(m["type"] == "event" for m in messages[:-1])


# -- streams on a reused keep-alive connection (the ASGI fallback) --------------------------


async def http_exchange(stream: trio.abc.Stream, request: bytes, pending: bytes = b"") -> bytes:
    """Send a plain request on a raw keep-alive connection; return its head.

    The body (``Content-Length``) is read and dropped; bytes after it are kept in
    ``pending`` for the next exchange.
    """
    await stream.send_all(request)
    buf = pending
    with trio.fail_after(10):
        while b"\r\n\r\n" not in buf:
            chunk = await stream.receive_some(65536)
            assert chunk, buf
            buf += chunk
        head, rest = buf.split(b"\r\n\r\n", 1)
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            chunk = await stream.receive_some(65536)
            assert chunk
            rest += chunk
    assert rest[length:] == b"", "unexpected bytes after the response"
    return head


@pytest.mark.trio
async def test_sse_on_a_reused_keepalive_connection(daemon: Daemon) -> None:
    token = await sync(daemon.user, "bob", grants={"feed": "read"})
    old = await publish_admin(daemon, [{"topic": "feed", "title": f"o{i}"} for i in range(3)])
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=daemon.url, headers=headers, timeout=10) as client:
        assert (await client.get("/v1/me")).status_code == 200  # the connection is now in use
        async with client.stream("GET", "/v1/stream/sse", params={"since": "all"}) as response:
            assert response.status_code == 200
            # served by hypercorn (chunked), not the fast path (which closes the connection)
            assert response.headers.get("transfer-encoding") == "chunked"
            records: list[tuple[int | None, dict]] = []
            event_id: int | None = None
            live: list[dict] = []
            with trio.fail_after(10):
                async for line in response.aiter_lines():
                    if line.startswith("id:"):
                        event_id = int(line[3:].strip())
                    elif line.startswith("data:"):
                        records.append((event_id, json.loads(line[5:].strip())))
                        event_id = None
                        if len(records) == len(old):
                            live = await publish_admin(daemon, {"topic": "feed", "title": "live"})
                        if len(records) == len(old) + 1:
                            break
    want = old + live
    assert records == [(e["id"], {"type": "event", "event": e}) for e in want]


@pytest.mark.trio
async def test_websocket_on_a_reused_keepalive_connection(daemon: Daemon) -> None:
    token = await sync(daemon.user, "bob", grants={"feed": "read"})
    old = await publish_admin(daemon, [{"topic": "feed", "title": f"o{i}"} for i in range(3)])
    stream = await trio.open_tcp_stream("127.0.0.1", daemon.port)
    async with stream:
        auth = f"Authorization: Bearer {token}\r\n"
        head = await http_exchange(
            stream, f"GET /v1/me HTTP/1.1\r\nHost: notifyd\r\n{auth}\r\n".encode()
        )
        assert head.startswith(b"HTTP/1.1 200"), head
        request = ws_handshake(resource(since="all"))
        await stream.send_all(request.replace(b"\r\n\r\n", f"\r\n{auth}\r\n".encode(), 1))
        head, data = await read_head(stream)
        assert head.startswith(b"HTTP/1.1 101"), head
        messages: list[dict] = []
        live: list[dict] = []
        with trio.fail_after(10):
            while len(messages) < len(old) + 1:
                frames, data = server_frames(data)
                for op, payload in frames:
                    assert op == 0x1, (op, payload)
                    messages.append(json.loads(payload))
                if len(messages) == len(old) and not live:
                    live = await publish_admin(daemon, {"topic": "feed", "title": "live"})
                if len(messages) < len(old) + 1:
                    chunk = await stream.receive_some(65536)
                    assert chunk
                    data += chunk
        assert messages == [{"type": "event", "event": e} for e in old + live]


@pytest.mark.trio
async def test_websocket_on_a_reused_connection_without_credentials_is_401(daemon: Daemon) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", daemon.port)
    async with stream:
        head = await http_exchange(stream, b"GET /healthz HTTP/1.1\r\nHost: notifyd\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        await stream.send_all(ws_handshake("/v1/stream"))
        head, _ = await read_head(stream)
        assert head.split(b" ", 2)[1] == b"401", head


@pytest.mark.trio
async def test_sse_on_a_reused_connection_outlives_the_keepalive_timeout(
    make_daemon: Callable[..., Daemon],
) -> None:
    env = {"NOTIFYD_KEEP_ALIVE_TIMEOUT": "2", "NOTIFYD_KEEPALIVE_SECONDS": "0.5"}
    d = await sync(make_daemon(extra_env=env).start)
    async with admin_async(d) as client:
        assert (await client.get("/healthz")).status_code == 200
        async with client.stream("GET", "/v1/stream/sse") as response:
            assert response.headers.get("transfer-encoding") == "chunked"  # the fallback
            await wait_stream_clients(d, 1)
            opened = trio.current_time()
            lines = response.aiter_lines()
            with trio.fail_after(15):
                # keepalives for 4 s: twice the idle timeout, while the client stays silent
                while trio.current_time() - opened < 4:
                    line = await anext(lines)
                    assert line in ("", 'data: {"type":"keepalive"}'), line
                [ev] = await publish_admin(d, {"topic": "idle", "title": "still there?"})
                async for line in lines:
                    if line.startswith("id:"):
                        assert int(line[3:]) == ev["id"]
                        break


# -- control frames ------------------------------------------------------------------------


@pytest.mark.trio
async def test_ping_gets_pong(daemon: Daemon) -> None:
    async with ws_unix(daemon) as ws:
        with trio.fail_after(5):
            await ws.ping(b"are you there?")
            await ws.ping()
        await wait_stream_clients(daemon, 1)
        [ev] = await publish_admin(daemon, {"topic": "p"})
        assert await recv(ws) == {"type": "event", "event": ev}


@pytest.mark.trio
@pytest.mark.sqlite_only(
    reason="WebSocket framing limits, decided before any store call (the engine plays no part)"
)
async def test_oversized_client_message_is_closed_1009(daemon: Daemon) -> None:
    async with ws_unix(daemon) as ws:
        await ws.send_message("x" * (64 * 1024))  # exactly the limit: fine
        with trio.fail_after(5):
            await ws.ping(b"still here")
        await ws.send_message("x" * (64 * 1024 + 1))
        with trio.fail_after(10), pytest.raises(ConnectionClosed):
            await ws.get_message()
        assert ws.closed is not None and ws.closed.code == 1009


def unmasked_text(payload: bytes) -> bytes:
    return struct.pack("!BB", 0x81, len(payload)) + payload


@pytest.mark.trio
@pytest.mark.parametrize(
    ("frames", "code"),
    [
        # three 30 KB fragments of one message: each is small, the message is not
        (
            [
                client_frame(0x1, b"a" * 30_000, fin=False),
                client_frame(0x0, b"b" * 30_000, fin=False),
                client_frame(0x0, b"c" * 30_000, fin=True),
            ],
            1009,
        ),
        ([unmasked_text(b"hello")], 1002),  # RFC 6455: client frames must be masked
    ],
    ids=["fragmented-oversized", "unmasked"],
)
@pytest.mark.sqlite_only(
    reason="WebSocket framing rules, decided before any store call (the engine plays no part)"
)
async def test_raw_client_frames_breaking_the_rules_are_closed(
    daemon: Daemon, frames: list[bytes], code: int
) -> None:
    stream = await trio.open_unix_socket(str(daemon.socket))
    async with stream:
        await stream.send_all(ws_handshake("/v1/stream"))
        head, data = await read_head(stream)
        assert head.startswith(b"HTTP/1.1 101 "), head
        for frame in frames:
            await stream.send_all(frame)
        with trio.fail_after(10):
            while True:
                got, _ = server_frames(data)
                if any(op == 0x8 for op, _ in got):
                    break
                chunk = await stream.receive_some(65536)
                assert chunk, "closed without a close frame"
                data += chunk
    [close] = [p for op, p in got if op == 0x8]
    assert struct.unpack("!H", close[:2])[0] == code


@pytest.mark.trio
async def test_sigterm_closes_streams_with_1001(daemon: Daemon) -> None:
    token = await sync(daemon.user, "bob", grants={"*": "read"})
    async with ws_unix(daemon) as unix_ws, ws_tcp(daemon, token) as tcp_ws:
        sse = await RawSSE.open(daemon, token=token)
        try:
            await wait_stream_clients(daemon, 3)
            assert await sync(daemon.stop) == 0
            for ws in (unix_ws, tcp_ws):
                with trio.fail_after(10), pytest.raises(ConnectionClosed):
                    await ws.get_message()
                assert ws.closed is not None and ws.closed.code == 1001, ws.closed
            assert b"data:" not in await sse.rest()  # the SSE stream simply ends
        finally:
            await sse.aclose()
