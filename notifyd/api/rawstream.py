"""notifyd's own streams on the raw transport: ``/v1/stream`` (WebSocket) and
``/v1/stream/sse``.

The connection front (``server.py``) hands over connections whose first request
opens one of them, with the head parsed by :class:`~.transport.HeadReader`. The
WebSocket handshake and every client frame go through wsproto
(:class:`~.transport.WebSocketProtocol`); frames are written as the shared pre-built bytes
of :class:`~notifyd.core.frames.Frame`, one write per batch, which is what makes
fan-out cheap.
"""

from __future__ import annotations

import logging

import trio

from ..core.errors import BadRequest, NotifydError
from ..core.frames import Frame, ws_close, ws_frame
from ..core.services import Services
from . import cors
from .responses import render_notifyd, status_error
from .streams import StreamSession, open_session, resync_frame
from .transport import (
    RawSink,
    RequestHead,
    WebSocketProtocol,
    read_until_eof,
    read_websocket,
    refuse,
    websocket_problem,
)

log = logging.getLogger("notifyd.stream")

CLOSE_GOING_AWAY = 1001
CLOSE_RESYNC = 4000
STREAM_PATH, SSE_PATH = "/v1/stream", "/v1/stream/sse"


class WebSocketSink(RawSink):
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


class SSESink(RawSink):
    kind = "sse"

    async def send(self, frames: list[Frame]) -> None:
        await self.write(b"".join(f.sse for f in frames))

    def send_nowait(self, frames: list[Frame]) -> bool:
        return self._write_now(b"".join(f.sse for f in frames))

    async def finish(self, resync: str | None) -> None:
        if resync is not None and not self.broken:
            await self.write(b"data: " + resync_frame(resync) + b"\n\n")


async def serve_raw_stream(
    svc: Services, stream: trio.abc.Stream, head: RequestHead, via_socket: bool
) -> None:
    websocket = head.path == STREAM_PATH
    ws: WebSocketProtocol | None = None
    handshake: bytes | None = None
    # an application in cors_origins reads the SSE stream (and its refusals, a 401
    # telling it to fetch a fresh token) with fetch(); browsers apply no CORS to
    # WebSockets
    shared = [] if websocket else cors.response_headers(svc.config, head.headers.get("origin"))
    try:
        if websocket:
            problem = websocket_problem(head)
            if problem is not None:
                status, message = problem
                if status == 426:
                    message = "this is a WebSocket endpoint; use /v1/stream/sse for SSE"
                raise status_error(status, message, code="bad_request")
        elif head.method != "GET":
            raise BadRequest("streams are opened with GET")
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
        if websocket:
            ws = WebSocketProtocol()
            try:
                handshake = ws.accept(head)
            except NotifydError:
                session.close()
                raise
    except NotifydError as exc:
        await refuse(stream, render_notifyd(exc, headers=dict(shared)).raw())
        return

    try:
        await _serve_session(session, stream, head, ws, handshake, cors.raw_lines(shared))
    finally:
        session.close()  # if the handshake failed before the session ran


async def _serve_session(
    session: StreamSession,
    stream: trio.abc.Stream,
    head: RequestHead,
    ws: WebSocketProtocol | None,
    handshake: bytes | None,
    extra_head: bytes = b"",
) -> None:
    sink: WebSocketSink | SSESink
    if ws is not None:
        assert handshake is not None
        sink = WebSocketSink(stream)
    else:
        handshake = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"X-Accel-Buffering: no\r\nConnection: close\r\n" + extra_head + b"\r\n: connected\n\n"
        )
        sink = SSESink(stream)
    first = head.detach()
    await sink.write(handshake)
    async with trio.open_nursery() as nursery:
        if ws is not None:
            nursery.start_soon(read_websocket, stream, sink, ws, first, nursery.cancel_scope)
        else:
            nursery.start_soon(read_until_eof, stream, nursery.cancel_scope, "sse client closed")
        await session.run(sink)
        nursery.cancel_scope.cancel(reason="stream ended")
