"""ntfy messages ⇄ notifyd events.

:func:`build_event` turns an ntfy publish (parameters and body) into the fields of
an ordinary notifyd event, which the core validates and stores like any other;
:func:`to_message` shows a stored event as ntfy's message object, for publish
answers and for subscribers — whichever way the event was published.

Mapping (see ``docs/compat.md``): message → ``body``, title, priority, tags,
click, icon, ``attach`` → ``image`` for image URLs (other files → a "view"
action), actions → ``{label, url, method?}``, markdown → ``format``, delay →
``deliver_at``, sequence id → ``collapse_key``. UnifiedPush messages get the
category ``unifiedpush``; a binary one is stored base64-encoded with the tag
``base64`` and shown to ntfy subscribers with ``encoding: "base64"``.
"""

from __future__ import annotations

import base64
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from ...core.attachments import extension
from ...core.models import BODY_MAX, MAX_ACTIONS, TITLE_MAX
from ...core.store import Event
from .ntfy_params import (
    ATTACH_URL,
    ATTACHMENTS,
    DELAY_SMALL,
    ICON_URL,
    INVALID,
    SEQUENCE_RE,
    Params,
    bad,
    map_actions,
    map_tags,
    parse_actions,
    parse_priority,
    split_tags,
)
from .ntfy_time import from_unix, parse_delay, to_unix

log = logging.getLogger("notifyd.ntfy")

#: ntfy's message when a publish has none (server.go ``emptyMessageBody``)
EMPTY_MESSAGE = "triggered"
#: category of messages published with ``up=1`` (UnifiedPush)
UP_CATEGORY = "unifiedpush"
#: tag marking a UnifiedPush body stored base64-encoded (it was not UTF-8)
BASE64_TAG = "base64"
#: ntfy's shortest delay (``message-delay-limit`` aside, which notifyd does not cap)
MIN_DELAY = 10.0
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".svg", ".avif")
_HTTP_URL = re.compile(r"(?i)^https?://\S{3,}$")


@dataclass
class Publish:
    """An ntfy publish, as notifyd event fields."""

    event: dict[str, Any]
    #: what could not be kept, and why (logged; documented in docs/compat.md)
    dropped: list[str] = field(default_factory=list)


def _url(value: str, code: int, what: str) -> str:
    if not _HTTP_URL.match(value) or len(value) > 2048:
        raise bad(code, f"invalid request: {what} URL is invalid",
                  "use an http:// or https:// URL of at most 2048 characters")  # fmt: skip
    return value


def attachment_name(url: str) -> str:
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    return name if name not in ("", ".", "/") else "attachment"


def build_event(
    params: Params,
    body: bytes,
    topic: str,
    *,
    sequence_id: str | None = None,
    now: float | None = None,
    upload: Mapping[str, Any] | None = None,
    preview: str | None = None,
) -> Publish:
    """Read an ntfy publish the way ntfy's server does (parameters, then the body:
    UnifiedPush auto-detection, text, or an attachment). ``upload``: the file the
    body was stored as (``{"id", "name", …}``, see :mod:`notifyd.core.attachments`),
    whose ``preview`` text (a text file's beginning) is the message when none was
    given. Raises :class:`NtfyError`."""
    now = time.time() if now is None else now
    dropped: list[str] = []
    ev: dict[str, Any] = {"topic": topic}
    up = params.flag(False, "x-unifiedpush", "unifiedpush", "up")

    title = params.get("x-title", "title", "t")
    if title:
        ev["title"] = title if len(title) <= TITLE_MAX else title[: TITLE_MAX - 1] + "…"
    click = params.get("x-click", "click")
    if click:
        if _HTTP_URL.match(click) and len(click) <= 2048:
            ev["click"] = click
        else:
            dropped.append(f"click {click[:60]!r}: only http(s) URLs are kept")
    icon = params.get("x-icon", "icon")
    if icon:
        ev["icon"] = _url(icon, ICON_URL, "icon")
    attach = params.get("x-attach", "attach", "a")
    filename = params.get("x-filename", "filename", "file", "f")
    if attach:
        _url(attach, ATTACH_URL, "attachment")
    elif filename and not up and upload is None:
        raise bad(ATTACHMENTS, "invalid request: attachments not allowed",
                  "send the file as the body of PUT /<topic> with a Filename header, "
                  "or attach one by URL with X-Attach")  # fmt: skip
    for ignored in (("x-email", "x-e-mail", "email", "e-mail", "mail", "e"), ("x-call", "call"),
                    ("x-template", "template", "tpl")):  # fmt: skip
        value = params.get(*ignored)
        if value:
            dropped.append(f"{ignored[0]}: not supported (notifyd delivers to your channels)")

    priority = parse_priority(params.get("x-priority", "priority", "prio", "p"))
    if priority is not None:
        ev["priority"] = priority
    tags = map_tags(split_tags(params.get("x-tags", "tags", "tag", "ta")))

    delay = params.get("x-delay", "delay", "x-at", "at", "x-in", "in")
    if delay:
        at = parse_delay(delay, params.get("x-timezone", "timezone"), now)
        if at < now + MIN_DELAY:
            raise bad(DELAY_SMALL, "invalid delay parameter: too small, please refer to the docs",
                      f"deliver at least {MIN_DELAY:.0f} seconds from now")  # fmt: skip
        ev["deliver_at"] = from_unix(at)

    actions: list[dict[str, Any]] = []
    raw_actions = params.get("x-actions", "actions", "action")
    if raw_actions:
        actions, lost = map_actions(parse_actions(raw_actions))
        dropped.extend(lost)

    markdown = params.flag(False, "x-markdown", "markdown", "md")
    content_type = params.headers.get("content-type", "").split(";")[0].strip().lower()
    if markdown or content_type == "text/markdown":
        ev["format"] = "markdown"

    seq = sequence_id or params.get("x-sequence-id", "sequence-id", "sid")
    if seq:
        if not SEQUENCE_RE.fullmatch(seq):
            raise bad(INVALID, "invalid request: sequence ID invalid",
                      "use 1–64 characters of A–Z a–z 0–9 _ -")  # fmt: skip
        ev["collapse_key"] = seq

    message = params.get("x-message", "message", "m").replace("\\n", "\n")
    if upload is not None:
        ev["attachment"] = {"id": upload["id"]}
        if not message:
            message = preview or f"You received a file: {upload['name']}"
        body = b""
    if up:
        ev["category"] = UP_CATEGORY
        try:
            text = body.decode("utf-8")
            if text:
                message = text  # not trimmed: the app gets exactly what was sent
        except UnicodeDecodeError:
            message = base64.b64encode(body).decode()
            tags = [*tags, BASE64_TAG] if BASE64_TAG not in tags else tags
        if len(message) > BODY_MAX and BASE64_TAG in tags:
            raise bad(ATTACHMENTS, "invalid request: attachments not allowed",
                      f"binary UnifiedPush messages are kept up to {BODY_MAX * 3 // 4} "
                      "bytes (base64-encoded in the event body)")  # fmt: skip
    else:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise bad(
                ATTACHMENTS,
                "invalid request: attachments not allowed",
                "the body is not UTF-8 text: send files as the body of PUT /<topic>",
            ) from None
        text = text.strip()
        if text:
            message = text
    if len(message) > BODY_MAX:
        raise bad(ATTACHMENTS, "invalid request: attachments not allowed",
                  f"the message is longer than {BODY_MAX} characters (a message that comes "
                  "with X-Attach or as UnifiedPush cannot become a file)")  # fmt: skip
    if attach:
        name = filename or attachment_name(attach)
        ev["attachment"] = {"url": attach, "name": name}
        if not message:
            message = f"You received a file: {name}"
        if name.lower().endswith(IMAGE_EXTENSIONS) or attachment_name(attach).lower().endswith(
            IMAGE_EXTENSIONS
        ):
            ev["image"] = attach
        elif len(actions) < MAX_ACTIONS:
            actions.append({"label": f"Open {name}"[:40], "url": attach})
        else:
            dropped.append(f"attachment {name!r}: not an image, and no room for a button")
    ev["body"] = message or EMPTY_MESSAGE
    if tags:
        ev["tags"] = tags
    if actions:
        ev["actions"] = actions
    return Publish(ev, dropped)


def attachment_object(att: Mapping[str, Any], base_url: str = "") -> dict[str, Any]:
    """An event's ``attachment`` as ntfy's: ``{name, type?, size?, expires?, url}``; an
    uploaded file's url is ntfy's ``<base_url>/file/<id>.<ext>``."""
    out: dict[str, Any] = {"name": att.get("name") or "attachment"}
    if att.get("type"):
        out["type"] = att["type"]
    if att.get("size") is not None:
        out["size"] = att["size"]
    if att.get("expires_at"):
        out["expires"] = to_unix(att["expires_at"])
    if att.get("id"):
        ext = extension(att.get("type") or "", out["name"])
        out["url"] = f"{base_url.rstrip('/')}/file/{att['id']}.{ext}"
    else:
        out["url"] = att.get("url") or ""
    return out


def to_message(ev: Event, retention_days: float, base_url: str = "") -> dict[str, Any]:
    """A stored (or scheduled) event as ntfy's message object; ``base_url``: what an
    uploaded attachment's URL starts with (the server's address as the client sees it)."""
    if ev.get("id") is None:  # scheduled: it gets its id when it is released
        mid = f"s{ev.get('scheduled_id')}"
        when = to_unix(ev["deliver_at"])
    else:
        mid = str(ev["id"])
        when = to_unix(ev["created_at"])
    expires = (
        to_unix(ev["expires_at"]) if ev.get("expires_at") else when + int(retention_days * 86400)
    )
    msg: dict[str, Any] = {
        "id": mid, "time": when, "expires": expires, "event": "message", "topic": ev["topic"],
    }  # fmt: skip
    title, body = ev.get("title") or "", ev.get("body") or ""
    if title and body:
        msg["title"] = title
    msg["message"] = body or title  # ntfy clients expect a message
    if ev.get("priority", 3) != 3:
        msg["priority"] = ev["priority"]
    tags = list(ev.get("tags") or ())
    if ev.get("category") == UP_CATEGORY and BASE64_TAG in tags:
        tags.remove(BASE64_TAG)
        msg["encoding"] = "base64"
    if tags:
        msg["tags"] = tags
    if ev.get("click"):
        msg["click"] = ev["click"]
    if ev.get("icon"):
        msg["icon"] = ev["icon"]
    if ev.get("actions"):
        msg["actions"] = [
            {"id": f"{mid}-{n}", "action": "http" if a.get("method") else "view",
             "label": a["label"], "url": a["url"], "clear": False,
             **({"method": a["method"]} if a.get("method") else {})}
            for n, a in enumerate(ev["actions"])
        ]  # fmt: skip
    if ev.get("attachment"):
        msg["attachment"] = attachment_object(ev["attachment"], base_url)
    elif ev.get("image"):
        msg["attachment"] = {"name": attachment_name(ev["image"]), "url": ev["image"]}
    if ev.get("format") == "markdown":
        msg["content_type"] = "text/markdown"
    if ev.get("collapse_key"):
        msg["sequence_id"] = ev["collapse_key"]
    return msg
