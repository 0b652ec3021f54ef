"""The publish fast path: ``POST /v1/events`` served as a bare ASGI handler.

Publishing is the hottest request. FastAPI's routing, dependency resolution and
response machinery cost more per request than validating and durably committing
the event itself, so this handler sits in front of the FastAPI app and serves
exactly that one route with the same core calls (``inbox.publish``), the same
validation and the same error shape — and hands ntfy's publish requests
(``PUT``/``POST /<topic>``, :mod:`.compat.ntfy_publish`) to their own bare handler
the same way. Every other request, and the OpenAPI description of this one, still
comes from FastAPI.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from ..core import inbox
from ..core.errors import BadRequest, NotifydError
from ..core.services import Services
from . import cors
from .auth import SOCKET_SCOPE_KEY, resolve
from .compat import ntfy, ntfy_publish
from .responses import render_notifyd

log = logging.getLogger("notifyd.api")

_JSON_HEADERS = [(b"content-type", b"application/json")]


async def _respond(send: Any, status: int, body: bytes) -> None:
    headers = _JSON_HEADERS + [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class PublishFastPath:
    def __init__(self, app: Any, svc: Services) -> None:
        self.app = app
        self.svc = svc

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/events" and scope["method"] == "POST":
            await self._publish(scope, receive, send)
            return
        if scope["type"] == "http":
            # ntfy's publish (PUT/POST /<topic>, /<topic>/<id>, /): the same shortcut
            reserved = ntfy.reserved_names(self.app)
            target = ntfy_publish.fast_path_target(scope, reserved)
            if target is not None:
                await ntfy_publish.serve_asgi(self.svc, reserved, scope, receive, send, target)
                return
        await self.app(scope, receive, send)

    async def _publish(self, scope: dict, receive: Any, send: Any) -> None:
        authorization = idempotency_key = origin = None
        cookie_headers: dict[str, str] | None = None
        has_body = False
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name in (b"cookie", b"origin", b"host", b"x-csrf-token"):
                if name == b"origin":
                    origin = value.decode("latin-1")
                if cookie_headers is None:
                    cookie_headers = {}
                cookie_headers[name.decode()] = value.decode("latin-1")
            elif name == b"idempotency-key":
                idempotency_key = value.decode("latin-1")
            elif name in (b"content-length", b"transfer-encoding"):
                has_body = True
        body_read = False
        # an application in cors_origins may publish from its pages
        send = cors.wrap_send(send, cors.response_headers(self.svc.config, origin))
        try:
            caller = await resolve(
                self.svc, bool(scope.get(SOCKET_SCOPE_KEY)), authorization,
                method="POST", headers=cookie_headers,
            )  # fmt: skip
            # max_request_bytes is enforced by the connection guard's receive(), which
            # raises BodyTooLarge (a PayloadTooLarge) as soon as a declared or received
            # length passes it (api/server.py)
            chunks = []
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            body_read = True
            try:
                payload = orjson.loads(b"".join(chunks))
            except orjson.JSONDecodeError as exc:
                raise BadRequest(f"the body is not valid JSON: {exc}") from None
            result = await inbox.publish(self.svc, caller, payload, idempotency_key)
        except NotifydError as exc:
            # the unread body would garble the next request on this connection
            await render_notifyd(exc, close=has_body and not body_read).send(send)
            return
        body = {"events": result.events} if result.batch else result.events[0]
        await _respond(send, 200 if result.replayed else 201, orjson.dumps(body))
