"""The ntfy protocol over notifyd's core, so that ntfy's phone apps, CLI, scripts and
libraries work unchanged.

Publish: ``PUT``/``POST /<topic>`` (and ``/<topic>/<sequence id>``), ``POST /`` with
a JSON body, ``GET /<topic>/publish|send|trigger``; the answer is ntfy's message
object. Subscribe: ``GET /<topics>/json|sse|raw|ws`` (:mod:`.ntfy_stream`),
``GET /<topics>/auth``. Updates by sequence id: ``PUT|GET /<topic>/<id>/clear``
(marks read), ``DELETE /<topic>/<id>`` or ``GET /<topic>/<id>/delete`` (cancels a
scheduled message, archives delivered ones). ``GET /<topic>?up=1`` is UnifiedPush
discovery.

Everything maps onto ordinary notifyd events, accounts, ACLs and the inbox
(:mod:`.ntfy_message`, :mod:`.ntfy_auth`, :mod:`.ntfy_publish`; publishing is
served on the publish fast path, streams on the raw socket); errors have ntfy's shape
``{"code", "http", "error"}``. This router is included last: its ``/{topic}``
routes match any top-level name, so notifyd's own names (``RESERVED`` and every
literal first path segment of the app's routes) are refused as topics, and
anything under ``/v1`` keeps notifyd's 404.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import orjson
from fastapi import APIRouter, Request, WebSocket
from fastapi.routing import APIRoute
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import HTTPConnection
from starlette.responses import RedirectResponse, Response

from ...core import inbox
from ...core.errors import NotFound, NotifydError
from ...core.models import ascii_int
from ...core.services import Services
from ..auth import SOCKET_SCOPE_KEY
from ..responses import carries_body, render_notifyd, render_ntfy
from . import RESERVED
from .ntfy_auth import authenticate
from .ntfy_params import (
    WS_UPGRADE,
    NtfyError,
    Params,
    address_of,
    bad,
)
from .ntfy_publish import check_topic, read_limited
from .ntfy_publish import publish as publish_message
from .ntfy_stream import (
    HTTPStreamResponse,
    Subscription,
    open_subscription,
    random_id,
    serve_websocket,
)

log = logging.getLogger("notifyd.ntfy")

_API_PREFIX = "v1"
#: ntfy's topic names (server.go ``topicRegex``), for the topic page
NTFY_TOPIC_RE = re.compile(r"^[-_A-Za-z0-9]{1,64}$")


class _NotOurs(Exception):
    """The path is notifyd's (``/v1/…``), not ntfy's: answer notifyd's 404."""


def _route_paths(routes: Any, prefix: str = "") -> Iterator[str]:
    for route in routes:
        path = getattr(route, "path", None)
        if isinstance(path, str) and path:
            yield prefix + path
        inner = getattr(route, "original_router", None)  # FastAPI's included routers
        if inner is not None:
            context = getattr(route, "include_context", None)
            yield from _route_paths(inner.routes, prefix + (getattr(context, "prefix", "") or ""))
        elif getattr(route, "routes", None) and isinstance(path, str):  # mounts
            yield from _route_paths(route.routes, prefix + path)


def reserved_names(app: Any) -> frozenset[str]:
    """Top-level names that are not topics: :data:`RESERVED` and the first path
    segment of every route of the app with a literal one (computed once)."""
    cached = getattr(app.state, "ntfy_reserved", None)
    if cached is None:
        names = set(RESERVED)
        for path in _route_paths(app.routes):
            first = path.lstrip("/").split("/", 1)[0]
            if first and "{" not in first:
                names.add(first)
        cached = app.state.ntfy_reserved = frozenset(names)
    return cached


def _ntfy_response(err: NtfyError | NotifydError, conn: HTTPConnection | None = None) -> Response:
    # an answer to a request with a body closes the connection: the body may be unread
    return render_ntfy(err, close=conn is not None and carries_body(conn.headers)).response()


def _not_ours(conn: HTTPConnection) -> Response:
    """notifyd's 404 for a path that is notifyd's, not ntfy's."""
    scope = conn.scope
    where = f"{scope.get('method', 'GET')} {scope.get('path', '/')}"
    return render_notifyd(NotFound(f"no such endpoint: {where}")).response()


class NtfyRoute(APIRoute):
    """Answers errors in ntfy's shape (notifyd's 404 for paths under ``/v1``)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except _NotOurs:
                return _not_ours(request)
            except (NtfyError, NotifydError) as err:
                return _ntfy_response(err, request)

        return route


class _TopicConvertor(Convertor[str]):
    """A path segment that is not ``v1``: routes never match notifyd's API paths, so
    those keep their 404 and 405 answers."""

    regex = r"(?!v1(?:/|$))[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("ntfy", _TopicConvertor())
router = APIRouter(include_in_schema=False, route_class=NtfyRoute)


# -- helpers -------------------------------------------------------------------------


def _services(conn: HTTPConnection) -> Services:
    return conn.app.state.services


def _topic(conn: HTTPConnection, name: str) -> str:
    if name == _API_PREFIX:
        raise _NotOurs
    return check_topic(name, reserved_names(conn.app))


def _params(conn: HTTPConnection, overrides: dict[str, str] | None = None) -> Params:
    return Params(conn.headers, dict(conn.query_params), overrides)


def _address(conn: HTTPConnection) -> str:
    return conn.client.host if conn.client else "local"


async def _caller(conn: HTTPConnection, method: str) -> Any:
    return await authenticate(
        _services(conn), via_socket=bool(conn.scope.get(SOCKET_SCOPE_KEY)),
        method=method, headers=conn.headers, query=dict(conn.query_params),
        address=_address(conn),
    )  # fmt: skip


def _json(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body) + b"\n", media_type="application/json")


async def _publish(request: Request, topic: str | None, sequence_id: str | None = None) -> Response:
    if topic == _API_PREFIX:
        raise _NotOurs

    async def read_body(json_body: bool) -> bytes:
        limit = _services(request).config.max_request_bytes
        return await read_limited(request.stream(), request.headers, json_body, limit)

    message = await publish_message(
        _services(request), reserved_names(request.app),
        method=request.method, topic=topic, sequence_id=sequence_id, headers=request.headers,
        query=dict(request.query_params), read_body=read_body,
        via_socket=bool(request.scope.get(SOCKET_SCOPE_KEY)), address=_address(request),
        chunks=request.stream, base_url=address_of(request.headers, request.url.scheme),
    )  # fmt: skip
    return _json(message)


# -- publishing (served by ntfy_publish.serve_asgi on the fast path; these routes --------
# -- answer when the app runs without it) ----------------------------------------------


@router.api_route("/", methods=["POST", "PUT"])
async def publish_json(request: Request) -> Response:
    """``POST /`` with ``{"topic", "message", "title", …}``: JSON fields win over
    headers; ``null`` means absent."""
    return await _publish(request, None)


@router.api_route("/{topic:ntfy}", methods=["POST", "PUT"])
async def publish(request: Request, topic: str) -> Response:
    return await _publish(request, topic)


@router.api_route("/{topic:ntfy}/{sequence_id}", methods=["POST", "PUT"])
async def publish_sequence(request: Request, topic: str, sequence_id: str) -> Response:
    """Publish with a sequence id in the path: it updates (replaces) the earlier
    message with the same id, as ``X-Sequence-ID`` does."""
    return await _publish(request, topic, sequence_id)


@router.get("/{topic:ntfy}/publish")
@router.get("/{topic:ntfy}/send")
@router.get("/{topic:ntfy}/trigger")
async def publish_get(request: Request, topic: str) -> Response:
    """ntfy's webhooks: every parameter in the query, the message ``triggered``
    unless ``message=`` says otherwise."""
    return await _publish(request, topic)


# -- subscribing ---------------------------------------------------------------------


async def _subscription(conn: HTTPConnection, topics: str, fmt: str) -> Subscription:
    if topics.split(",", 1)[0] == _API_PREFIX:
        raise _NotOurs
    return await open_subscription(
        _services(conn), fmt=fmt, topics_str=topics,
        reserved=reserved_names(conn.app), via_socket=bool(conn.scope.get(SOCKET_SCOPE_KEY)),
        headers=conn.headers, query=dict(conn.query_params), address=_address(conn),
    )  # fmt: skip


@router.get("/{topics:ntfy}/json")
async def subscribe_json(request: Request, topics: str) -> Response:
    return HTTPStreamResponse(_services(request), await _subscription(request, topics, "json"))


@router.get("/{topics:ntfy}/sse")
async def subscribe_sse(request: Request, topics: str) -> Response:
    return HTTPStreamResponse(_services(request), await _subscription(request, topics, "sse"))


@router.get("/{topics:ntfy}/raw")
async def subscribe_raw(request: Request, topics: str) -> Response:
    return HTTPStreamResponse(_services(request), await _subscription(request, topics, "raw"))


@router.get("/{topics:ntfy}/ws")
async def subscribe_ws_without_upgrade(request: Request, topics: str) -> Response:
    raise bad(WS_UPGRADE, "invalid request: client not using the websocket protocol")


@router.websocket("/{topics:ntfy}/ws")
async def subscribe_ws(ws: WebSocket, topics: str) -> None:
    try:
        sub = await _subscription(ws, topics, "ws")
    except _NotOurs:
        await ws.send_denial_response(_not_ours(ws))
        return
    except NtfyError as err:
        await ws.send_denial_response(_ntfy_response(err))
        return
    await serve_websocket(ws, _services(ws), sub)


@router.get("/{topics:ntfy}/auth")
async def topic_auth(request: Request, topics: str) -> Response:
    """``{"success": true}`` when the caller may read every topic; else 401/403."""
    await _subscription(request, topics, "json")
    return _json({"success": True})


# -- clearing and deleting by sequence id -----------------------------------------------


async def _sequence_events(request: Request, topic: str, sequence_id: str) -> list[int]:
    """Ids of the caller's events of ``topic`` in that sequence: those with the
    sequence id as collapse key, and the event whose id it is."""
    svc = _services(request)
    # clearing changes read state, also on GET: a cookie needs the CSRF header
    principal = await _caller(request, "POST")
    principal.require_read(topic)
    ids: list[int] = []
    before: int | None = None
    while True:  # history is newest first, in pages
        q = inbox.history_query(principal, topic=topic, limit=500, before=before,
                                archived="include")  # fmt: skip
        events, nxt = await inbox.history(svc, q)
        ids.extend(e["id"] for e in events if e.get("collapse_key") == sequence_id)
        if nxt is None or len(ids) >= 500:
            break
        before = nxt
    event_id = ascii_int(sequence_id, 10**18 - 1)
    if event_id is not None:
        ids.append(event_id)
    request.state.ntfy_principal = principal
    return ids


def _sequence_event(topic: str, sequence_id: str, event: str) -> Response:
    return _json({"id": random_id(), "time": int(time.time()), "event": event, "topic": topic,
                  "sequence_id": sequence_id})  # fmt: skip


@router.api_route("/{topic:ntfy}/{sequence_id}/clear", methods=["PUT", "GET"])
@router.api_route("/{topic:ntfy}/{sequence_id}/read", methods=["PUT", "GET"])
async def clear(request: Request, topic: str, sequence_id: str) -> Response:
    """ntfy's "clear" (mark as read and dismiss): the sequence's events become read
    for the caller, on all of their devices (notifyd's read state)."""
    name = _topic(request, topic)
    ids = await _sequence_events(request, name, sequence_id)
    if ids:
        await inbox.set_state(_services(request), request.state.ntfy_principal, ids, "read")
    return _sequence_event(name, sequence_id, "message_clear")


@router.delete("/{topic:ntfy}/{sequence_id}")
@router.get("/{topic:ntfy}/{sequence_id}/delete")
async def delete(request: Request, topic: str, sequence_id: str) -> Response:
    """ntfy's "delete": a scheduled message of the sequence is cancelled (it needs the
    right to publish to the topic); delivered ones are archived for the caller."""
    svc = _services(request)
    name = _topic(request, topic)
    ids = await _sequence_events(request, name, sequence_id)
    principal = request.state.ntfy_principal
    if principal.can_write(name):
        await svc.store.cancel_scheduled(name, sequence_id)
    if ids:
        await inbox.set_state(svc, principal, ids, "archive")
    return _sequence_event(name, sequence_id, "message_delete")


@router.get("/{topic:ntfy}/{rest}")
async def not_a_stream(request: Request, topic: str, rest: str) -> Response:
    """Other two-segment GETs are not ntfy's: notifyd's 404 (not a 405 because
    ``/{topic}/{sequence_id}`` takes other methods)."""
    raise _NotOurs


# -- the topic page ------------------------------------------------------------------


@router.get("/{topic:ntfy}")
async def topic_page(request: Request, topic: str) -> Response:
    """UnifiedPush discovery with ``?up=1`` (as ntfy answers it, without
    credentials: it tells nothing); otherwise the notification center."""
    name = topic
    # ntfy's own topic names only (no '.'): /config.py or /robots.txt stay 404s
    if name in reserved_names(request.app) or not NTFY_TOPIC_RE.fullmatch(name):
        raise _NotOurs
    if _params(request).flag(False, "x-unifiedpush", "unifiedpush", "up"):
        return _json({"unifiedpush": {"version": 1}})
    return RedirectResponse("/", status_code=303)
