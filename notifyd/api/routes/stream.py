"""ASGI fallback for the live streams.

New connections that open a stream never get here: the connection front serves
them on the fast path. This route serves the same protocol through hypercorn for a
client that asks for a stream on a keep-alive connection it already used for other
requests (browsers may reuse a pooled connection for ``EventSource``).
"""

from __future__ import annotations

from typing import Annotated, Any

import trio
from fastapi import APIRouter, Query, Request, WebSocket
from starlette.responses import Response
from starlette.websockets import WebSocketDisconnect

from ...core.errors import NotifydError
from ...core.frames import Frame
from ..auth import SOCKET_SCOPE_KEY
from ..responses import render_notifyd
from ..streams import StreamSession, open_session, resync_frame

router = APIRouter(tags=["stream"])


class _ASGISSESink:
    kind = "sse"

    def __init__(self, send: Any) -> None:
        self._send = send

    async def send(self, frames: list[Frame]) -> None:
        await self._send(
            {
                "type": "http.response.body",
                "body": b"".join(f.sse for f in frames),
                "more_body": True,
            }
        )

    async def finish(self, resync: str | None) -> None:
        body = b"data: " + resync_frame(resync) + b"\n\n" if resync else b""
        await self._send({"type": "http.response.body", "body": body, "more_body": False})


class _SSEResponse(Response):
    def __init__(self, session: StreamSession) -> None:
        super().__init__(media_type="text/event-stream")
        self.session = session

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no"),
                ],
            }
        )
        try:
            async with trio.open_nursery() as nursery:

                async def watch() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    nursery.cancel_scope.cancel(reason="sse client closed")

                nursery.start_soon(watch)
                await self.session.run(_ASGISSESink(send))
                nursery.cancel_scope.cancel(reason="stream ended")
        finally:
            self.session.close()


@router.get(
    "/v1/stream/sse",
    summary="Live events as Server-Sent Events",
    response_description="`text/event-stream`; each record's `id:` is the event id (the cursor)",
)
async def sse(
    request: Request,
    topics: Annotated[str | None, Query(description="comma-separated topics or patterns")] = None,
    since: Annotated[str | None, Query(description="event id or 'all': replay from there")] = None,
    token: Annotated[str | None, Query(description="for clients that cannot set headers")] = None,
) -> Response:
    try:
        session = await open_session(
            request.app.state.services,
            via_socket=bool(request.scope.get(SOCKET_SCOPE_KEY)),
            authorization=request.headers.get("authorization"),
            token=token,
            topics=topics,
            since=since,
            last_event_id=request.headers.get("last-event-id"),
            headers=request.headers,
        )
    except NotifydError as exc:
        return _denial(exc)
    return _SSEResponse(session)


def _denial(exc: NotifydError) -> Response:
    return render_notifyd(exc).response()


class _ASGIWebSocketSink:
    kind = "websocket"

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws

    async def send(self, frames: list[Frame]) -> None:
        for f in frames:
            await self.ws.send_text(f.payload.decode())

    async def finish(self, resync: str | None) -> None:
        if resync:
            await self.ws.send_text(resync_frame(resync).decode())
            await self.ws.close(4000, "resync")
        else:
            await self.ws.close(1001, "server shutting down")


async def until_websocket_closes(
    ws: WebSocket, done: trio.CancelScope, reason: str = "websocket client closed"
) -> None:
    """Read (and drop) what an ASGI WebSocket's client sends; cancel ``done`` when it
    closes or sends something a one-way stream does not take (binary)."""
    try:
        while True:
            await ws.receive_text()
    except (WebSocketDisconnect, RuntimeError, KeyError):
        done.cancel(reason=reason)


@router.websocket("/v1/stream")
async def websocket_stream(ws: WebSocket) -> None:
    try:
        session = await open_session(
            ws.app.state.services,
            via_socket=bool(ws.scope.get(SOCKET_SCOPE_KEY)),
            authorization=ws.headers.get("authorization"),
            token=ws.query_params.get("token"),
            topics=ws.query_params.get("topics"),
            since=ws.query_params.get("since"),
            headers=ws.headers,
        )
    except NotifydError as exc:
        await ws.send_denial_response(_denial(exc))
        return
    try:
        await ws.accept()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(until_websocket_closes, ws, nursery.cancel_scope)
            await session.run(_ASGIWebSocketSink(ws))
            nursery.cancel_scope.cancel(reason="stream ended")
    finally:
        session.close()
