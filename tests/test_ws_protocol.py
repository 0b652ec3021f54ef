"""RFC 6455 edge cases on every WebSocket door of the raw transport.

The same client frames, many of them malformed on purpose, are written by hand on
a raw socket to notifyd's ``/v1/stream`` (over TCP and over the Unix socket),
ntfy's ``/<topic>/ws`` and Gotify's ``/stream``, each on a new connection (the
connection front's raw transport: wsproto reads what clients send). Each case
checks the server's answer frame by frame: the close code (1002 protocol error,
1007 invalid UTF-8, 1009 too big), that exactly one close frame is sent and that
the server then closes the TCP connection; or, for the cases that must not close,
the pong with the ping's payload on a connection that stays open.
"""

from __future__ import annotations

import base64
import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import trio
from conftest import Daemon

pytestmark = pytest.mark.trio

PING, PONG, CLOSE, TEXT, BINARY, CONT = 0x9, 0xA, 0x8, 0x1, 0x2, 0x0
LIMIT = 64 * 1024  # the transport's MAX_CLIENT_MESSAGE


def frame(
    opcode: int, payload: bytes = b"", *, fin: bool = True, masked: bool = True, rsv: int = 0
) -> bytes:
    """A client frame as the test wants it, valid or not (RFC 6455 §5.2)."""
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if masked else 0
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", b0, mask_bit | n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", b0, mask_bit | 126, n)
    else:
        header = struct.pack("!BBQ", b0, mask_bit | 127, n)
    if not masked:
        return header + payload
    mask = os.urandom(4)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def close_frame(code: int | None, reason: bytes = b"") -> bytes:
    return frame(CLOSE, b"" if code is None else struct.pack("!H", code) + reason)


def parse_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Server frames (which must be unmasked, FIN, RSV 0) and the incomplete tail."""
    frames = []
    while len(data) >= 2:
        assert data[0] & 0xF0 == 0x80, f"server frame with FIN/RSV {data[0]:#x}"
        assert not data[1] & 0x80, "a masked server frame"
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


# -- the doors ----------------------------------------------------------------------------


@dataclass
class World:
    d: Daemon
    token: str  # read rights on every topic
    client: str  # a subscribe-only token (a Gotify client)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    d = Daemon(tmp_path_factory.mktemp("wsproto"))
    d.start()
    token = d.user("wsp", grants={"*": "rw"})
    with d.admin() as c:
        r = c.post("/v1/tokens", json={"user": "wsp", "scopes": ["subscribe"]})
        assert r.status_code == 201, r.text
        client = r.json()["token"]
    yield World(d, token, client)
    d.stop()


#: door → (path, over the Unix socket?, credentials header)
DOORS = {
    "v1-tcp": ("/v1/stream", False, "bearer"),
    "v1-unix": ("/v1/stream", True, None),
    "ntfy-tcp": ("/wsp-topic/ws", False, "bearer"),
    "gotify-tcp": ("/stream", False, "gotify"),
}


class Client:
    """A hand-written WebSocket client on a raw socket: sends bytes as given and
    parses what the server answers."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buf = b""
        self.frames: list[tuple[int, bytes]] = []

    async def send(self, data: bytes) -> None:
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the server already closed: what it answered counts

    async def _more(self) -> bool:
        try:
            chunk = await self.stream.receive_some(65536)
        except trio.BrokenResourceError:  # reset after the close: the same as EOF here
            chunk = b""
        if not chunk:
            return False
        got, self.buf = parse_frames(self.buf + chunk)
        self.frames += got
        return True

    async def until(self, opcode: int) -> bytes:
        """The payload of the next frame with ``opcode`` (data frames skipped)."""
        with trio.fail_after(10):
            while True:
                for i, (op, payload) in enumerate(self.frames):
                    if op == opcode:
                        del self.frames[: i + 1]
                        return payload
                    assert op in (TEXT, PONG), f"unexpected frame {op:#x} {payload[:80]!r}"
                if not await self._more():
                    raise AssertionError(f"closed before a frame {opcode:#x}: {self.frames}")

    async def closed_with(self) -> tuple[int | None, bytes]:
        """The server's close (code, reason), after which it must close the TCP
        connection without sending anything else."""
        payload = await self.until(CLOSE)
        with trio.fail_after(10):
            while await self._more():
                pass
        assert not self.frames and not self.buf, f"frames after the close: {self.frames}"
        code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
        return code, payload[2:]


async def connect(w: World, door: str, first: bytes = b"") -> Client:
    """A new connection through ``door``'s handshake; ``first`` is sent with the head."""
    path, unix, creds = DOORS[door]
    if unix:
        stream: trio.abc.Stream = await trio.open_unix_socket(str(w.d.socket))
    else:
        stream = await trio.open_tcp_stream("127.0.0.1", w.d.port)
    key = base64.b64encode(os.urandom(16)).decode()
    head = (
        f"GET {path} HTTP/1.1\r\nHost: notifyd\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    )
    if creds == "bearer":
        head += f"Authorization: Bearer {w.token}\r\n"
    elif creds == "gotify":
        head += f"X-Gotify-Key: {w.client}\r\n"
    await stream.send_all((head + "\r\n").encode() + first)
    data = b""
    with trio.fail_after(10):
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            assert chunk, f"closed during the handshake: {data!r}"
            data += chunk
    answer, rest = data.split(b"\r\n\r\n", 1)
    assert answer.startswith(b"HTTP/1.1 101 "), answer
    client = Client(stream)
    client.frames, client.buf = parse_frames(rest)
    return client


# -- what breaks the protocol: one close frame with the right code, then the hang-up -----

VIOLATIONS = {
    # RFC 6455 §5.2: no extension was negotiated
    "rsv1": ([frame(TEXT, b"hi", rsv=4)], 1002),
    "rsv2": ([frame(TEXT, b"hi", rsv=2)], 1002),
    "rsv3": ([frame(PING, b"hi", rsv=1)], 1002),
    # §5.1: a client masks every frame
    "unmasked text": ([frame(TEXT, b"hello", masked=False)], 1002),
    "unmasked ping": ([frame(PING, b"p", masked=False)], 1002),
    # §5.5: control frames are unfragmented and at most 125 bytes
    "fragmented ping": ([frame(PING, b"p", fin=False)], 1002),
    "fragmented close": ([frame(CLOSE, struct.pack("!H", 1000), fin=False)], 1002),
    "126-byte ping": ([frame(PING, b"p" * 126)], 1002),
    "126-byte close": ([frame(CLOSE, struct.pack("!H", 1000) + b"r" * 124)], 1002),
    # §5.2: reserved opcodes
    "opcode 0x3": ([frame(0x3, b"?")], 1002),
    "opcode 0x7": ([frame(0x7, b"?")], 1002),
    "opcode 0xB": ([frame(0xB, b"?")], 1002),
    "opcode 0xF": ([frame(0xF)], 1002),
    # §5.4: fragmentation
    "continuation outside a message": ([frame(CONT, b"c")], 1002),
    "new message inside one": ([frame(TEXT, b"a", fin=False), frame(TEXT, b"b")], 1002),
    # §7.4: close codes a client may not send, and a 1-byte close payload
    "close code 999": ([close_frame(999)], 1002),
    "close code 1005": ([close_frame(1005)], 1002),
    "close code 1006": ([close_frame(1006)], 1002),
    "close code 2999": ([close_frame(2999)], 1002),
    "close code 5000": ([close_frame(5000)], 1002),
    "close with 1 byte": ([frame(CLOSE, b"\x03")], 1002),
    # §8.1: text is UTF-8
    "invalid UTF-8 text": ([frame(TEXT, b"caf\xe9")], 1007),
    "invalid UTF-8 across fragments": (
        [frame(TEXT, "é".encode()[:1] + b"x", fin=False), frame(CONT, b"y")],
        1007,
    ),
    "overlong UTF-8 text": ([frame(TEXT, b"\xc0\xaf")], 1007),
    "invalid UTF-8 close reason": ([close_frame(1000, b"\xff")], 1007),
    # messages larger than the transport takes
    "oversized text": ([frame(TEXT, b"x" * (LIMIT + 1))], 1009),
    "oversized binary": ([frame(BINARY, b"\0" * (LIMIT + 1))], 1009),
    "oversized in fragments": (
        [
            frame(TEXT, b"a" * 30_000, fin=False),
            frame(CONT, b"b" * 30_000, fin=False),
            frame(CONT, b"c" * 30_000),
        ],
        1009,
    ),  # fmt: skip
    "oversized multi-byte text": ([frame(TEXT, "é".encode() * (LIMIT // 2 + 1))], 1009),
}


@pytest.mark.parametrize("door", list(DOORS))
@pytest.mark.parametrize("case", list(VIOLATIONS))
async def test_a_protocol_violation_closes_with_its_code(
    world: World, door: str, case: str
) -> None:
    frames, code = VIOLATIONS[case]
    client = await connect(world, door)
    async with client.stream:
        # a valid ping first: answered, the violation after it is what closes
        await client.send(frame(PING, b"before") + b"".join(frames))
        assert await client.until(PONG) == b"before"
        got, _reason = await client.closed_with()
        assert got == code, f"{case} on {door}: closed with {got}, expected {code}"


# -- the close handshake ------------------------------------------------------------------


@pytest.mark.parametrize("door", list(DOORS))
@pytest.mark.parametrize(
    ("code", "reason"),
    [(1000, b"bye"), (1001, b""), (3000, b"app"), (4999, "ok é".encode())],
)
async def test_a_client_close_is_echoed_and_the_connection_closed(
    world: World, door: str, code: int, reason: bytes
) -> None:
    client = await connect(world, door)
    async with client.stream:
        await client.send(close_frame(code, reason))
        got, _ = await client.closed_with()
        assert got == code


@pytest.mark.parametrize("door", list(DOORS))
async def test_an_empty_close_is_echoed_empty(world: World, door: str) -> None:
    client = await connect(world, door)
    async with client.stream:
        await client.send(close_frame(None))
        got, reason = await client.closed_with()
        assert (got, reason) == (None, b"")


# -- what must not close ------------------------------------------------------------------


@pytest.mark.parametrize("door", list(DOORS))
async def test_ping_gets_a_pong_with_the_same_payload(world: World, door: str) -> None:
    payloads = [b"", b"are you there?", bytes(range(125)), os.urandom(64)]
    # the first ping arrives with the head, before the handshake is answered
    client = await connect(world, door, first=frame(PING, b"early"))
    async with client.stream:
        assert await client.until(PONG) == b"early"
        for payload in payloads:
            await client.send(frame(PING, payload))
            assert await client.until(PONG) == payload
        # several in one write, and one split over two writes
        await client.send(b"".join(frame(PING, p) for p in payloads))
        for payload in payloads:
            assert await client.until(PONG) == payload
        split = frame(PING, b"split")
        await client.send(split[:3])  # the frame's header in two writes
        await client.send(split[3:])
        assert await client.until(PONG) == b"split"


@pytest.mark.parametrize("door", list(DOORS))
async def test_messages_within_the_limit_are_taken(world: World, door: str) -> None:
    """Data up to the limit, unsolicited pongs, and a ping between fragments are fine;
    the stream stays open and goes on delivering."""
    client = await connect(world, door)
    async with client.stream:
        await client.send(
            frame(TEXT, b"x" * LIMIT)
            + frame(BINARY, b"\0" * LIMIT)
            + frame(PONG, b"unsolicited")
            + frame(TEXT, "é".encode() * 10, fin=False)
            + frame(PING, b"between")
            + frame(CONT, "ü".encode() * 10)
            + frame(TEXT, b"")
        )
        assert await client.until(PONG) == b"between"
        await client.send(frame(PING, b"still open"))
        assert await client.until(PONG) == b"still open"
        # and the stream still delivers
        r = await trio.to_thread.run_sync(
            lambda: httpx.post(
                world.d.url + "/v1/events",
                json={"topic": "wsp-topic", "title": "after the edge cases"},
                headers={"Authorization": f"Bearer {world.token}"},
                timeout=10,
            )
        )
        assert r.status_code == 201, r.text
        with trio.fail_after(10):
            while not any(b"after the edge cases" in p for op, p in client.frames if op == TEXT):
                assert await client._more(), "closed instead of delivering"


# -- heads the transport refuses before any handshake ---------------------------------

#: what a valid request's head becomes (lines after the request line; "{key}" is a key)
HEAD_REFUSALS = {
    "duplicate Sec-WebSocket-Key": "Sec-WebSocket-Key: {key}\r\n",
    "duplicate Authorization": "Authorization: Bearer nfy_a\r\nAuthorization: Bearer nfy_b\r\n",
    "duplicate Host": "Host: other\r\n",
    "duplicate Origin": "Origin: https://a.example\r\nOrigin: https://b.example\r\n",
    "duplicate Cookie": "Cookie: a=1\r\nCookie: b=2\r\n",
    "obs-fold": "X-Folded: a\r\n b\r\n",
    "control byte in a value": "X-Ctl: a\x01b\r\n",
    "DEL in a value": "X-Ctl: a\x7fb\r\n",
    "NUL in a value": "X-Ctl: \x00\r\n",
    "space before the colon": "X-A : b\r\n",
    "key of 15 bytes": "replace-key:" + base64.b64encode(b"x" * 15).decode(),
    "key not base64": "replace-key:" + "!" * 24,
    "version 8": "replace-version:8",
    "no version": "replace-version:",
    "HTTP/2.0": "replace-line:HTTP/2.0",
    "HTTP/0.9": "replace-line:HTTP/0.9",
    "bare LF": "bare-lf",
}


def _shape(door: str, doc: dict, status: int) -> None:
    if door.startswith("v1"):
        assert set(doc) == {"error"} and {"code", "message"} <= set(doc["error"]), doc
    elif door.startswith("ntfy"):
        assert doc["http"] == status and isinstance(doc["code"], int) and doc["error"], doc
    else:
        assert doc["errorCode"] == status and doc["error"] and "errorDescription" in doc, doc


@pytest.mark.parametrize("door", list(DOORS))
@pytest.mark.parametrize("case", list(HEAD_REFUSALS))
async def test_a_hostile_head_is_refused_in_the_doors_shape(
    world: World, door: str, case: str
) -> None:
    path, unix, creds = DOORS[door]
    key = base64.b64encode(os.urandom(16)).decode()
    version, line_version, extra = "13", "HTTP/1.1", HEAD_REFUSALS[case]
    if extra.startswith("replace-key:"):
        key, extra = extra.split(":", 1)[1], ""
    elif extra.startswith("replace-version:"):
        version, extra = extra.split(":", 1)[1], ""
    elif extra.startswith("replace-line:"):
        line_version, extra = extra.split(":", 1)[1], ""
    lines = [f"GET {path} {line_version}", "Host: notifyd", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}"]  # fmt: skip
    if version:
        lines.append(f"Sec-WebSocket-Version: {version}")
    if creds == "bearer":
        lines.append(f"Authorization: Bearer {world.token}")
    elif creds == "gotify":
        lines.append(f"X-Gotify-Key: {world.client}")
    head = "\r\n".join(lines) + "\r\n" + extra.format(key=key) + "\r\n"
    if extra == "bare-lf":
        head = head.replace("bare-lf\r\n", "").replace("\r\n", "\n")
    if unix:
        stream: trio.abc.Stream = await trio.open_unix_socket(str(world.d.socket))
    else:
        stream = await trio.open_tcp_stream("127.0.0.1", world.d.port)
    async with stream:
        await stream.send_all(head.encode("latin-1"))
        if extra == "bare-lf":  # the front waits for a CRLF line: hang up to end the head
            await stream.send_eof()
        data = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(65536):
                data += chunk
    if extra == "bare-lf" and not data:
        return  # closed without an answer: refused all the same
    assert data.startswith(b"HTTP/1.1 4"), data[:200]
    status = int(data[9:12])
    assert status in (400, 426), data[:200]
    answer, body = data.split(b"\r\n\r\n", 1)
    assert b"\r\ncontent-type: application/json" in answer.lower(), answer
    _shape(door, json.loads(body), status)
