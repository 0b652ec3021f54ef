"""The raw stream transport: what every stream door served on the trio socket shares.

The connection front (``server.py``) serves a new connection here when its first
request opens a stream: notifyd's ``/v1/stream`` (WebSocket) and ``/v1/stream/sse``
(``rawstream.py``), ntfy's ``/<topics>/ws|json|sse|raw`` (``compat/ntfy_stream.py``)
and Gotify's ``/stream`` (``compat/gotify.py``). Incoming bytes always pass the
protocol libraries:

- :class:`HeadReader`: h11 frames and parses the request head; on top of h11 the
  head is refused (400 in the door's shape) for what h11 lets through but a stream
  door must not: a version other than HTTP/1.0 or 1.1, a target that is not
  origin-form, obs-fold, bare LF, control bytes in values, and a second copy of a
  field that must appear once (``Host``, ``Authorization``, ``Cookie``, ``Origin``,
  ``Last-Event-ID``, ``Sec-WebSocket-Key``/``-Version``, ``Content-Length``).
- :class:`WebSocketProtocol`: wsproto does the handshake (the 101) and reads every client
  frame: pings are answered with a pong of the same payload, a client's close is
  echoed and the connection ends, and a frame RFC 6455 forbids ends it with the
  close code wsproto names (1002 protocol error, 1007 invalid UTF-8); a message
  over :data:`MAX_CLIENT_MESSAGE` ends it with 1009.

What the server sends on a stream never goes through wsproto: each event's frame
is built once (:class:`~notifyd.core.frames.Frame`) and its bytes are written to
every subscriber by a :class:`RawSink`, one write per batch.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs, parse_qsl, urlsplit

import h11
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Request,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError

from ..core.errors import BadRequest

#: the most a request head (request line and headers) may take
HEAD_LIMIT = 16 * 1024
#: the largest message a client may send on a one-way stream (close 1009 past it)
MAX_CLIENT_MESSAGE = 64 * 1024
CLOSE_MESSAGE_TOO_BIG = 1009

#: fields that may appear once: two copies are ambiguous (another server in front
#: might have read the other one), so such a head is refused
SINGLETONS = frozenset({"host", "authorization", "cookie", "origin", "last-event-id",
                        "sec-websocket-key", "sec-websocket-version", "content-length"})  # fmt: skip
#: a method token as the stream doors take it
_METHOD = re.compile(rb"[A-Z]{1,16}")
#: control characters that may not appear in a field value (RFC 9110 §5.5); h11
#: lets some through
_FIELD_CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
#: a line that continues the previous one (obs-fold, RFC 9112 §5.2); h11 unfolds it
_OBS_FOLD = re.compile(rb"\n[ \t]")


# -- the request head -----------------------------------------------------------------


@dataclass
class RequestHead:
    """A stream request's head, checked. ``headers`` has lower-case names; a field
    sent more than once (one not in :data:`SINGLETONS`) has its values joined with
    ``", "``, as RFC 9110 §5.3 combines them."""

    method: str
    target: str
    headers: dict[str, str]
    #: the head's bytes as received, through the blank line
    raw: bytes = b""
    #: what the client sent after the head (e.g. WebSocket frames)
    rest: bytes = b""
    _query: dict[str, list[str]] | None = field(default=None, repr=False)

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    def query(self, name: str) -> str | None:
        """The last value of the query parameter ``name``, if given."""
        if self._query is None:
            self._query = parse_qs(urlsplit(self.target).query)
        values = self._query.get(name)
        return values[-1] if values else None

    def query_items(self) -> list[tuple[str, str]]:
        return parse_qsl(urlsplit(self.target).query)

    def detach(self) -> bytes:
        """The bytes that followed the head, handed over once the stream starts;
        the head keeps only its method, target and headers from then on (it lives
        as long as the stream, and there may be tens of thousands)."""
        rest, self.rest, self.raw, self._query = self.rest, b"", b"", None
        return rest

    def is_websocket(self) -> bool:
        """Whether the client asks for a WebSocket (``Upgrade: websocket``)."""
        return "websocket" in self.headers.get("upgrade", "").lower()


def _bad(message: str) -> BadRequest:
    return BadRequest(message)


class HeadReader:
    """Reads one request head with h11: :meth:`feed` the bytes as they arrive until
    it returns the :class:`RequestHead`. Raises :class:`BadRequest` for a head h11
    refuses, one larger than ``limit``, or one this transport does not take (see
    the module's docstring)."""

    def __init__(self, limit: int = HEAD_LIMIT) -> None:
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=limit)
        self._received = bytearray()

    def feed(self, data: bytes) -> RequestHead | None:
        """The head once it is complete, else None (more bytes needed)."""
        self._received += data
        self._h11.receive_data(data)
        try:
            event = self._h11.next_event()
        except h11.RemoteProtocolError as exc:
            if exc.error_status_hint == 431:
                raise _bad("the request head is too large") from None
            raise _bad(f"malformed HTTP request: {exc}") from None
        if event is h11.NEED_DATA:
            return None
        if not isinstance(event, h11.Request):  # pragma: no cover - a server sees requests
            raise _bad("malformed HTTP request")
        rest = bytes(self._h11.trailing_data[0])
        raw = bytes(self._received[: len(self._received) - len(rest)])
        return _checked(event, raw, rest)


def _checked(event: h11.Request, raw: bytes, rest: bytes) -> RequestHead:
    if event.http_version not in (b"1.0", b"1.1"):
        raise _bad("unsupported HTTP version: use HTTP/1.1")
    if not _METHOD.fullmatch(event.method):
        raise _bad("malformed HTTP request line")
    if not event.target.startswith(b"/"):
        raise _bad("malformed HTTP request line: the target must be a path")
    if raw.count(b"\n") != raw.count(b"\r\n"):
        raise _bad("malformed HTTP head: lines must end with CRLF")
    if _OBS_FOLD.search(raw):
        raise _bad("malformed HTTP header line: obs-fold")
    headers: dict[str, str] = {}
    for name_b, value_b in event.headers.raw_items():
        name = name_b.decode("ascii").lower()  # h11 checked that it is a token
        if _FIELD_CTL.search(value_b):
            raise _bad(f"control character in the {name[:40]} header")
        value = value_b.decode("latin-1")
        if name in headers:
            if name in SINGLETONS:
                raise _bad(f"the {name} header appears more than once")
            headers[name] += ", " + value
        else:
            headers[name] = value
    return RequestHead(
        event.method.decode("ascii"), event.target.decode("ascii"), headers, raw, rest
    )


# -- the WebSocket handshake ------------------------------------------------------------


def valid_websocket_key(key: str | None) -> bool:
    """Whether ``Sec-WebSocket-Key`` is what RFC 6455 §4.1 requires: the base64 of 16
    bytes (wsproto takes any value)."""
    if key is None or len(key) != 24 or not key.isascii():
        return False
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def websocket_problem(head: RequestHead) -> tuple[int, str] | None:
    """Why ``head`` cannot open a WebSocket, as (status, message) for the door to
    answer in its own shape, or None: 426 when it is no WebSocket upgrade
    (``Upgrade``, ``Sec-WebSocket-Key``, ``Sec-WebSocket-Version: 13``), 400 for a
    key that is not the base64 of 16 bytes."""
    if head.method != "GET":
        return 400, "a WebSocket is opened with GET"
    key = head.headers.get("sec-websocket-key")
    if not head.is_websocket() or not key or head.headers.get("sec-websocket-version") != "13":
        return 426, "this is a WebSocket endpoint: send an Upgrade request (RFC 6455, version 13)"
    if not valid_websocket_key(key):
        return 400, "Sec-WebSocket-Key must be the base64 of 16 bytes (RFC 6455)"
    return None


class WebSocketProtocol:
    """The protocol side of one server WebSocket: wsproto's state machine. It never
    touches the socket: :meth:`accept` returns the 101 to write, :meth:`receive`
    takes what the client sent and returns what to answer."""

    __slots__ = ("_accepted", "_ws", "_message_size", "closed")

    def __init__(self) -> None:
        self._accepted = False
        #: the frame protocol, made when the client first sends something after the
        #: handshake: an idle subscriber (the common case, by the thousand) costs no
        #: wsproto state at all
        self._ws: Connection | None = None
        self._message_size = 0
        #: the connection is over (a close was received or sent)
        self.closed = False

    def accept(self, head: RequestHead) -> bytes:
        """The handshake answer (``101 Switching Protocols``) for ``head``, checked
        by the caller with :func:`websocket_problem`; raises :class:`BadRequest` if
        wsproto refuses the request all the same. Bytes that followed the head
        (``head.rest``) are client frames: pass them to :meth:`receive`."""
        assert not self._accepted, "accept() is called once"
        handshake = WSConnection(ConnectionType.SERVER)
        try:
            handshake.receive_data(head.raw)
            if not any(isinstance(e, Request) for e in handshake.events()):
                raise _bad("incomplete WebSocket handshake")
            answer = handshake.send(AcceptConnection())
        except RemoteProtocolError as exc:
            raise _bad(f"WebSocket handshake refused: {exc}") from None
        except UnicodeError:  # wsproto decodes Host as IDNA
            raise _bad("WebSocket handshake refused: the Host header is not a host name") from None
        # the handshake's state (h11's too) is dropped here; no extension was
        # accepted, so a fresh server-side frame protocol is what it would hand over
        self._accepted = True
        return answer

    def receive(self, data: bytes | bytearray) -> bytes:
        """Take bytes the client sent; return the frames to answer (pongs, a close).
        Data messages are dropped (the streams are one-way) but their size counts.
        Once :attr:`closed` is set, write the answer and end the connection."""
        if self.closed or not self._accepted:
            return b""
        ws = self._ws
        if ws is None:
            ws = self._ws = Connection(ConnectionType.SERVER)
        ws.receive_data(bytes(data))
        out = b""
        for event in ws.events():
            if isinstance(event, Ping):
                out += ws.send(event.response())
            elif isinstance(event, TextMessage | BytesMessage):
                payload = event.data
                self._message_size += len(payload.encode() if isinstance(payload, str) else payload)
                if self._message_size > MAX_CLIENT_MESSAGE:
                    return out + self._close(CLOSE_MESSAGE_TOO_BIG, "message too big")
                if event.message_finished:
                    self._message_size = 0
            elif isinstance(event, CloseConnection):
                if ws.state is ConnectionState.REMOTE_CLOSING:  # the client closed: echo it
                    self.closed = True
                    return out + ws.send(event.response())
                # wsproto could not parse what the client sent (it stays OPEN): close
                # with the code it names (1002, 1007)
                return out + self._close(event.code, event.reason or "")
        return out

    def _close(self, code: int, reason: str) -> bytes:
        self.closed = True
        assert self._ws is not None
        return self._ws.send(CloseConnection(code=code, reason=reason[:100]))


# -- writing to the client ------------------------------------------------------------


class RawSink:
    """Writes to one client's socket. Bytes the kernel takes at once are written
    without a trip through trio's scheduler (:meth:`_write_now`, the common case for
    a live fan-out); the rest waits in ``pending`` for :meth:`write`. Subclasses
    (one per wire format) build what they write from pre-built frames."""

    def __init__(self, stream: trio.abc.Stream, lock: trio.Lock | None = None) -> None:
        self.stream = stream
        self.lock = lock or trio.Lock()
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
        """Send what :meth:`_write_now` left in ``pending``."""
        await self.write(b"")


async def refuse(stream: trio.abc.Stream, answer: bytes) -> None:
    """Write a refusal (an error answer rendered in the door's shape) to a stream
    that will be closed next; a client that does not read it gets 5 s at most."""
    with trio.move_on_after(5):
        await stream.send_all(answer)


# -- reading from the client ----------------------------------------------------------


async def read_websocket(
    stream: trio.abc.Stream,
    sink: RawSink,
    ws: WebSocketProtocol,
    first: bytes,
    done: trio.CancelScope,
) -> None:
    """Read what a one-way stream's WebSocket client sends (``first``: bytes that
    came with the head) through ``ws``, write its answers, and cancel ``done`` when
    the connection is over: the client closed or hung up, or broke the protocol."""
    try:
        data: bytes | bytearray = first
        while True:
            if data:
                out = ws.receive(data)
                if out:
                    await sink.write(out)
                if ws.closed:
                    return
            data = await stream.receive_some(65536)
            if not data:
                return
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        done.cancel(reason="websocket client closed")


async def read_until_eof(
    stream: trio.abc.Stream, done: trio.CancelScope, reason: str = "client closed"
) -> None:
    """Discard what a one-way HTTP stream's client sends; cancel ``done`` when it
    hangs up."""
    try:
        while await stream.receive_some(4096):
            pass
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        done.cancel(reason=reason)
