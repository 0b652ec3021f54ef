"""Nothing a client sends ends or stalls the process.

Fault injection: the daemon runs through tests/faultinject.py, which makes chosen
dependencies of every door's handler raise (when the request carries the marker
``boom``). Each door must then answer 500 in its own error shape (or, once its
answer has begun, close the connection), log the failure in one line without
secrets, and keep serving from the same process.

Then the crashes found on the way, as regressions (each used to end the process):
hostile Origin headers with a cookie, unicode digits in ``since`` and
``Last-Event-ID``, ntfy's far-future ``since`` and malformed RFC 2047 headers,
malformed WebSocket keys; and authentication before bodies: a request with a large
or chunked body and no valid credentials is refused before any of the body is read.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trio
from conftest import Daemon, wait_for
from test_hostile import read_to_end

FAULTINJECT = [sys.executable, str(Path(__file__).with_name("faultinject.py"))]
FAULT_LINE = "injected fault"

# -- raw HTTP over a socket -------------------------------------------------------------


@dataclass
class Answer:
    status: int
    head: bytes
    body: bytes
    #: the server closed the connection after the answer
    closed: bool

    def json(self) -> object:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.encode():
                return value.strip().decode("latin-1")
        return None


async def open_stream(d: Daemon, unix: bool = False) -> trio.SocketStream:
    if unix:
        return await trio.open_unix_socket(str(d.socket))
    return await trio.open_tcp_stream("127.0.0.1", d.port)


async def read_answer(stream: trio.abc.Stream, pending: bytes = b"", timeout: float = 10,
                      head_only: bool = False) -> Answer:  # fmt: skip
    """One HTTP answer: the head, then a body of Content-Length bytes (or, without
    one, everything until the server closes; ``head_only``: a stream's, nothing)."""
    buf = pending
    closed = False
    with trio.fail_after(timeout):
        while b"\r\n\r\n" not in buf:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                data = b""
            assert data, f"closed without an answer: {buf[:300]!r}"
            buf += data
        head, rest = buf.split(b"\r\n\r\n", 1)
        answer = Answer(int(head.split(b" ", 2)[1]), head, b"", False)
        length = answer.header("content-length")
        want = int(length) if length is not None else None
        if head_only and want is None:
            want = 0
        while want is None or len(rest) < want:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                data = b""
            if not data:
                closed = True
                break
            rest += data
    answer.body, answer.closed = rest if want is None else rest[:want], closed
    return answer


def request(method: str, target: str, headers: dict[str, str] | None = None,
            body: bytes | None = None) -> bytes:  # fmt: skip
    lines = [f"{method} {target} HTTP/1.1", "Host: notifyd"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def ws_request(target: str, headers: dict[str, str] | None = None) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return request("GET", target, {
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": key,
        "Sec-WebSocket-Version": "13", **(headers or {}),
    })  # fmt: skip


# -- the error shapes -------------------------------------------------------------------


def notifyd_shape(body: object, status: int) -> None:
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert isinstance(err["code"], str) and isinstance(err["message"], str), body
    if status == 500:
        assert err["code"] == "internal", body


def ntfy_shape(body: object, status: int) -> None:
    link = {"link"} if status in (401, 403) else set()  # ntfy links its auth docs there
    assert isinstance(body, dict) and set(body) == {"code", "http", "error"} | link, body
    assert body["http"] == status and body["code"] // 100 == status, body
    assert isinstance(body["error"], str), body


def gotify_shape(body: object, status: int) -> None:
    assert isinstance(body, dict) and set(body) == {"error", "errorCode", "errorDescription"}, body
    assert body["errorCode"] == status, body


SHAPES: dict[str, Callable[[object, int], None]] = {
    "notifyd": notifyd_shape, "ntfy": ntfy_shape, "gotify": gotify_shape,
}  # fmt: skip


# -- the daemon with faults --------------------------------------------------------------


@dataclass
class World:
    d: Daemon
    pid: int
    token: str  # may read and write every topic (scopes publish, subscribe)
    app: str  # a Gotify application token


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    d = Daemon(tmp_path_factory.mktemp("faults"), command=FAULTINJECT)
    d.start()
    token = d.user("faulty", grants={"*": "rw"})
    with d.admin() as c:
        r = c.post("/v1/tokens", json={"user": "faulty", "scopes": ["publish"], "label": "app"})
        assert r.status_code == 201, r.text
        app = r.json()["token"]
    assert d.proc is not None
    yield World(d, d.proc.pid, token, app)
    d.stop()


def fault_lines(d: Daemon) -> list[str]:
    return [line for line in d.log().splitlines() if FAULT_LINE in line]


def still_serving(w: World) -> None:
    assert w.d.proc is not None and w.d.proc.poll() is None, w.d.log()[-3000:]
    assert w.d.proc.pid == w.pid
    assert httpx.get(w.d.url + "/healthz", timeout=10).status_code == 200


@dataclass
class Case:
    door: str
    request: bytes
    #: ask on a connection that already served a request (hypercorn's ASGI fallback)
    reused: bool = False
    unix: bool = False
    #: the answer began before the fault (a stream's 200): the connection just closes
    after_answer: bool = False


def cases(w: World) -> dict[str, Case]:
    auth = {"Authorization": f"Bearer {w.token}"}
    boom_event = json.dumps({"topic": "pub", "title": "boom"}).encode()
    return {
        "v1 sse, fast path": Case("notifyd", request("GET", "/v1/stream/sse?topics=boom", auth)),
        "v1 websocket, fast path": Case("notifyd", ws_request("/v1/stream?topics=boom", auth)),
        "v1 sse, fault after the answer began": Case(
            "notifyd", request("GET", "/v1/stream/sse?topics=boom-later", auth), after_answer=True
        ),
        "v1 websocket, fault after the handshake": Case(
            "notifyd", ws_request("/v1/stream?topics=boom-later", auth), after_answer=True
        ),
        "v1 sse, ASGI fallback": Case(
            "notifyd", request("GET", "/v1/stream/sse?topics=boom", auth), reused=True
        ),
        "v1 websocket, ASGI fallback": Case(
            "notifyd", ws_request("/v1/stream?topics=boom", auth), reused=True
        ),
        "v1 sse, unix socket": Case(
            "notifyd", request("GET", "/v1/stream/sse?topics=boom"), unix=True
        ),
        "ntfy json, fast path": Case("ntfy", request("GET", "/boom/json", auth)),
        "ntfy ws, fast path": Case("ntfy", ws_request("/boom/ws", auth)),
        "ntfy sse, FastAPI route": Case("ntfy", request("GET", "/boom/sse", auth), reused=True),
        "ntfy ws, FastAPI route": Case("ntfy", ws_request("/ok,boom/ws", auth), reused=True),
        "v1 publish, fast path": Case(
            "notifyd",
            request(
                "POST", "/v1/events", auth | {"Content-Type": "application/json"}, boom_event
            ),  # fmt: skip
        ),
        "v1 publish, unix socket": Case(
            "notifyd",
            request("POST", "/v1/events", {"Content-Type": "application/json"}, boom_event),
            unix=True,  # fmt: skip
        ),
        "ntfy publish, fast path": Case(
            "ntfy", request("POST", "/pub", auth | {"X-Title": "boom"}, b"hello")
        ),
        "ntfy publish JSON, fast path": Case(
            "ntfy",
            request("POST", "/", auth, json.dumps({"topic": "pub", "title": "boom"}).encode()),
        ),
        "FastAPI route": Case("notifyd", request("GET", "/v1/events?topic=boom", auth)),
        "gotify publish": Case(
            "gotify",
            request(
                "POST",
                "/message",
                {"X-Gotify-Key": w.app, "Content-Type": "application/json"},
                json.dumps({"message": "x", "title": "boom"}).encode(),
            ),  # fmt: skip
        ),
        "gotify stream": Case("gotify", ws_request("/stream", auth | {"X-Boom": "1"})),
    }


CASE_NAMES = list(cases(World(None, 0, "t", "a")))  # type: ignore[arg-type]


@pytest.mark.trio
@pytest.mark.parametrize("name", CASE_NAMES)
async def test_a_fault_in_a_door_ends_one_connection_not_the_daemon(
    world: World, name: str
) -> None:
    case = cases(world)[name]
    before = len(fault_lines(world.d))
    stream = await open_stream(world.d, case.unix)
    async with stream:
        if case.reused:
            await stream.send_all(request("GET", "/healthz"))
            first = await read_answer(stream)
            assert first.status == 200 and not first.closed
        await stream.send_all(case.request)
        if case.after_answer:
            answer = await read_answer(stream, head_only=True)
            assert answer.status in (101, 200), answer
            await read_to_end(stream, 10)
        else:
            answer = await read_answer(stream)
            assert answer.status == 500, answer
            assert answer.header("content-type") == "application/json", answer
            SHAPES[case.door](answer.json(), 500)
            assert answer.closed or answer.header("connection") == "close", answer
    lines = wait_for(lambda: fault_lines(world.d)[before:], message="the failure's log line")
    assert len(lines) == 1, lines
    assert f"{case.door} door" in lines[0], lines[0]
    assert world.token not in world.d.log()
    await trio.to_thread.run_sync(still_serving, world)


def test_the_log_line_names_door_peer_and_exception_and_nothing_secret(world: World) -> None:
    token = world.token
    with world.d.http(token) as c:
        r = c.get("/v1/events", params={"topic": "boom", "token": token},
                  headers={"Cookie": "notifyd_session=secret-cookie"})  # fmt: skip
        assert r.status_code == 500
        notifyd_shape(r.json(), 500)
    line = wait_for(lambda: [x for x in fault_lines(world.d) if "secret-cookie" in x or
                              "GET /v1/events" in x][-1:], message="log line")[0]  # fmt: skip
    assert "notifyd door: GET /v1/events from 127.0.0.1 failed: InjectedFault:" in line, line
    assert token not in line and "secret-cookie" not in line and "topic=boom" not in line
    assert "\n" not in line and "Traceback" not in world.d.log()


def test_a_failed_hook_request_logs_no_hook_secret(caplog: pytest.LogCaptureFixture) -> None:
    from notifyd.api.server import failure_status

    secret = "k3Y-secret_of-the-hook0123456789abcdefghijk"
    with caplog.at_level("ERROR", logger="notifyd.server"):
        answer = failure_status(
            RuntimeError(f"bad path /v1/hooks/Ab12/{secret}"), "notifyd", "127.0.0.1",
            f"POST /v1/hooks/Ab12/{secret}",
        )  # fmt: skip
    assert answer.status == 500
    (line,) = [r.getMessage() for r in caplog.records]
    assert "POST /v1/hooks/Ab12/…" in line and secret not in line, line


# -- regressions: each of these used to end the process ------------------------------------


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """An ordinary daemon (limits small enough to show 'before the body')."""
    d = Daemon(tmp_path_factory.mktemp("plain"))
    d.start()
    token = d.user("reader", grants={"*": "rw"})
    with d.admin() as c:
        r = c.post("/v1/tokens", json={"user": "reader", "scopes": ["publish"], "label": "app"})
        app = r.json()["token"]
    assert d.proc is not None
    yield World(d, d.proc.pid, token, app)
    d.stop()


HOSTILE_ORIGIN = {"Cookie": "notifyd_session=x", "Origin": "http://["}


def regressions(w: World) -> dict[str, tuple[bytes, int, str, bool]]:
    """name: (request, status, door, reused connection)"""
    auth = {"Authorization": f"Bearer {w.token}"}
    return {
        "origin on sse": (request("GET", "/v1/stream/sse", HOSTILE_ORIGIN), 403, "notifyd", False),
        "origin on websocket": (ws_request("/v1/stream", HOSTILE_ORIGIN), 403, "notifyd", False),
        "origin on sse, ASGI": (
            request("GET", "/v1/stream/sse", HOSTILE_ORIGIN),
            403,
            "notifyd",
            True,
        ),  # fmt: skip
        "origin on a route": (request("GET", "/v1/me", HOSTILE_ORIGIN), 403, "notifyd", False),
        "origin on ntfy": (request("GET", "/t/json", HOSTILE_ORIGIN), 403, "ntfy", False),
        "since ²": (request("GET", "/v1/stream/sse?since=%C2%B2", auth), 422, "notifyd", False),
        "since ², ASGI": (
            request("GET", "/v1/stream/sse?since=%C2%B2", auth),
            422,
            "notifyd",
            True,
        ),  # fmt: skip
        "last-event-id ²": (
            request("GET", "/v1/stream/sse", auth | {"Last-Event-ID": "\xb2"}),
            422,
            "notifyd",
            False,
        ),  # fmt: skip
        "last-event-id ², ASGI": (
            request("GET", "/v1/stream/sse", auth | {"Last-Event-ID": "\xb2"}),
            422,
            "notifyd",
            True,
        ),  # fmt: skip
        "since past 2**63": (
            request("GET", "/v1/stream/sse?since=9999999999999999999", auth),
            422,
            "notifyd",
            False,
        ),  # fmt: skip
        "ntfy since far future": (
            request("GET", "/t/json?since=300000000000", auth),
            400,
            "ntfy",
            False,
        ),  # fmt: skip
        "ntfy since ²": (request("GET", "/t/json?since=%C2%B2", auth), 400, "ntfy", False),
        "ntfy last-event-id ²": (
            request("GET", "/t/sse", auth | {"Last-Event-ID": "\xb2"}),
            200,
            "ntfy",
            False,
        ),  # fmt: skip
        "ntfy encoded header": (
            request("GET", "/t/json", auth | {"X-Poll": "=?UTF-8?B?a?="}),
            400,
            "ntfy",
            False,
        ),  # fmt: skip
        "ntfy encoded header, ASGI": (
            request("GET", "/t/json", auth | {"X-Poll": "=?UTF-8?B?a?="}),
            400,
            "ntfy",
            True,
        ),  # fmt: skip
        "ntfy encoded header, publish": (
            request("POST", "/t", auth | {"X-Title": "=?x?Q?=?="}, b"m"),
            400,
            "ntfy",
            False,
        ),  # fmt: skip
        "websocket key not base64": (
            ws_request("/v1/stream", auth | {"Sec-WebSocket-Key": "!" * 24}),
            400,
            "notifyd",
            False,
        ),  # fmt: skip
        "websocket key of 15 bytes": (
            ws_request("/t/ws", auth | {"Sec-WebSocket-Key": base64.b64encode(b"x" * 15).decode()}),
            400,
            "ntfy",
            False,
        ),
        "obs-fold in a stream head": (
            request("GET", "/v1/stream/sse", auth | {"X-A": "b\r\n c"}),
            400,
            "notifyd",
            False,
        ),  # fmt: skip
        "gotify form priority ²": (
            request(
                "POST",
                "/message",
                {"X-Gotify-Key": w.app, "Content-Type": "application/x-www-form-urlencoded"},
                b"message=m&priority=%C2%B2",
            ),
            400,
            "gotify",
            False,
        ),  # fmt: skip
        "gotify form priority --5": (
            request(
                "POST",
                "/message",
                {"X-Gotify-Key": w.app, "Content-Type": "application/x-www-form-urlencoded"},
                b"message=m&priority=--5",
            ),
            400,
            "gotify",
            False,
        ),  # fmt: skip
        "gotify paging since ²": (
            request("GET", "/message?since=%C2%B2", auth),
            400,
            "gotify",
            False,
        ),  # fmt: skip
        "gotify message id ²": (
            request("DELETE", "/message/%C2%B2", auth),
            400,
            "gotify",
            False,
        ),  # fmt: skip
        "cookie of backslashes": (
            request("GET", "/v1/stream/sse", {"Cookie": 'notifyd_session="' + "\\" * 12000 + '"'}),
            401,
            "notifyd",
            False,
        ),
    }


@pytest.mark.trio
@pytest.mark.parametrize("name", list(regressions(World(None, 0, "t", "a"))))  # type: ignore[arg-type]
async def test_hostile_values_are_refused_in_the_doors_shape(plain: World, name: str) -> None:
    req, status, door, reused = regressions(plain)[name]
    stream = await open_stream(plain.d)
    async with stream:
        if reused:
            await stream.send_all(request("GET", "/healthz"))
            assert (await read_answer(stream)).status == 200
        await stream.send_all(req)
        answer = await read_answer(stream, head_only=status == 200)
        assert answer.status == status, (answer, answer.body[:300])
        if status != 200:
            SHAPES[door](answer.json(), status)
    await trio.to_thread.run_sync(still_serving, plain)


# -- authentication before bodies ------------------------------------------------------------

BIG = 10 * 1024 * 1024

BODY_DOORS = [
    ("POST", "/v1/channels", "notifyd"),
    ("PUT", "/v1/preferences", "notifyd"),
    ("POST", "/v1/events", "notifyd"),
    ("POST", "/v1/admin/import", "notifyd"),
    ("POST", "/some-topic", "ntfy"),
    ("PUT", "/", "ntfy"),
    ("POST", "/message", "gotify"),
    ("POST", "/application", "gotify"),
]
_n = itertools.count()


@pytest.mark.trio
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(("method", "path", "door"), BODY_DOORS)
async def test_no_body_is_read_before_the_credentials_check_out(
    plain: World, method: str, path: str, door: str, chunked: bool
) -> None:
    """The head announces a large body and carries a wrong token (or none): the 401
    comes while the client has sent nothing of the body."""
    for auth in ({}, {"Authorization": "Bearer nfy_wrong"}):
        framing = {"Transfer-Encoding": "chunked"} if chunked else {"Content-Length": str(BIG)}
        stream = await open_stream(plain.d)
        async with stream:
            await stream.send_all(request(method, path, auth | framing | {
                "Content-Type": "application/json"}))  # fmt: skip
            answer = await read_answer(stream)
            assert answer.status == 401, (method, path, auth, answer, answer.body)
            SHAPES[door](answer.json(), 401)
            assert answer.header("connection") == "close" or answer.closed


@pytest.mark.trio
async def test_sign_in_takes_only_a_small_body(plain: World) -> None:
    stream = await open_stream(plain.d)
    async with stream:
        await stream.send_all(request("POST", "/v1/session", {
            "Content-Type": "application/json", "Content-Length": str(BIG)}))  # fmt: skip
        answer = await read_answer(stream)
        assert answer.status == 413, answer
        notifyd_shape(answer.json(), 413)
    with plain.d.http() as c:  # a real sign-in: small JSON, no credentials needed
        r = c.post("/v1/session", json={"username": "reader", "password": "wrong" * 10})
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", r.text


def test_large_bodies_with_valid_credentials_are_read(plain: World) -> None:
    """Past the credentials check, a large body is read and judged as before."""
    batch = [{"topic": f"big{next(_n)}", "title": "big", "body": "b" * 3000} for _ in range(4)]
    with plain.d.http(plain.token) as c:
        r = c.post("/v1/events", json=batch)  # ~12 KiB
        assert r.status_code == 201, r.text
        r = c.put("/v1/preferences", content=b"[" + b" " * 8000 + b"]",
                  headers={"Content-Type": "application/json"})  # fmt: skip
        assert r.status_code == 422, r.text

        def chunks() -> Iterator[bytes]:
            yield json.dumps(batch).encode()

        r = c.post("/v1/events", content=chunks(), headers={"Content-Type": "application/json"})
        assert r.status_code == 201, r.text
    with plain.d.http() as c:
        body = {"title": "big", "message": "m" * 4000, "extras": {"x": "y" * 1000}}
        r = c.post("/message", json=body, headers={"X-Gotify-Key": plain.app})
        assert r.status_code == 200, r.text
