"""The stream fast path: WebSocket and SSE served straight on the trio socket.

The connection front (``server.py``) hands over connections whose first request
is ``GET /v1/stream`` (WebSocket upgrade) or ``GET /v1/stream/sse``. Frames are
written as the shared pre-built bytes of :class:`~notifyd.core.frames.Frame`, one
``send_all`` per batch, which is what makes fan-out cheap. Client-to-server
WebSocket traffic is only control frames (ping, close) and is size-limited.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import struct
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import trio

from ..core.errors import BadRequest, NotifydError
from ..core.frames import Frame, ws_close, ws_frame
from ..core.services import Services
from .responses import render_notifyd
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


#: a request line the fast path takes: a method token, an origin-form target, HTTP/1.x
_REQUEST_LINE = re.compile(r"([A-Z]{1,16}) (/[\x21-\x7e]*) HTTP/1\.[01]")
#: a header name is an RFC 9110 token
_FIELD_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: control characters that may not appear in a header value (RFC 9110 §5.5)
_FIELD_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
#: fields that may appear once: two differing copies are ambiguous (another server
#: in front might have read the other one), so such a head is refused
_SINGLETONS = frozenset({"host", "authorization", "cookie", "origin", "last-event-id",
                         "sec-websocket-key", "sec-websocket-version", "content-length"})  # fmt: skip


def parse_head(raw: bytes) -> RequestHead:
    """A stream request's head, or :class:`BadRequest`: everything a client sends is
    checked here (request line, header names and values, no obs-fold), so that the
    handlers only meet well-formed text. Bytes above ASCII in values are kept as
    latin-1, as every HTTP server reads them."""
    lines = raw.decode("latin-1").split("\r\n")
    m = _REQUEST_LINE.fullmatch(lines[0])
    if m is None:
        raise BadRequest("malformed HTTP request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not _FIELD_NAME.fullmatch(name):
            # obs-fold (a line starting with a space) and lines without a name included
            raise BadRequest("malformed HTTP header line")
        if _FIELD_CTL.search(value):
            raise BadRequest(f"control character in the {name[:40]} header")
        key = name.lower()
        if key in headers and key in _SINGLETONS:
            raise BadRequest(f"the {name} header appears more than once")
        headers[key] = value.strip(" \t")
    return RequestHead(m.group(1), m.group(2), headers)


def valid_websocket_key(key: str | None) -> bool:
    """Whether ``Sec-WebSocket-Key`` is what RFC 6455 §4.1 requires: the base64 of 16
    bytes."""
    if key is None or len(key) != 24 or not key.isascii():
        return False
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def websocket_accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()


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


def _valid_close_code(code: int) -> bool:
    """A close code a client may send (RFC 6455 §7.4): a registered one meant for
    endpoints to send, or the registered/private ranges 3000–4999."""
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011) or 3000 <= code <= 4999


def _frame_error(b0: int, n: int, in_message: bool, message_size: int) -> tuple[int, str] | None:
    """What RFC 6455 §5 forbids in a client frame header (masking checked apart)."""
    fin, opcode = b0 & 0x80, b0 & 0x0F
    if b0 & 0x70:
        return 1002, "no extension was negotiated: RSV bits must be 0"
    if opcode not in (0x0, 0x1, 0x2, 0x8, 0x9, 0xA):
        return 1002, f"unknown opcode {opcode:#x}"
    if opcode >= 0x8:
        if not fin or n > 125:
            return 1002, "control frames must be unfragmented and at most 125 bytes"
        return None
    if (opcode == 0x0) != in_message:
        return 1002, "continuation frame outside a message, or a new message inside one"
    if n > MAX_CLIENT_MESSAGE or message_size + n > MAX_CLIENT_MESSAGE:
        return 1009, "message too big"
    return None


async def _ws_reader(stream: trio.abc.Stream, sink: _RawSink, done: trio.CancelScope) -> None:
    """Read what a one-way stream's WebSocket client sends: answer pings and closes,
    drop data, and close with 1002 (protocol error) or 1009 (too big) on anything
    RFC 6455 forbids. Data payloads are skipped as they arrive, never unmasked or
    buffered whole, and each chunk read is parsed in one pass with its pongs
    written together: a client costs this task about what reading its bytes costs."""
    buf = b""
    skip = 0  # payload bytes of a data frame still to discard
    message_size = 0
    in_message = False  # a fragmented data message has begun
    try:
        while True:
            data = await stream.receive_some(65536)
            if not data:
                break
            if skip:
                dropped = min(skip, len(data))
                skip -= dropped
                data = data[dropped:]
            buf += data
            off, out, end = 0, b"", None
            while not skip and len(buf) - off >= 2:
                b0, b1 = buf[off], buf[off + 1]
                n, pos = b1 & 0x7F, off + 2
                if n == 126:
                    if len(buf) - off < 4:
                        break
                    n, pos = struct.unpack_from("!H", buf, off + 2)[0], off + 4
                elif n == 127:
                    if len(buf) - off < 10:
                        break
                    n, pos = struct.unpack_from("!Q", buf, off + 2)[0], off + 10
                error = (
                    (1002, "client frames must be masked") if not b1 & 0x80
                    else _frame_error(b0, n, in_message, message_size)
                )  # fmt: skip
                if error is not None:
                    end = ws_close(*error)
                    break
                opcode, fin = b0 & 0x0F, b0 & 0x80
                if opcode < 0x8:  # data: nothing to read on a one-way stream
                    message_size = 0 if fin else message_size + n
                    in_message = not fin
                    have = len(buf) - pos - 4
                    if have < 0:
                        break
                    if have < n:
                        skip, off = n - have, len(buf)
                    else:
                        off = pos + 4 + n
                    continue
                if len(buf) < pos + 4 + n:
                    break
                mask = buf[pos : pos + 4]
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(buf[pos + 4 : pos + 4 + n]))
                off = pos + 4 + n
                if opcode == 0x9:
                    out += ws_frame(payload, opcode=0xA)
                elif opcode == 0x8:  # close: echo a valid code, then end
                    if n == 0:
                        end = ws_frame(b"", opcode=0x8)
                    elif n == 1 or not _valid_close_code(struct.unpack("!H", payload[:2])[0]):
                        end = ws_close(1002, "invalid close frame")
                    else:
                        end = ws_frame(payload[:2], opcode=0x8)
                    break
            buf = buf[off:]
            if out or end:
                await sink.write(out + (end or b""))
            if end is not None:
                return
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
        if websocket and not valid_websocket_key(key):
            raise BadRequest("Sec-WebSocket-Key must be the base64 of 16 bytes (RFC 6455)")
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
            await stream.send_all(render_notifyd(exc).raw())
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
        handshake = (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {websocket_accept(key)}\r\n\r\n"
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
