"""The Gotify protocol over notifyd's core: ``POST /message`` for applications,
``GET /message``, ``/stream`` and friends for clients (the Gotify Android app,
scripts and libraries).

Credentials, as Gotify reads them: ``?token=``, ``X-Gotify-Key``, ``Authorization:
Bearer``, and for clients also ``Authorization: Basic`` (user name and password;
failures are throttled with the web sign-in's limits). Over the Unix socket a
request without credentials is the socket's admin user, as everywhere in notifyd.
How tokens, topics, priorities and extras map: :mod:`.gotify_map`.

Errors have Gotify's shape, ``{"error", "errorCode", "errorDescription"}``, and
invalid input answers 400 as in Gotify.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson
import trio
from fastapi import APIRouter, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect, HTTPConnection
from starlette.responses import Response
from starlette.websockets import WebSocketDisconnect

from ... import __version__
from ...core import inbox
from ...core.acl import Principal
from ...core.errors import (
    BadRequest,
    Forbidden,
    NotFound,
    NotifydError,
    PayloadTooLarge,
    Unauthorized,
    ValidationFailed,
)
from ...core.frames import Frame, ws_close, ws_frame
from ...core.models import BODY_MAX, TITLE_MAX, ascii_int
from ...core.services import Services
from ...core.store import EventExtras, Token
from ...core.timeutil import format_ts
from ..auth import SOCKET_SCOPE_KEY, proxy_principal
from ..clientaddr import proxy_identity
from ..responses import JSON, carries_body, render_gotify, status_error
from ..streams import StreamSession
from ..transport import (
    RawSink,
    RequestHead,
    WebSocketProtocol,
    read_websocket,
    refuse,
    websocket_problem,
)
from . import gotify_map as gm

log = logging.getLogger("notifyd.gotify")

#: What ``/version`` reports: Gotify's API level, and notifyd's own version
GOTIFY_API_VERSION = "2.0.0"
#: Gotify's paging limits for message lists
DEFAULT_LIMIT, MAX_LIMIT = 100, 200
#: extras larger than this (as JSON) are refused
EXTRAS_MAX = 32 * 1024
#: at most this many events are archived per write when deleting many messages
ARCHIVE_PAGE = 500


def _error_for(conn: HTTPConnection, exc: NotifydError) -> Response:
    return render_gotify(exc, close=carries_body(conn.headers)).response()


class GotifyRoute(APIRoute):
    """Answers errors in Gotify's shape instead of notifyd's."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except NotifydError as exc:
                return _error_for(request, exc)
            except RequestValidationError as exc:
                err = exc.errors()[0] if exc.errors() else {}
                name = str((err.get("loc") or ("request",))[-1])
                return _error_for(request, BadRequest(f"Field '{name}' is not valid"))

        return route


router = APIRouter(include_in_schema=False, route_class=GotifyRoute)


# -- who is calling ------------------------------------------------------------------------


@dataclass
class Caller:
    principal: Principal
    #: the token the caller sent (Gotify shows a client its own token), if it sent one
    secret: str | None = None


def _services(conn: HTTPConnection) -> Services:
    return conn.app.state.services


def _credentials(conn: HTTPConnection) -> tuple[str | None, tuple[str, str] | None]:
    """The token (``?token=``, ``X-Gotify-Key``, Bearer — Gotify's order) and the
    Basic user name and password, each if sent."""
    bearer = basic = None
    header = conn.headers.get("authorization")
    if header:
        scheme, _, value = header.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and value:
            bearer = value
        elif scheme.lower() == "basic" and value:
            try:
                name, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise Unauthorized("malformed Basic credentials") from None
            if not sep:
                raise Unauthorized("malformed Basic credentials")
            basic = (name, password)
    token = conn.query_params.get("token") or conn.headers.get("x-gotify-key") or bearer
    return token or None, basic


async def authenticate(conn: HTTPConnection, need: Literal["client", "app"]) -> Caller:
    """The caller of a client endpoint (a token with scope ``subscribe``, Basic, a
    trusted proxy's user, or the socket) or of ``POST /message`` (a token with scope
    ``publish``). Tokens are notifyd's or JWTs from ``jwt_issuer``, in every place
    Gotify takes one."""
    svc = _services(conn)
    token, basic = _credentials(conn)
    if token is not None:
        principal = await svc.accounts.authenticate_token(token)
        scopes = principal.scopes
        if need == "client" and not scopes & {"subscribe", "admin"}:
            raise Unauthorized(
                "this is an application token (scope 'publish'); "
                "reading needs a client token (scope 'subscribe') or user credentials"
            )
        if need == "app" and principal.via == "jwt":
            raise Forbidden(
                "a JWT is not a Gotify application: POST /message needs an application "
                "token; a JWT publishes with POST /v1/events or ntfy's POST /<topic>"
            )
        if need == "app" and not scopes & {"publish", "admin"}:
            raise Unauthorized(
                "this is a client token (scope 'subscribe'); "
                "POST /message needs an application token (scope 'publish')"
            )
        return Caller(principal, token)
    if basic is not None:
        address = conn.client.host if conn.client else "local"
        principal = await svc.accounts.authenticate_password(*basic, "basic", address)
        if need == "app":
            raise Forbidden(
                "user credentials are not accepted here: POST /message needs an "
                "application token (scope 'publish')"
            )
        return Caller(principal)
    identity = proxy_identity()
    if need == "client" and identity is not None:  # a trusted reverse proxy's user
        return Caller(await proxy_principal(svc, identity))
    if need == "client" and conn.scope.get(SOCKET_SCOPE_KEY):
        return Caller(await svc.accounts.socket_principal(svc.config.socket_user))
    raise Unauthorized(
        "you need to provide a valid access token or user credentials to access this api"
    )


async def _client(request: Request) -> Caller:
    return await authenticate(request, "client")


async def _own_tokens(svc: Services, principal: Principal) -> list[Token]:
    return await svc.store.list_tokens(principal.user_id)


async def _shaper(svc: Services, principal: Principal, *, cache: bool = False) -> gm.Shaper:
    return gm.Shaper(svc, gm.AppIndex(await _own_tokens(svc, principal)), cache=cache)


def _id(raw: str) -> int:
    n = ascii_int(raw, 10**18 - 1)
    if n is None:
        raise BadRequest("invalid id")
    return n


# -- request bodies ------------------------------------------------------------------------


async def _read_body(request: Request) -> bytes:
    """The whole body. ``max_request_bytes`` is enforced as it is read, by the
    connection guard (``BodyTooLarge`` out of ``receive()``, answered in Gotify's
    shape by :class:`GotifyRoute`)."""
    chunks = []
    try:
        async for chunk in request.stream():
            chunks.append(chunk)
    except ClientDisconnect:  # gone, or cut off for sending too slowly (body_timeout)
        raise BadRequest("the client went away before sending the whole body") from None
    return b"".join(chunks)


async def _fields(request: Request) -> tuple[dict[str, Any], bool]:
    """The request's fields: a JSON object, or form fields (urlencoded or multipart)
    with the query's as fallback (as Gotify's form binding reads both). Returns the
    fields and whether they came as JSON (typed) or as form text."""
    body = await _read_body(request)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json" or (
        ctype.endswith("+json") and ctype.startswith("application/")
    ):
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise BadRequest("the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise BadRequest("the body must be a JSON object")
        return data, True
    fields: dict[str, Any] = {k: v for k, v in request.query_params.items() if k != "token"}
    if body and ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):

        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form()
        except Exception as exc:  # noqa: BLE001 - any parser error is the client's
            raise BadRequest(f"the form could not be read: {exc}") from None
        for key, value in form.multi_items():
            if isinstance(value, str):
                fields[key] = value
        await form.close()
    return fields, False


def _text(fields: dict[str, Any], name: str) -> str:
    value = fields.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValidationFailed(f"Field '{name}' is not valid: expected a string", field=name)
    return value


def _int(fields: dict[str, Any], name: str, typed: bool) -> int | None:
    value = fields.get(name)
    if value is None or (not typed and value == ""):
        return None
    if typed and isinstance(value, int) and not isinstance(value, bool):
        return value
    text = value.strip() if isinstance(value, str) else ""
    digits = text[1:] if text.startswith("-") else text  # one sign: int() refuses "--5"
    if not typed and digits.isascii() and digits.isdigit() and len(digits) <= 18:  # and "²"
        return int(text)
    raise ValidationFailed(f"Field '{name}' is not valid: expected an integer", field=name)


# -- messages ------------------------------------------------------------------------------


@router.post("/message")
async def create_message(request: Request) -> JSON:
    svc = _services(request)
    caller = await authenticate(request, "app")
    principal = caller.principal
    app = next((t for t in await _own_tokens(svc, principal) if t.id == principal.token_id), None)
    if app is None:
        raise Unauthorized("unknown or revoked token")
    fields, typed = await _fields(request)
    body = _text(fields, "message")
    if not body:
        raise ValidationFailed("Field 'message' is required", field="message")
    title = _text(fields, "title")
    if not title.strip():
        title = gm.app_name(app)
    if len(title) > TITLE_MAX:
        raise ValidationFailed(
            f"Field 'title' is longer than {TITLE_MAX} characters", field="title"
        )
    if len(body) > BODY_MAX:
        raise ValidationFailed(
            f"Field 'message' is longer than {BODY_MAX} characters", field="message"
        )
    priority = _int(fields, "priority", typed)
    extras = fields.get("extras") if typed else None
    if extras is not None:
        if not isinstance(extras, dict):
            raise ValidationFailed(
                "Field 'extras' is not valid: expected an object", field="extras"
            )
        if len(orjson.dumps(extras)) > EXTRAS_MAX:
            raise PayloadTooLarge(f"extras are limited to {EXTRAS_MAX} bytes", field="extras")
    payload = {
        "topic": gm.default_topic(app),
        "title": title,
        "body": body,
        # a message without a priority gets the application's default, 0 in Gotify
        "priority": gm.priority_in(0 if priority is None else priority),
        **gm.fields_from_extras(extras),
    }
    compat = EventExtras(app.id, extras)
    try:
        result = await inbox.publish(svc, principal, payload, compat=compat)
    except ValidationFailed as exc:
        field = "message" if exc.field == "body" else exc.field
        raise ValidationFailed(exc.message.replace("body:", "message:"), field=field) from None
    event = result.events[0]
    return JSON(gm.message(event, compat, app.id))


def _paging(request: Request) -> tuple[int, int]:
    def number(name: str, default: int, low: int, high: int) -> int:
        raw = request.query_params.get(name)
        if raw is None or raw == "":
            return default
        n = ascii_int(raw)
        if n is None or not low <= n <= high:
            raise ValidationFailed(f"Field '{name}' is not valid", field=name)
        return n

    return number("limit", DEFAULT_LIMIT, 1, MAX_LIMIT), number("since", 0, 0, 2**63 - 1)


async def _page(request: Request, caller: Caller, topic: str | None) -> JSON:
    """Gotify's paged message list: newest first, ids below ``since`` (0: from the newest)."""
    svc = _services(request)
    limit, since = _paging(request)
    query = inbox.history_query(
        caller.principal, topic=topic, before=since or None, limit=limit + 1
    )
    events = await svc.store.history(query)
    more = len(events) > limit
    events = events[:limit]
    paging: dict[str, Any] = {"size": len(events), "since": 0, "limit": limit}
    if more:
        paging["since"] = events[-1]["id"]
        base = svc.config.base_url.rstrip("/") or str(request.base_url).rstrip("/")
        paging["next"] = f"{base}{request.url.path}?limit={limit}&since={paging['since']}"
    shaper = await _shaper(svc, caller.principal)
    return JSON({"paging": paging, "messages": await shaper.messages(events)})


@router.get("/message")
async def list_messages(request: Request) -> JSON:
    return await _page(request, await _client(request), None)


async def _own_app(svc: Services, principal: Principal, app_id: int) -> Token:
    for token in await _own_tokens(svc, principal):
        if token.id == app_id and gm.is_app(token):
            return token
    raise NotFound("application does not exist", field="id")


@router.get("/application/{app_id}/message")
async def list_app_messages(request: Request, app_id: str) -> JSON:
    caller = await _client(request)
    app = await _own_app(_services(request), caller.principal, _id(app_id))
    return await _page(request, caller, gm.default_topic(app))


async def _archive_all(svc: Services, principal: Principal, topic: str | None) -> None:
    """Archive every message the caller sees (in ``topic``), newest first, a page at a
    time; events published meanwhile are left alone."""
    before = await svc.store.last_event_id() + 1
    while True:
        query = inbox.history_query(principal, topic=topic, before=before, limit=ARCHIVE_PAGE)
        events = await svc.store.history(query)
        if not events:
            return
        await inbox.set_state(svc, principal, [ev["id"] for ev in events], "archive")
        before = events[-1]["id"]


def _ok() -> Response:
    return Response(status_code=200, media_type="application/json")


@router.delete("/message/{message_id}")
async def delete_message(request: Request, message_id: str) -> Response:
    svc = _services(request)
    caller = await _client(request)
    event_id = _id(message_id)
    try:
        event = await inbox.get_event(svc, caller.principal, event_id)
    except NotFound:
        raise NotFound("message does not exist", field="id") from None
    if event["archived"]:
        raise NotFound("message does not exist", field="id")
    await inbox.set_state(svc, caller.principal, [event_id], "archive")
    return _ok()


@router.delete("/message")
async def delete_messages(request: Request) -> Response:
    caller = await _client(request)
    await _archive_all(_services(request), caller.principal, None)
    return _ok()


@router.delete("/application/{app_id}/message")
async def delete_app_messages(request: Request, app_id: str) -> Response:
    svc = _services(request)
    caller = await _client(request)
    app = await _own_app(svc, caller.principal, _id(app_id))
    await _archive_all(svc, caller.principal, gm.default_topic(app))
    return _ok()


# -- applications, clients, the user -------------------------------------------------------------


@router.get("/application")
async def list_applications(request: Request) -> JSON:
    svc = _services(request)
    caller = await _client(request)
    tokens = await _own_tokens(svc, caller.principal)
    own = caller.principal.token_id
    return JSON([gm.application(t, caller.secret, own) for t in tokens if gm.is_app(t)])


async def _user_name(svc: Services, principal: Principal) -> str:
    user = await svc.store.get_user_by_id(principal.user_id)
    if user is None:
        raise Unauthorized("the user no longer exists")
    return user.name


def _name(fields: dict[str, Any]) -> str:
    name = _text(fields, "name").strip()
    if not name:
        raise ValidationFailed("Field 'name' is required", field="name")
    if len(name) > 64:
        raise ValidationFailed("Field 'name' is longer than 64 characters", field="name")
    return name


@router.post("/application")
async def create_application(request: Request) -> JSON:
    """A new application: a token with scope ``publish`` limited to
    ``gotify/<name>``, in Gotify's application form (``A`` and 14 characters, which
    shoutrrr and Watchtower check), shown in full this once."""
    svc = _services(request)
    caller = await _client(request)
    caller.principal.require_account()
    name = _name((await _fields(request))[0])
    segment = gm.topic_segment(name)
    topics = f"{gm.APP_TOPIC_PREFIX}/{segment}" if segment else None
    secret, token = await svc.accounts.create_token(
        caller.principal,
        await _user_name(svc, caller.principal),
        ["publish"],
        topics,
        name,
        form="gotify_app",
    )
    return JSON(gm.application(token, secret, token.id))


@router.delete("/application/{app_id}")
async def delete_application(request: Request, app_id: str) -> Response:
    """Revokes the application's token; its messages stay in the topic's history."""
    svc = _services(request)
    caller = await _client(request)
    caller.principal.require_account()
    app = await _own_app(svc, caller.principal, _id(app_id))
    await svc.accounts.revoke_token(caller.principal, app.id)
    return _ok()


@router.get("/client")
async def list_clients(request: Request) -> JSON:
    svc = _services(request)
    caller = await _client(request)
    tokens = await _own_tokens(svc, caller.principal)
    own = caller.principal.token_id
    return JSON([gm.client(t, caller.secret, own) for t in tokens if gm.is_client(t)])


@router.post("/client")
async def create_client(request: Request) -> JSON:
    """A new client (how the Gotify app signs in): a token with scope ``subscribe``,
    in Gotify's client form (``C`` and 14 characters), shown in full this once."""
    svc = _services(request)
    caller = await _client(request)
    caller.principal.require_account()
    name = _name((await _fields(request))[0])
    secret, token = await svc.accounts.create_token(
        caller.principal,
        await _user_name(svc, caller.principal),
        ["subscribe"],
        None,
        name,
        form="gotify_client",
    )
    return JSON(gm.client(token, secret, token.id))


@router.delete("/client/{client_id}")
async def delete_client(request: Request, client_id: str) -> Response:
    svc = _services(request)
    caller = await _client(request)
    wanted = _id(client_id)
    if wanted != caller.principal.token_id:  # signing out (deleting itself) only narrows
        caller.principal.require_account()
    for token in await _own_tokens(svc, caller.principal):
        if token.id == wanted and gm.is_client(token):
            await svc.accounts.revoke_token(caller.principal, token.id)
            return _ok()
    raise NotFound(f"client with id {wanted} doesn't exist", field="id")


@router.get("/current/user")
async def current_user(request: Request) -> JSON:
    svc = _services(request)
    caller = await _client(request)
    user = await svc.store.get_user_by_id(caller.principal.user_id)
    if user is None:
        raise Unauthorized("the user no longer exists")
    return JSON({"id": user.id, "name": user.name, "admin": user.role == "admin"})


@router.get("/plugin")
async def list_plugins(request: Request) -> JSON:
    """Gotify's server plugins do not exist here: an empty list."""
    await _client(request)
    return JSON([])


#: Gotify endpoints notifyd does not offer, answered in Gotify's error shape
UNSUPPORTED = (
    (("PUT",), "/application/{app_id}", "applications are notifyd tokens, which cannot be changed; create a new one"),
    (("POST", "DELETE"), "/application/{app_id}/image", "application images are not supported"),
    (("PUT",), "/client/{client_id}", "clients are notifyd tokens, which cannot be changed; create a new one"),
    (("POST",), "/current/user/password", "set passwords with `notifyd users passwd` or PUT /v1/users/{name}/password"),
    (("GET", "POST"), "/user", "manage users with `notifyd users` or /v1/users"),
    (("GET", "POST", "DELETE"), "/user/{user_id}", "manage users with `notifyd users` or /v1/users"),
)  # fmt: skip


def _unsupported(description: str) -> Callable[[], Coroutine[Any, Any, Response]]:
    async def endpoint() -> Response:
        unsupported = status_error(501, f"not supported by notifyd: {description}")
        return render_gotify(unsupported).response()

    return endpoint


for _methods, _path, _why in UNSUPPORTED:
    router.add_api_route(_path, _unsupported(_why), methods=list(_methods))


# -- server ----------------------------------------------------------------------------------


@router.get("/health")
async def health(request: Request) -> JSON:
    try:
        await _services(request).store.last_event_id()
    except Exception:  # noqa: BLE001 - any failure means the database is not healthy
        log.exception("gotify /health: the database check failed")
        return JSON({"health": "orange", "database": "red"}, status_code=500)
    return JSON({"health": "green", "database": "green"})


@router.get("/version")
async def version(request: Request) -> JSON:
    return JSON(
        {
            "version": f"{GOTIFY_API_VERSION}+notifyd.{__version__}",
            "commit": f"notifyd-{__version__}",
            "buildDate": format_ts(_services(request).started_at),
        }
    )


# -- the stream ----------------------------------------------------------------------------
#
# A new connection's WebSocket upgrade to /stream is served on the raw transport by the
# connection front (serve_raw_stream); the ASGI route below serves one asked for on a
# reused keep-alive connection, through hypercorn.


def _stream_events(frames: list[Frame]) -> list[Any]:
    """The events among a batch of stream frames (read-state frames and keepalives
    have no Gotify form and are left out; the client's pings keep it alive)."""
    return [
        getattr(f, "event", None) or orjson.loads(f.payload)["event"]
        for f in frames
        if f.event_id is not None
    ]


class _RawGotifySink(RawSink):
    """Writes each event as a Gotify message in its own text frame, straight to the
    socket (the messages depend on the caller's applications: built per client)."""

    kind = "gotify"

    def __init__(self, stream: trio.abc.Stream, shaper: gm.Shaper) -> None:
        super().__init__(stream)
        self.shaper = shaper

    async def send(self, frames: list[Frame]) -> None:
        messages = await self.shaper.messages(_stream_events(frames))
        if messages:
            await self.write(b"".join(ws_frame(orjson.dumps(m)) for m in messages))

    async def finish(self, resync: str | None) -> None:
        if not self.broken:
            await self.write(
                ws_close(4000, "resync: reconnect") if resync
                else ws_close(1001, "server shutting down")
            )  # fmt: skip


def _head_connection(app: Any, head: RequestHead, via_socket: bool, address: str) -> HTTPConnection:
    """The raw head as the Starlette connection :func:`authenticate` reads."""
    scope = {
        "type": "websocket",
        "app": app,
        "path": head.path,
        "query_string": urlsplit(head.target).query.encode("latin-1"),
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in head.headers.items()],
        "client": None if via_socket else (address, 0),
        SOCKET_SCOPE_KEY: via_socket,
    }
    return HTTPConnection(scope)


async def serve_raw_stream(
    svc: Services,
    app: Any,
    stream: trio.abc.Stream,
    head: RequestHead,
    via_socket: bool,
    address: str,
) -> None:
    """Gotify's ``/stream`` on a new connection (the connection front's raw
    transport): every new message the caller may read, whatever way it arrived."""
    ws = WebSocketProtocol()
    try:
        problem = websocket_problem(head)
        if problem is not None:
            raise BadRequest(f"/stream is a WebSocket: {problem[1]}")
        caller = await authenticate(_head_connection(app, head, via_socket, address), "client")
        shaper = await _shaper(svc, caller.principal, cache=True)
        session = StreamSession(svc, caller.principal, None, None)  # 429 past max_streams
        try:
            handshake = ws.accept(head)
        except NotifydError:
            session.close()
            raise
    except NotifydError as exc:
        await refuse(stream, render_gotify(exc).raw())
        return
    sink = _RawGotifySink(stream, shaper)
    first = head.detach()
    try:
        await sink.write(handshake)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_websocket, stream, sink, ws, first, nursery.cancel_scope)
            await session.run(sink)
            nursery.cancel_scope.cancel(reason="stream ended")
    finally:
        session.close()


class _GotifySink:
    """:class:`_RawGotifySink` through hypercorn's ASGI WebSocket."""

    kind = "gotify"

    def __init__(self, ws: WebSocket, shaper: gm.Shaper) -> None:
        self.ws = ws
        self.shaper = shaper

    async def send(self, frames: list[Frame]) -> None:
        for msg in await self.shaper.messages(_stream_events(frames)):
            await self.ws.send_text(orjson.dumps(msg).decode())

    async def finish(self, resync: str | None) -> None:
        if resync:
            await self.ws.close(4000, "resync: reconnect")
        else:
            await self.ws.close(1001, "server shutting down")


@router.get("/stream")
async def stream_without_upgrade(request: Request) -> JSON:
    await _client(request)
    raise BadRequest("/stream is a WebSocket: connect with an Upgrade request")


@router.websocket("/stream")
async def stream(ws: WebSocket) -> None:
    """Gotify's stream on a reused keep-alive connection (see above)."""
    svc = _services(ws)
    try:
        caller = await authenticate(ws, "client")
        shaper = await _shaper(svc, caller.principal, cache=True)
        session = StreamSession(svc, caller.principal, None, None)  # 429 past max_streams
    except NotifydError as exc:
        await ws.send_denial_response(render_gotify(exc).response())
        return
    await ws.accept()
    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            try:
                while True:
                    message = await ws.receive()
                    if message["type"] == "websocket.disconnect":
                        break
            except (WebSocketDisconnect, RuntimeError):
                pass
            nursery.cancel_scope.cancel(reason="gotify client closed")

        nursery.start_soon(watch)
        await session.run(_GotifySink(ws, shaper))
        nursery.cancel_scope.cancel(reason="stream ended")
