"""The stream fast path: WebSocket and SSE served straight on the trio socket.

The connection front (``server.py``) hands over connections whose first request
is ``GET /v1/stream`` (WebSocket upgrade) or ``GET /v1/stream/sse``. Frames are
written as the shared pre-built bytes of :class:`~notifyd.core.frames.Frame`, one
``send_all`` per batch, which is what makes fan-out cheap. Client-to-server
WebSocket traffic is only control frames (ping, close) and is size-limited.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import struct
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import orjson
import trio

from ..core.errors import BadRequest, NotifydError
from ..core.frames import Frame, ws_close, ws_frame
from ..core.services import Services
from .streams import StreamSession, open_session, resync_frame

log = logging.getLogger("notifyd.stream")

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_CLIENT_MESSAGE = 64 * 1024
CLOSE_GOING_AWAY = 1001
CLOSE_RESYNC = 4000


@dataclass
class RequestHead:
    method: str
    target: str
    headers: dict[str, str]

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    def query(self, name: str) -> str | None:
        values = parse_qs(urlsplit(self.target).query).get(name)
        return values[-1] if values else None


def parse_head(raw: bytes) -> RequestHead:
    try:
        text = raw.decode("latin-1")
        lines = text.split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return RequestHead(method, target, headers)
    except ValueError:
        raise BadRequest("malformed HTTP request") from None


def http_error(exc: NotifydError) -> bytes:
    body = orjson.dumps(exc.to_json())
    extra = ""
    if exc.status == 401:
        extra = 'WWW-Authenticate: Bearer realm="notifyd"\r\n'
    if exc.retry_after is not None:
        extra += f"Retry-After: {max(1, round(exc.retry_after))}\r\n"
    reason = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
              422: "Unprocessable Content", 426: "Upgrade Required",
              429: "Too Many Requests"}.get(exc.status, "Error")  # fmt: skip
    return (
        f"HTTP/1.1 {exc.status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
    ).encode() + body


class _RawSink:
    """Writes to one client's socket. Bytes the kernel takes at once are written
    without a trip through trio's scheduler (:meth:`send_nowait`, the common case
    for a live fan-out); the rest waits in ``pending`` for :meth:`write`."""

    def __init__(self, stream: trio.abc.Stream, lock: trio.Lock) -> None:
        self.stream = stream
        self.lock = lock
        self.broken = False
        self.pending = b""
        #: the trio socket under the stream (None: not a socket, always use send_all)
        self._sock = getattr(stream, "socket", None)

    def _write_now(self, data: bytes) -> bool:
        """Write ``data`` as far as the socket takes it without blocking; keep the
        rest in ``pending``. True when all of it went out."""
        if self.broken:
            raise trio.BrokenResourceError("stream was interrupted mid-write")
        if self.pending or self._sock is None or self.lock.locked():
            self.pending += data
            return False
        fd = self._sock.fileno()  # -1 once closed: never write to a reused number
        if fd < 0:
            self.broken = True
            raise trio.ClosedResourceError("the stream is closed")
        try:
            n = os.write(fd, data)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            self.broken = True
            raise trio.BrokenResourceError(f"client gone: {exc}") from exc
        if n < len(data):
            self.pending = data[n:]
            return False
        return True

    async def write(self, data: bytes) -> None:
        if self.broken:
            raise trio.BrokenResourceError("stream was interrupted mid-write")
        partial = bool(self.pending)  # the tail of a frame is already on the wire
        try:
            async with self.lock:
                data, self.pending = self.pending + data, b""
                partial = bool(data)
                await self.stream.send_all(data)
        except BaseException:
            # a cancelled send_all may have written part of a frame
            if partial:
                self.broken = True
            raise

    async def flush(self) -> None:
        """Send what :meth:`send_nowait` left in ``pending``."""
        await self.write(b"")


class WebSocketSink(_RawSink):
    kind = "websocket"

    async def send(self, frames: list[Frame]) -> None:
        await self.write(b"".join(f.ws for f in frames))

    def send_nowait(self, frames: list[Frame]) -> bool:
        return self._write_now(b"".join(f.ws for f in frames))

    async def finish(self, resync: str | None) -> None:
        if self.broken:
            return
        if resync is not None:
            await self.write(ws_frame(resync_frame(resync)) + ws_close(CLOSE_RESYNC, "resync"))
        else:
            await self.write(ws_close(CLOSE_GOING_AWAY, "server shutting down"))


class SSESink(_RawSink):
    kind = "sse"

    async def send(self, frames: list[Frame]) -> None:
        await self.write(b"".join(f.sse for f in frames))

    def send_nowait(self, frames: list[Frame]) -> bool:
        return self._write_now(b"".join(f.sse for f in frames))

    async def finish(self, resync: str | None) -> None:
        if resync is not None and not self.broken:
            await self.write(b"data: " + resync_frame(resync) + b"\n\n")


async def _ws_reader(stream: trio.abc.Stream, sink: WebSocketSink, done: trio.CancelScope) -> None:
    """Answer pings and closes; refuse oversized or unmasked client frames."""
    buf = b""
    message_size = 0
    try:
        while True:
            data = await stream.receive_some(65536)
            if not data:
                break
            buf += data
            while len(buf) >= 2:
                b0, b1 = buf[0], buf[1]
                opcode, masked, n = b0 & 0x0F, b1 & 0x80, b1 & 0x7F
                pos = 2
                if n == 126:
                    if len(buf) < 4:
                        break
                    n = struct.unpack("!H", buf[2:4])[0]
                    pos = 4
                elif n == 127:
                    if len(buf) < 10:
                        break
                    n = struct.unpack("!Q", buf[2:10])[0]
                    pos = 10
                if not masked:
                    await sink.write(ws_close(1002, "client frames must be masked"))
                    return
                if n > MAX_CLIENT_MESSAGE or message_size + n > MAX_CLIENT_MESSAGE:
                    await sink.write(ws_close(1009, "message too big"))
                    return
                if len(buf) < pos + 4 + n:
                    break
                mask = buf[pos : pos + 4]
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(buf[pos + 4 : pos + 4 + n]))
                buf = buf[pos + 4 + n :]
                if opcode == 0x8:  # close: echo the code, then end
                    await sink.write(ws_frame(payload[:2], opcode=0x8))
                    return
                if opcode == 0x9:
                    await sink.write(ws_frame(payload, opcode=0xA))
                elif opcode in (0x0, 0x1, 0x2):
                    message_size = 0 if b0 & 0x80 else message_size + n
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        done.cancel(reason="websocket client closed")


async def read_until_eof(
    stream: trio.abc.Stream, done: trio.CancelScope, reason: str = "sse client closed"
) -> None:
    """Discard what a one-way stream's client sends; cancel ``done`` when it hangs up."""
    try:
        while await stream.receive_some(4096):
            pass
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        done.cancel(reason=reason)


async def serve_raw_stream(
    svc: Services, stream: trio.abc.Stream, head: RequestHead, via_socket: bool
) -> None:
    websocket = head.path == "/v1/stream"
    try:
        if head.method != "GET":
            raise BadRequest("streams are opened with GET")
        key = head.headers.get("sec-websocket-key")
        if websocket and (
            "websocket" not in head.headers.get("upgrade", "").lower()
            or not key
            or head.headers.get("sec-websocket-version") != "13"
        ):
            exc = BadRequest("this is a WebSocket endpoint; use /v1/stream/sse for SSE")
            exc.status = 426
            raise exc
        session = await open_session(
            svc,
            via_socket=via_socket,
            authorization=head.headers.get("authorization"),
            token=head.query("token"),
            topics=head.query("topics"),
            since=head.query("since"),
            last_event_id=head.headers.get("last-event-id"),
            headers=head.headers,
        )
    except NotifydError as exc:
        with trio.move_on_after(5):
            await stream.send_all(http_error(exc))
        return

    try:
        await _serve_session(session, stream, websocket, key)
    finally:
        session.close()  # if the handshake failed before the session ran


async def _serve_session(
    session: StreamSession, stream: trio.abc.Stream, websocket: bool, key: str | None
) -> None:
    lock = trio.Lock()
    sink: WebSocketSink | SSESink
    if websocket:
        assert key is not None
        accept = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()
        handshake = (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        sink = WebSocketSink(stream, lock)
    else:
        handshake = (
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            "X-Accel-Buffering: no\r\nConnection: close\r\n\r\n"
        )
        sink = SSESink(stream, lock)
    await sink.write(handshake.encode() + (b"" if websocket else b": connected\n\n"))
    async with trio.open_nursery() as nursery:
        if websocket:
            nursery.start_soon(_ws_reader, stream, sink, nursery.cancel_scope)
        else:
            nursery.start_soon(read_until_eof, stream, nursery.cancel_scope)
        await session.run(sink)
        nursery.cancel_scope.cancel(reason="stream ended")
