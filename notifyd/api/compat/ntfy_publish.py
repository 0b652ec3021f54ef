"""Publishing the ntfy way: ``PUT``/``POST /<topic>``, ``/<topic>/<sequence id>`` and
``/`` with a JSON body.

:func:`publish` does the work for every way in: the FastAPI routes of
:mod:`.ntfy` and :func:`serve_asgi`, the bare-ASGI fast path that the publish fast
path (``api/fastpath.py``) hands these requests to, as it does with
``POST /v1/events`` — publishing is the hot request, and FastAPI's routing costs
more than the rest of it.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

import orjson

from ...core import attachments, inbox
from ...core.errors import NotifydError, PayloadTooLarge, QuotaExceeded
from ...core.models import BODY_MAX
from ...core.services import Services
from ...core.store import Attachment
from ..auth import SOCKET_SCOPE_KEY
from ..responses import carries_body, check_body_size, declared_length, render_ntfy
from .ntfy_auth import authenticate
from .ntfy_message import build_event, to_message
from .ntfy_params import (
    JSON_BODY,
    TOPIC,
    TOPIC_DISALLOWED,
    NtfyError,
    Params,
    address_of,
    bad,
    check_topic_name,
    from_notifyd,
)
from .ntfy_template import TEMPLATES, publish_templated

log = logging.getLogger("notifyd.ntfy")

#: request bodies read at most (a message is ≤ 4096 characters; JSON adds some)
BODY_LIMIT = 64 * 1024
#: a body up to this many bytes that is UTF-8 is a message; anything else a file
#: (ntfy's message size limit)
MESSAGE_PEEK = 4096
#: ntfy's error for a file over the size limit or the quota (server/errors.go)
ATTACHMENT_TOO_LARGE = (413, 41301, "attachment too large, or bandwidth limit reached")
ATTACHMENT_LINK = "https://ntfy.sh/docs/publish/#limitations"
_PUBLISH_PATH = re.compile(r"^/(?:([^/]+)(?:/([^/]+))?)?$")

#: JSON fields of ``POST /`` and the parameter each one stands for
JSON_FIELDS = {
    "title": "x-title", "priority": "x-priority", "tags": "x-tags", "click": "x-click",
    "icon": "x-icon", "actions": "x-actions", "attach": "x-attach", "filename": "x-filename",
    "markdown": "x-markdown", "delay": "x-delay", "timezone": "x-timezone", "email": "x-email",
    "call": "x-call", "sequence_id": "x-sequence-id", "cache": "x-cache",
    "firebase": "x-firebase", "unifiedpush": "x-unifiedpush",
}  # fmt: skip


def check_topic(name: str, reserved: frozenset[str]) -> str:
    check_topic_name(name)
    if name in reserved:
        raise bad(TOPIC_DISALLOWED, "invalid request: topic name is disallowed",
                  f"{name!r} is a name notifyd uses itself; pick another topic "
                  "(topics with '/' are reachable through /v1/events)")  # fmt: skip
    return name


def too_long(json_body: bool) -> NtfyError:
    if json_body:
        return NtfyError(413, 41303, "JSON body too large")
    return bad(40014, "invalid request: attachments not allowed",
               "the body is too long for a message, and this server takes no files "
               "(attachment_max_bytes = 0) or the body cannot be one (X-Attach, UnifiedPush)")  # fmt: skip


async def read_limited(
    chunks: AsyncIterator[bytes], headers: Mapping[str, str], json_body: bool, limit: int
) -> bytes:
    """A publish body, read under both limits (every ntfy door reads through here):
    ``limit`` (``max_request_bytes``) first (notifyd's one 413, :func:`~..responses.check_body_size`;
    the connection guard enforces it too as the body arrives), then ntfy's own
    :data:`BODY_LIMIT` (:func:`too_long`). A declared length over either is refused
    before any of the body is read."""
    declared = declared_length(headers.get("content-length"))
    check_body_size(declared, limit)
    if declared > BODY_LIMIT:
        raise too_long(json_body)
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > BODY_LIMIT:
            raise too_long(json_body)
        parts.append(chunk)
    return b"".join(parts)


def _from_json(body: bytes, headers: Mapping[str, str]) -> tuple[str, Params, bytes]:
    """``POST /``: the topic, the parameters (JSON fields first; ``null`` is absent),
    the message."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        raise bad(JSON_BODY, "invalid request: request body must be message JSON")
    topic = doc.get("topic")
    if not isinstance(topic, str) or not topic:
        raise bad(TOPIC, "invalid request: topic invalid", 'the JSON needs a "topic"')
    overrides: dict[str, str] = {}
    for key, param in JSON_FIELDS.items():
        value = doc.get(key)
        if value is None:
            continue
        if key == "tags" and isinstance(value, list):
            value = ",".join(str(t) for t in value)
        elif key == "actions" and isinstance(value, list):
            value = orjson.dumps(value).decode()
        elif isinstance(value, bool):
            value = "true" if value else "false"
        overrides[param] = str(value)
    message = doc.get("message")
    if message is not None and not isinstance(message, str):
        raise bad(JSON_BODY, "invalid request: request body must be message JSON",
                  '"message" must be a string')  # fmt: skip
    # the body was JSON: its Content-Type says nothing about the message's format
    rest = {k: v for k, v in headers.items() if k != "content-type"}
    return topic, Params(rest, {}, overrides), (message or "").encode()


async def publish(
    svc: Services,
    reserved: frozenset[str],
    *,
    method: str,
    topic: str | None,
    sequence_id: str | None,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    read_body: Callable[[bool], Awaitable[bytes]],
    via_socket: bool,
    address: str,
    chunks: Callable[[], AsyncIterator[bytes]] | None = None,
    base_url: str = "",
) -> dict[str, Any]:
    """Publish one ntfy message (``topic`` None: ``POST /`` with JSON); returns ntfy's
    message object. Raises :class:`NtfyError` (core errors in ntfy's shape).

    ``chunks``: the body as it arrives, for bodies that may be files (a
    ``Filename``, or a body that is not a short UTF-8 text) and ``?template=``
    payloads; without it, :func:`read_body` (ntfy's :data:`BODY_LIMIT`) reads them.
    ``base_url``: the server's address as the client sees it (attachment URLs)."""
    # Publishing changes state whatever the method: a session cookie needs the CSRF
    # header even on ntfy's GET /<topic>/publish, which a cross-site link or <img>
    # could otherwise fire with the user's cookie.
    principal = await authenticate(
        svc, via_socket=via_socket, method="POST", headers=headers, query=query,
        address=address,
    )  # fmt: skip
    base_url = svc.config.base_url or base_url
    upload: Attachment | None = None
    preview: str | None = None
    if topic is None:
        topic, params, body = _from_json(await read_body(True), headers)
        params.query = query
        check_topic(topic, reserved)
    else:
        params = Params(headers, query)
        check_topic(topic, reserved)
        template = params.get("x-template", "template", "tpl").lower()
        if template in TEMPLATES:  # a sender's own webhook JSON, mapped by a hook template
            if chunks is None:
                body = await read_body(False)
            else:
                body = await read_up_to(chunks(), headers, svc.config.max_request_bytes)
            return await publish_templated(svc, principal, topic, template, body, headers)
        if chunks is None:
            body = await read_body(False)
        else:
            body, upload = await _body_or_file(svc, principal, topic, params, headers, chunks())
            if upload is not None:
                preview = await _preview(svc, upload)
    template = params.get("x-template", "template", "tpl").lower()
    if template in TEMPLATES:  # POST / with JSON naming a template
        return await publish_templated(svc, principal, topic, template, body, headers)
    plan = build_event(
        params, body, topic, sequence_id=sequence_id,
        upload=None if upload is None else attachments.describe(upload), preview=preview,
    )  # fmt: skip
    if plan.dropped:
        log.info("ntfy publish to %s: left out %s", topic, "; ".join(plan.dropped))
    try:
        result = await inbox.publish(svc, principal, plan.event)
    except NotifydError as exc:
        raise from_notifyd(exc) from None
    return to_message(result.events[0], svc.config.retention_days, base_url)


async def read_up_to(chunks: AsyncIterator[bytes], headers: Mapping[str, str], limit: int) -> bytes:
    """A whole body of at most ``limit`` bytes (notifyd's 413 past it)."""
    check_body_size(declared_length(headers.get("content-length")), limit)
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        check_body_size(size, limit)
        parts.append(chunk)
    return b"".join(parts)


async def _body_or_file(
    svc: Services,
    principal: Any,
    topic: str,
    params: Params,
    headers: Mapping[str, str],
    chunks: AsyncIterator[bytes],
) -> tuple[bytes, Attachment | None]:
    """The message body, or the file the body is (stored as the caller's attachment):
    with a file name, or when the body is not UTF-8 text of at most
    :data:`MESSAGE_PEEK` bytes — as ntfy decides. UnifiedPush bodies and those of
    publishes attaching a URL are messages (ntfy's :data:`BODY_LIMIT`)."""
    declared = declared_length(headers.get("content-length"))
    filename = params.get("x-filename", "filename", "file", "f")
    if params.flag(False, "x-unifiedpush", "unifiedpush", "up") or params.get(
        "x-attach", "attach", "a"
    ):
        return await read_limited(chunks, headers, False, svc.config.max_request_bytes), None
    head: list[bytes] = []
    size, ended = 0, True
    if not filename:
        ended = False
        async for chunk in chunks:
            head.append(chunk)
            size += len(chunk)
            if size > MESSAGE_PEEK:
                break
        else:
            ended = True
        if ended and size <= MESSAGE_PEEK:
            text = b"".join(head)
            try:
                text.decode("utf-8")
            except UnicodeDecodeError:
                pass
            else:
                return text, None
    if svc.config.attachment_max_bytes <= 0:
        raise too_long(False)
    if not principal.can_write(topic):  # before taking the file: nothing to keep
        principal.require_write(topic)

    async def body() -> AsyncIterator[bytes]:
        for piece in head:
            yield piece
        if not ended or filename:
            async for chunk in chunks:
                yield chunk

    try:
        att = await attachments.receive(
            svc.store, svc.config, principal.user_id, body(), filename or None, time.time(),
            declared=declared,
        )  # fmt: skip
    except (PayloadTooLarge, QuotaExceeded) as exc:
        raise NtfyError(*ATTACHMENT_TOO_LARGE, exc.message, link=ATTACHMENT_LINK) from None
    except NotifydError as exc:
        raise from_notifyd(exc) from None
    return b"", att


async def _preview(svc: Services, att: Attachment) -> str | None:
    """A text file's beginning, as the message of a publish that gave none (Apprise
    sends messages over 8,000 bytes as a text file): at most ``BODY_MAX`` characters,
    an ellipsis when there is more."""
    if not att.type.startswith("text/") or att.size == 0:
        return None
    head = await svc.store.read_attachment(att.id, 0, BODY_MAX * 4)
    text = head.decode("utf-8", "ignore").strip()
    if len(text) > BODY_MAX or att.size > len(head):
        text = text[: BODY_MAX - 1].rstrip() + "…"
    return text or None


# -- the bare-ASGI fast path -------------------------------------------------------------


def fast_path_target(scope: dict, reserved: frozenset[str]) -> tuple[str | None, str | None] | None:
    """``(topic, sequence id)`` if the request is an ntfy publish this module serves
    (``topic`` None for ``POST /``), else None (FastAPI answers it)."""
    if scope["method"] not in ("POST", "PUT"):
        return None
    m = _PUBLISH_PATH.match(scope["path"])
    if m is None:
        return None
    topic, seq = m.group(1), m.group(2)
    if topic is not None and (topic in reserved or topic == "v1"):
        return None  # notifyd's own paths (/v1/…, Gotify's /message, …)
    return topic, seq


async def serve_asgi(
    svc: Services, reserved: frozenset[str], scope: dict, receive: Any, send: Any,
    target: tuple[str | None, str | None],
) -> None:  # fmt: skip
    headers: dict[str, str] = {}
    for name, value in scope["headers"]:
        headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
    body_read = False

    async def chunks() -> AsyncIterator[bytes]:
        while True:
            # over max_request_bytes, receive() raises BodyTooLarge (api/server.py)
            message = await receive()
            if message["type"] == "http.disconnect":
                raise NtfyError(400, 40000, "invalid request", "the client went away")
            yield message.get("body", b"")
            if not message.get("more_body", False):
                return

    async def read_body(json_body: bool) -> bytes:
        nonlocal body_read
        body = await read_limited(chunks(), headers, json_body, svc.config.max_request_bytes)
        body_read = True
        return body

    async def body_chunks() -> AsyncIterator[bytes]:
        nonlocal body_read
        async for chunk in chunks():
            yield chunk
        body_read = True

    client = scope.get("client")
    try:
        msg = await publish(
            svc, reserved, method=scope["method"], topic=target[0],
            sequence_id=target[1], headers=headers, query=query, read_body=read_body,
            via_socket=bool(scope.get(SOCKET_SCOPE_KEY)),
            address=client[0] if client else "local", chunks=body_chunks,
            base_url=_base_url(scope, headers),
        )  # fmt: skip
    except (NtfyError, NotifydError) as err:
        # an unread body would garble the next request: close the connection then
        await render_ntfy(err, close=carries_body(headers) and not body_read).send(send)
        return
    body = orjson.dumps(msg) + b"\n"
    extra = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": extra})
    await send({"type": "http.response.body", "body": body})


def _base_url(scope: dict, headers: Mapping[str, str]) -> str:
    """The server's address as this client reached it (when ``base_url`` is unset)."""
    return address_of(headers, scope.get("scheme", "http"))
