"""Slow and hostile clients: slowloris heads and bodies time out (408), oversized
bodies get 413 in each door's shape before being read whole (Content-Length and
chunked), client WebSocket messages are size-limited on every WebSocket, and an
ntfy subscriber that stops reading is cut off without slowing anyone."""

from __future__ import annotations

import itertools
import json
import socket as stdsocket
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing
from conftest import Daemon
from test_streams import (
    admin_async,
    client_frame,
    http_exchange,
    metric,
    publish,
    read_head,
    server_frames,
    sync,
    wait_stream_clients,
    ws_handshake,
)

from notifyd.api.app import make_app
from notifyd.api.server import Front
from notifyd.config import Config
from notifyd.core.services import Services
from notifyd.core.sqlite.store import SQLiteStore

TIMEOUT = 1.0  # header_timeout and body_timeout of the slowloris daemon
SMALL = 4096  # its max_request_bytes


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon for the module (users are made per test): short timeouts, small bodies."""
    d = Daemon(tmp_path_factory.mktemp("strict"), extra_env={
        "NOTIFYD_HEADER_TIMEOUT": str(TIMEOUT),
        "NOTIFYD_BODY_TIMEOUT": str(TIMEOUT),
        "NOTIFYD_MAX_REQUEST_BYTES": str(SMALL),
        # ntfy's doors take a long body as a file: the same small limit for files
        "NOTIFYD_ATTACHMENT_MAX_BYTES": str(SMALL),
    })  # fmt: skip
    d.start()
    yield d
    d.stop()


def new_user(d: Daemon, grants: dict[str, str] | None = None, role: str = "user") -> str:
    """A token of a user made for this test alone."""
    return d.user(f"u{next(_users)}", grants=grants, role=role)


_users = itertools.count()


async def read_to_end(stream: trio.abc.Stream, timeout: float) -> bytes:
    """Everything the server sends until it closes; fails if it does not close in time."""
    data = b""
    with trio.fail_after(timeout):
        try:
            while chunk := await stream.receive_some(65536):
                data += chunk
        except trio.BrokenResourceError:
            pass  # reset instead of FIN: closed all the same
    return data


async def trickle(stream: trio.abc.Stream, byte: bytes = b"X", every: float = 0.2) -> None:
    """The slowloris: one byte now and then, never finishing."""
    try:
        while True:
            await stream.send_all(byte)
            await trio.sleep(every)  # pacing the attacker, not waiting for the server
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def expect_408(stream: trio.abc.Stream, before: bytes = b"") -> bytes:
    """Trickle on ``stream`` until the server answers and closes; return the answer."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trickle, stream)
        data = await read_to_end(stream, TIMEOUT + 8)
        nursery.cancel_scope.cancel()
    assert data.startswith(before + b"HTTP/1.1 408 "), data[:300]
    assert b'"code":"timeout"' in data
    return data


HEADS = {
    # the request line itself never ends (the connection front reads it)
    "request-line": b"GET /healthz",
    # the request line arrives, the headers never end (hypercorn parses them)
    "headers": b"GET /healthz HTTP/1.1\r\nHost: notifyd\r\nX-Slow: ",
}


@pytest.mark.trio
@pytest.mark.parametrize("where", list(HEADS))
async def test_slowloris_head_on_a_new_connection_gets_408(strict: Daemon, where: str) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", strict.port)
    async with stream:
        await stream.send_all(HEADS[where])
        await expect_408(stream)


@pytest.mark.trio
async def test_slowloris_head_on_a_kept_alive_connection_gets_408(strict: Daemon) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", strict.port)
    async with stream:
        head = await http_exchange(stream, b"GET /healthz HTTP/1.1\r\nHost: notifyd\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        # idle for a while is fine (keep_alive_timeout), and a second request works
        head = await http_exchange(stream, b"GET /healthz HTTP/1.1\r\nHost: notifyd\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        await stream.send_all(HEADS["headers"])
        await expect_408(stream)


# The server's deadlines under MockClock: the real front, hypercorn and app in-process on
# a socket pair, with virtual time moved by the test only (no autojump). It shows that no
# 408 comes before the deadline (however the client trickles) and that one comes after.

MOCK_CASES = {
    "request-line": (b"GET /healthz", "head"),
    "headers": (HEADS["headers"], "head"),
    "body": (
        b"POST /v1/events HTTP/1.1\r\nHost: notifyd\r\nContent-Type: application/json\r\n"
        b'Content-Length: 1000\r\n\r\n{"topic": "slow", "title": "',
        "body",
    ),
}


async def _nothing_answered(sock: stdsocket.socket) -> bool:
    """Once every task of the run waits, whether the server has sent nothing yet."""
    await trio.testing.wait_all_tasks_blocked()
    try:
        sock.recv(1, stdsocket.MSG_PEEK)
    except BlockingIOError:
        return True
    return False


async def _read_all(sock: stdsocket.socket) -> bytes:
    data = b""
    while True:
        await trio.lowlevel.wait_readable(sock)
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


@asynccontextmanager
async def _front_on_a_socketpair(tmp_path: Path) -> AsyncIterator[stdsocket.socket]:
    """The real connection front, hypercorn and app in-process, serving one connection:
    yields the client's end of a socket pair (non-blocking)."""
    store = SQLiteStore(tmp_path / "m.db")
    await store.start()
    try:
        config = Config(data_dir=str(tmp_path), header_timeout=TIMEOUT, body_timeout=TIMEOUT)
        svc = Services.build(config, store)
        await svc.accounts.ensure_user(config.socket_user, "admin")  # the socket acts as it
        front = Front(svc, make_app(svc))
        ours, theirs = stdsocket.socketpair()
        async with trio.open_nursery() as nursery:
            server = trio.SocketStream(trio.socket.from_stdlib_socket(theirs))
            nursery.start_soon(front.handle, server, True)
            ours.setblocking(False)
            yield ours
            ours.close()
            nursery.cancel_scope.cancel()
    finally:
        await store.close()


@pytest.mark.parametrize("case", list(MOCK_CASES))
def test_no_408_before_the_deadline_and_one_after_under_mock_clock(
    tmp_path: Path, case: str
) -> None:
    start, phase = MOCK_CASES[case]
    clock = trio.testing.MockClock()  # autojump off: time moves only by clock.jump

    async def scenario() -> bytes:
        async with _front_on_a_socketpair(tmp_path) as ours:
            ours.send(start)  # the head's first byte, or (body) the end of the head
            # a byte every 0.2 s does not move the deadline; nothing comes before it
            for _ in range(4):
                assert await _nothing_answered(ours), "answered before the deadline"
                clock.jump(TIMEOUT * 0.2)
                ours.send(b"X")
            clock.jump(TIMEOUT * 0.2 - 1e-3)
            assert await _nothing_answered(ours), "answered before the deadline"
            clock.jump(2e-3)  # just past it
            return await _read_all(ours)  # (pytest-timeout bounds the wait)

    data = trio.run(scenario, clock=clock)
    assert data.startswith(b"HTTP/1.1 408 "), data[:300]
    assert b'"code":"timeout"' in data and f"request {phase}".encode() in data, data


def test_an_upload_earns_time_as_it_arrives_under_mock_clock(tmp_path: Path) -> None:
    """A file upload sent at a fair rate (here 128 KiB/s, over the 32 KiB/s floor) may
    take longer than body_timeout; once it stops, the 408 comes when its earned time
    is up (body_timeout + 1 s per 32 KiB received), not before."""
    clock = trio.testing.MockClock()
    piece, pieces = 64 * 1024, 6

    async def scenario() -> bytes:
        async with _front_on_a_socketpair(tmp_path) as ours:
            ours.send(b"POST /v1/attachments?filename=big.bin HTTP/1.1\r\nHost: notifyd\r\n"
                      b"Content-Length: %d\r\n\r\n" % (piece * pieces * 2))  # fmt: skip
            for _ in range(pieces):  # 3 s in all, three times body_timeout
                assert await _nothing_answered(ours), "a fair upload timed out"
                clock.jump(0.5)
                data = b"x" * piece
                while data:
                    await trio.lowlevel.wait_writable(ours)
                    data = data[ours.send(data) :]
            # earned: body_timeout + 6 × 64 KiB / 32 KiB/s = 13 s from the head
            assert await _nothing_answered(ours)
            clock.jump(13 - 3 - 1e-3)
            assert await _nothing_answered(ours), "answered before the earned deadline"
            clock.jump(2e-3)
            return await _read_all(ours)

    data = trio.run(scenario, clock=clock)
    assert data.startswith(b"HTTP/1.1 408 "), data[:300]
    assert b"request body" in data, data


def slow_body_request(token: str, path: str = "/v1/events") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: notifyd\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        '{"topic": "slow", "title": "'
    ).encode()


@pytest.mark.trio
@pytest.mark.parametrize("path", ["/v1/events", "/v1/channels", "/slow", "/message"])
async def test_slowloris_body_gets_408_new_and_kept_alive(strict: Daemon, path: str) -> None:
    token = await sync(new_user, strict, {"slow": "rw"})
    stream = await trio.open_tcp_stream("127.0.0.1", strict.port)
    async with stream:
        await stream.send_all(slow_body_request(token, path))
        await expect_408(stream)
    stream = await trio.open_tcp_stream("127.0.0.1", strict.port)
    async with stream:
        auth = f"Authorization: Bearer {token}\r\n"
        head = await http_exchange(
            stream, f"GET /v1/me HTTP/1.1\r\nHost: notifyd\r\n{auth}\r\n".encode()
        )
        assert head.startswith(b"HTTP/1.1 200"), head
        await stream.send_all(slow_body_request(token, path))
        await expect_408(stream)
    with strict.admin() as c:  # the trickled events were never stored
        assert c.get("/v1/events", params={"topic": "slow"}).json()["events"] == []


@pytest.mark.trio
async def test_200_slowloris_connections_do_not_stop_normal_clients(
    make_daemon: Callable[..., Daemon],
) -> None:
    """Normal requests complete while 200 half-sent heads still hold their
    connections: an ordering (checked on each slow connection once the normal client
    is done), not a duration. Each slow one is then answered and closed."""
    d = await sync(make_daemon(extra_env={"NOTIFYD_HEADER_TIMEOUT": "15"}).start)
    token = await sync(d.user, "pub", grants={"ok": "rw"})
    slow: list[stdsocket.socket] = []
    try:
        for i in range(200):
            sock = stdsocket.create_connection(("127.0.0.1", d.port))
            slow.append(sock)
            half = b"GET /healthz" if i % 2 else b"POST /v1/events HTTP/1.1\r\nHost: x\r\n"
            sock.sendall(half)
            sock.setblocking(False)
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=d.url, headers=headers, timeout=10) as client:
            for i in range(5):
                r = await client.post("/v1/events", json={"topic": "ok", "title": f"n{i}"})
                assert r.status_code == 201, r.text
                assert (await client.get("/v1/events", params={"topic": "ok"})).status_code == 200
        # ... and every slow connection is still open and unanswered after that
        for sock in slow:
            with pytest.raises(BlockingIOError):
                sock.recv(1, stdsocket.MSG_PEEK)
        # every slowloris connection is closed once its time is up
        async with trio.open_nursery() as nursery:
            for sock in slow:
                stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
                nursery.start_soon(read_to_end, stream, 60)
    finally:
        for sock in slow:
            sock.close()


# -- 413 ---------------------------------------------------------------------------------


def chunks(total: int) -> Iterator[bytes]:
    """A body sent with Transfer-Encoding: chunked (httpx does for iterators)."""
    sent = 0
    while sent < total:
        yield b'{"x": "' + b"a" * 1000 + b'"}'
        sent += 1010


def notifyd_shape(r: httpx.Response) -> None:
    assert r.json()["error"]["code"] == "too_large", r.text


def ntfy_shape(r: httpx.Response) -> None:
    assert r.json()["http"] == 413 and r.json()["code"] == 41301, r.text


def gotify_shape(r: httpx.Response) -> None:
    assert r.json()["errorCode"] == 413 and "errorDescription" in r.json(), r.text


DOORS = [
    ("POST", "/v1/events", notifyd_shape),
    ("POST", "/v1/channels", notifyd_shape),
    ("PUT", "/v1/preferences", notifyd_shape),
    ("POST", "/v1/users", notifyd_shape),
    ("POST", "/v1/tokens", notifyd_shape),
    ("POST", "/big", ntfy_shape),
    ("PUT", "/", ntfy_shape),
    ("POST", "/message", gotify_shape),
]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversized_bodies_get_413_in_each_doors_shape(strict: Daemon, chunked: bool) -> None:
    d = strict
    user = new_user(d, {"big": "rw", "fits": "rw", "gotify/*": "rw"})
    admin = new_user(d, role="admin")
    for method, path, shape in DOORS:
        token = admin if path.startswith("/v1/") and path != "/v1/events" else user
        with d.http(token) as c:
            if chunked:
                r = c.request(method, path, content=chunks(SMALL * 4),
                              headers={"Content-Type": "application/json"})  # fmt: skip
                assert "content-length" not in r.request.headers
            else:
                r = c.request(method, path, content=b"{" + b" " * (SMALL * 4) + b"}",
                              headers={"Content-Type": "application/json"})  # fmt: skip
            assert r.status_code == 413, (method, path, r.status_code, r.text)
            shape(r)
    with d.admin() as c:
        assert c.get("/v1/events", params={"topic": "big"}).json()["events"] == []
    # a body that is just small enough still passes
    with d.http(user) as c:
        assert c.post("/fits", content=b"m" * 100).status_code == 200


@pytest.mark.trio
async def test_413_comes_before_the_body_is_read_whole(strict: Daemon) -> None:
    """Content-Length over the limit: the answer comes without sending the body."""
    token = await sync(new_user, strict, {"big": "rw"})
    for path in ("/v1/events", "/v1/channels", "/big", "/message"):
        stream = await trio.open_tcp_stream("127.0.0.1", strict.port)
        async with stream:
            await stream.send_all(
                f"POST {path} HTTP/1.1\r\nHost: notifyd\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {100 * SMALL}\r\n\r\n{{".encode()
            )
            head, _ = await read_head(stream)
            assert head.startswith(b"HTTP/1.1 413"), (path, head)
            assert b"connection: close" in head.lower(), head


@pytest.mark.trio
@pytest.mark.parametrize("path", ["/v1/events", "/v1/channels", "/message"])
async def test_chunked_413_closes_the_connection(strict: Daemon, path: str) -> None:
    """The answer comes while the client is still sending; the server then closes
    the connection instead of leaving it (and the request) hanging."""
    token = await sync(new_user, strict, {"big": "rw"})
    stream = await trio.open_tcp_stream("127.0.0.1", strict.port)
    async with stream:
        await stream.send_all(
            f"POST {path} HTTP/1.1\r\nHost: notifyd\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        chunk = b"400\r\n" + b" " * 1024 + b"\r\n"
        for _ in range(40):  # many small chunks: more than hypercorn queues for the app
            await stream.send_all(chunk)
        data = await read_to_end(stream, 10)
        assert data.startswith(b"HTTP/1.1 413"), data[:200]


# -- WebSocket messages --------------------------------------------------------------------

TOO_BIG = 64 * 1024 + 1


async def close_code(stream: trio.abc.Stream, data: bytes) -> int:
    """Read server frames until the close frame; its code."""
    with trio.fail_after(10):
        while True:
            frames, data = server_frames(data)
            for op, payload in frames:
                if op == 0x8:
                    return int(struct.unpack("!H", payload[:2])[0])
            chunk = await stream.receive_some(65536)
            assert chunk, "closed without a close frame"
            data += chunk


async def unix_stream(d: Daemon) -> trio.SocketStream:
    return await trio.open_unix_socket(str(d.socket))


WEBSOCKETS = {
    "v1 fast path": ("/v1/stream", False),
    "v1 ASGI fallback": ("/v1/stream", True),
    "ntfy fast path": ("/wslimit/ws", False),
    "ntfy ASGI fallback": ("/wslimit/ws", True),
    "gotify": ("/stream", False),
}


@pytest.mark.trio
@pytest.mark.parametrize("kind", list(WEBSOCKETS))
async def test_oversized_websocket_message_is_closed_1009(strict: Daemon, kind: str) -> None:
    path, reused = WEBSOCKETS[kind]
    stream = await unix_stream(strict)  # the socket's admin: no credentials needed
    async with stream:
        if reused:  # a stream asked for on a kept-alive connection: served by hypercorn
            head = await http_exchange(stream, b"GET /healthz HTTP/1.1\r\nHost: notifyd\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
        await stream.send_all(ws_handshake(path))
        head, data = await read_head(stream)
        assert head.startswith(b"HTTP/1.1 101"), head
        await stream.send_all(client_frame(0x1, b"x" * 1000))  # small: fine
        await stream.send_all(client_frame(0x1, b"x" * TOO_BIG))
        assert await close_code(stream, data) == 1009


# -- an ntfy subscriber that stops reading ---------------------------------------------------


#: events of the first phase; the queue holds them all, so the stuck subscriber stays
PHASE1 = 1500
QUEUE = PHASE1 + 50


@pytest.mark.trio
async def test_ntfy_ws_subscriber_that_stops_reading_is_cut_off(
    make_daemon: Callable[..., Daemon],
) -> None:
    """Ordering, not latency: every publish is acknowledged, and another subscriber
    gets every event, while the subscriber that stopped reading is still connected
    and stuck (its queue is long enough and its send timeout an hour, so only a
    publisher waiting for it could block; the phase then never ends). It got fewer
    events than were published meanwhile: it was stuck. Then its queue overflows and
    it is cut off."""
    env = {"NOTIFYD_STREAM_QUEUE": str(QUEUE), "NOTIFYD_STREAM_SEND_TIMEOUT": "3600"}
    d = await sync(make_daemon(extra_env=env).start)
    token = await sync(d.user, "reader", grants={"bulk": "read"})
    sock = trio.socket.socket(stdsocket.AF_INET, stdsocket.SOCK_STREAM)
    sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", d.port))
    slow = trio.SocketStream(sock)
    auth = f"\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    await slow.send_all(ws_handshake("/bulk/ws").replace(b"\r\n\r\n", auth, 1))
    head, pending = await read_head(slow)
    assert head.startswith(b"HTTP/1.1 101 "), head

    body = "#" * 4000
    per_batch = 10
    acked: list[int] = []
    got: list[str] = []
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx.AsyncClient(base_url=d.url, headers=headers, timeout=30) as reader,
        reader.stream("GET", "/bulk/json") as response,
    ):
        assert response.status_code == 200
        await wait_stream_clients(d, 2)
        lines = response.aiter_lines()

        async def consume(total: int) -> None:
            while len(got) < total:
                msg = json.loads(await anext(lines))
                if msg["event"] == "message":
                    got.append(msg["id"])

        async def phase(client: httpx.AsyncClient, n: int, text: str) -> None:
            with trio.fail_after(120):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(consume, len(acked) + n)
                    for b in range(n // per_batch):
                        batch = [{"topic": "bulk", "title": f"{b}.{i}", "body": text}
                                 for i in range(per_batch)]  # fmt: skip
                        acked.extend(e["id"] for e in await publish(client, batch))

        async with admin_async(d) as client:
            await phase(client, PHASE1, body)
            assert len(got) == len(acked) == PHASE1
            # all of that happened while the stuck subscriber was still there
            assert await metric(d, "notifyd_stream_resyncs_total") == 0
            with d.admin() as c:
                assert (await sync(c.get, "/healthz")).json()["stream_clients"] == 2
            # now its queue overflows: it is cut off, the other one goes on
            await phase(client, QUEUE + 2 * per_batch, "small")
        assert len(got) == len(acked)
        assert await metric(d, "notifyd_stream_resyncs_total") >= 1
        await wait_stream_clients(d, 1)
    # the stuck subscriber's connection ends (no resync frame in ntfy's protocol)
    data = pending + await read_to_end(slow, 60)
    await slow.aclose()
    frames, _ = server_frames(data)
    ids = [json.loads(p)["id"] for op, p in frames if op == 0x1 and b'"message"' in p]
    assert len(ids) < PHASE1, "the subscriber was never stuck"
    assert [str(i) for i in acked[: len(ids)]] == [str(i) for i in ids]
