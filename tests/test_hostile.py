"""Slow and hostile clients: slowloris heads and bodies time out (408), oversized
bodies get 413 in each door's shape before being read whole (Content-Length and
chunked), client WebSocket messages are size-limited on every WebSocket, and an
ntfy subscriber that stops reading is cut off without slowing anyone."""

from __future__ import annotations

import itertools
import json
import socket as stdsocket
import struct
from collections.abc import Callable, Iterator

import httpx
import pytest
import trio
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

TIMEOUT = 1.0  # header_timeout and body_timeout of the slowloris daemon
SMALL = 4096  # its max_request_bytes


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon for the module (users are made per test): short timeouts, small bodies."""
    d = Daemon(tmp_path_factory.mktemp("strict"), extra_env={
        "NOTIFYD_HEADER_TIMEOUT": str(TIMEOUT),
        "NOTIFYD_BODY_TIMEOUT": str(TIMEOUT),
        "NOTIFYD_MAX_REQUEST_BYTES": str(SMALL),
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
    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trickle, stream)
        data = await read_to_end(stream, TIMEOUT + 8)
        nursery.cancel_scope.cancel()
    elapsed = trio.current_time() - started
    assert data.startswith(before + b"HTTP/1.1 408 "), data[:300]
    assert b'"code":"timeout"' in data
    assert elapsed >= TIMEOUT * 0.8, elapsed
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
    d = await sync(make_daemon(extra_env={"NOTIFYD_HEADER_TIMEOUT": "4"}).start)
    token = await sync(d.user, "pub", grants={"ok": "rw"})
    streams: list[trio.SocketStream] = []
    try:
        for i in range(200):
            stream = await trio.open_tcp_stream("127.0.0.1", d.port)
            streams.append(stream)
            half = b"GET /healthz" if i % 2 else b"POST /v1/events HTTP/1.1\r\nHost: x\r\n"
            await stream.send_all(half)
        opened = trio.current_time()
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=d.url, headers=headers, timeout=10) as client:
            for i in range(5):
                started = trio.current_time()
                r = await client.post("/v1/events", json={"topic": "ok", "title": f"n{i}"})
                assert r.status_code == 201, r.text
                assert (await client.get("/v1/events", params={"topic": "ok"})).status_code == 200
                assert trio.current_time() - started < 2, "a normal client waited"
        assert trio.current_time() - opened < 4, "the test ran past the slowloris timeout"
        # and every slowloris connection is closed once its time is up
        async with trio.open_nursery() as nursery:
            for stream in streams:
                nursery.start_soon(read_to_end, stream, 15)
    finally:
        for stream in streams:
            await stream.aclose()


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


@pytest.mark.trio
async def test_ntfy_ws_subscriber_that_stops_reading_is_cut_off(
    make_daemon: Callable[..., Daemon],
) -> None:
    d = await sync(make_daemon(extra_env={"NOTIFYD_STREAM_QUEUE": "20"}).start)
    token = await sync(d.user, "reader", grants={"bulk": "read"})
    sock = trio.socket.socket(stdsocket.AF_INET, stdsocket.SOCK_STREAM)
    sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", d.port))
    slow = trio.SocketStream(sock)
    auth = f"\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    await slow.send_all(ws_handshake("/bulk/ws").replace(b"\r\n\r\n", auth, 1))
    head, _ = await read_head(slow)
    assert head.startswith(b"HTTP/1.1 101 "), head

    body = "#" * 4000
    per_batch, batches = 10, 200
    acked: list[int] = []
    got: list[str] = []
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx.AsyncClient(base_url=d.url, headers=headers, timeout=30) as reader,
        reader.stream("GET", "/bulk/json") as response,
    ):
        assert response.status_code == 200
        await wait_stream_clients(d, 2)
        lines = response.aiter_lines()

        async def consume() -> None:
            while len(got) < per_batch * batches:
                line = await anext(lines)
                msg = json.loads(line)
                if msg["event"] == "message":
                    got.append(msg["id"])

        async with admin_async(d) as client:
            with trio.fail_after(120):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(consume)
                    for b in range(batches):
                        batch = [{"topic": "bulk", "title": f"{b}.{i}", "body": body} for i in range(per_batch)]  # fmt: skip
                        started = trio.current_time()
                        acked.extend(e["id"] for e in await publish(client, batch))
                        latencies.append(trio.current_time() - started)
        assert len(got) == len(acked)
        assert max(latencies) < 5, max(latencies)
        assert await metric(d, "notifyd_stream_resyncs_total") >= 1
        await wait_stream_clients(d, 1)
    # the stuck subscriber's connection ends (no resync frame in ntfy's protocol)
    await read_to_end(slow, 60)
    await slow.aclose()
