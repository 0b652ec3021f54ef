"""``apprise``: the Apprise API's ``/notify`` request (JSON, or the same fields
form-encoded): ``title``, ``body``, ``type`` (info, success, warning, failure →
priority and a tag), ``tag`` (→ tags), ``format`` (text, markdown; html is turned
into text)."""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from typing import Any

from ..models import BODY_MAX
from .base import PayloadError, Result, Template, event, get_text, obj, tags

#: Apprise's notification types → priority
TYPES = {"info": None, "success": 2, "warning": 4, "failure": 5}
_BLOCK_TAGS = re.compile(r"<\s*(?:br|/p|/div|/li|/h[1-6]|/tr)\b[^<>]{0,200}>", re.IGNORECASE)
_TAG = re.compile(r"<[^<>]{0,2000}>")
_SPLIT = re.compile(r"[,\s]+")


def html_to_text(value: str) -> str:
    """Markup removed, line breaks kept, entities decoded (linear: no nesting)."""
    value = value[: 4 * BODY_MAX]
    value = _BLOCK_TAGS.sub("\n", value)
    value = _TAG.sub("", value)
    return html.unescape(value)


def render(payload: Any, headers: Mapping[str, str], options: Mapping[str, Any]) -> Result:
    p = obj(payload, "payload")
    title, body = get_text(p, "title", ""), get_text(p, "body", "")
    if not body and not title:
        raise PayloadError("an Apprise notification needs a 'body'", "body")
    kind = (get_text(p, "type", "") or "info").lower()
    if kind not in TYPES:
        raise PayloadError("type is one of info, success, warning, failure", "type")
    fmt = (get_text(p, "format", "") or "text").lower()
    if fmt not in ("text", "markdown", "html"):
        raise PayloadError("format is one of text, markdown, html", "format")
    if fmt == "html":
        body, title = html_to_text(body), html_to_text(title)
    raw_tags = p.get("tag", p.get("tags"))
    if isinstance(raw_tags, list):
        names = [t for t in raw_tags if isinstance(t, str)]
    else:
        names = _SPLIT.split(get_text(p, "tag", "") if "tag" in p else get_text(p, "tags", ""))
    return Result([
        event(
            title=title, body=body, fmt="markdown" if fmt == "markdown" else "text",
            priority=TYPES[kind], tags=tags(kind if kind != "info" else None, *names[:15]),
        )
    ])  # fmt: skip


def sample() -> tuple[Any, dict[str, str]]:
    return {"title": "Backup finished", "body": "**nas**: 120 GB in 14 minutes",
            "type": "success", "format": "markdown", "tag": "backup"}, {}  # fmt: skip


TEMPLATE = Template("apprise", render, sample, form_fields=True)
