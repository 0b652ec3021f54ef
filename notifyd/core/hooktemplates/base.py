"""What every hook template shares: reading a sender's JSON defensively and building
event dicts shaped like :class:`notifyd.core.models.EventIn` (without ``topic``,
which :mod:`notifyd.core.hooks` fills in).

A template never trusts the payload's types: a field of the wrong type raises
:class:`PayloadError` naming it (answered 422), text is cut to the event's limits,
and a URL that is not an absolute http(s) URL is left out rather than refusing the
whole notification.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..models import BODY_MAX, COLLAPSE_RE, MAX_ACTIONS, MAX_TAGS, SLUG_RE, TITLE_MAX, URL_MAX

#: the most commit lines, alerts' labels and similar list items written into a body
LIST_ITEMS = 10
ELLIPSIS = "…"


class PayloadError(ValueError):
    """The payload does not have the shape the template reads; ``field`` names the
    payload's field (``alerts[2].labels``)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


@dataclass
class Result:
    """What a payload maps to: events (possibly none), and when none, why."""

    events: list[dict[str, Any]] = field(default_factory=list)
    #: e.g. "ping": the request was understood and deliberately publishes nothing
    ignored: str | None = None


@dataclass(frozen=True)
class Template:
    """A built-in template: ``render(payload, headers, options)`` (header names in
    lower case; ``options`` the hook's) and a sample request for ``test``."""

    name: str
    render: Callable[[Any, Mapping[str, str], Mapping[str, Any]], Result]
    sample: Callable[[], tuple[Any, dict[str, str]]]
    #: whether a form-encoded body's ``payload`` field holds the JSON (GitHub, Gitea, Slack)
    form_payload: bool = False
    #: whether a form-encoded body's fields are the payload itself (Apprise API)
    form_fields: bool = False


# -- reading ------------------------------------------------------------------------------


def obj(value: Any, where: str) -> dict[str, Any]:
    """``value`` as an object: None and absent are empty; anything else is an error."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PayloadError(f"expected an object, got {kind(value)}", where)
    return value


def lst(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise PayloadError(f"expected a list, got {kind(value)}", where)
    return value


def text(value: Any, where: str) -> str:
    """A string field; numbers are written out, None is empty, the rest is an error."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    raise PayloadError(f"expected a string, got {kind(value)}", where)


def kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number"}.get(type(value), "null")  # fmt: skip


def get_text(data: Mapping[str, Any], key: str, where: str) -> str:
    return text(data.get(key), f"{where}.{key}" if where else key).strip()


# -- writing ------------------------------------------------------------------------------


def clip(value: str, limit: int) -> str:
    """``value`` cut to ``limit`` characters, the cut marked with an ellipsis."""
    if len(value) <= limit:
        return value
    return value[: limit - 1].rstrip() + ELLIPSIS


def first_line(value: str) -> str:
    return value.strip().split("\n", 1)[0].strip()


def url(value: Any) -> str | None:
    """An absolute http(s) URL without whitespace, or None."""
    if not isinstance(value, str):
        return None
    link: str = value.strip()
    lower = link[:8].lower()
    if not (lower.startswith("https://") or lower.startswith("http://")):
        return None
    if len(link) < 10 or len(link) > URL_MAX or any(c.isspace() for c in link):
        return None
    return link


def slug(value: Any) -> str | None:
    """A tag or category from free text: lower case ASCII, other characters turned
    into '-', at most 32 characters; None when nothing is left."""
    if not isinstance(value, str | int) or isinstance(value, bool):
        return None
    raw = unicodedata.normalize("NFKD", str(value)[:200]).encode("ascii", "ignore").decode()
    out: list[str] = []
    for ch in raw.lower():
        if ch.isalnum() or ch in "_-":
            out.append(ch)
        elif out and out[-1] != "-":
            out.append("-")
    result = "".join(out).strip("-_")[:32].strip("-_")
    return result if result and SLUG_RE.fullmatch(result) else None


def tags(*values: Any) -> list[str]:
    """Slugs of ``values``, each once, at most MAX_TAGS."""
    out: list[str] = []
    for value in values:
        tag = slug(value)
        if tag is not None and tag not in out:
            out.append(tag)
    return out[:MAX_TAGS]


def collapse_key(prefix: str, raw: str) -> str:
    """``prefix`` + ``raw`` when that is a valid collapse key, else ``prefix`` + a
    hash of ``raw`` (the same raw value always gives the same key)."""
    key = prefix + raw
    if COLLAPSE_RE.fullmatch(key):
        return key
    return prefix + hashlib.sha256(raw.encode("utf-8", "replace")).hexdigest()[:40]


def action(label: str, target: Any) -> dict[str, str] | None:
    link = url(target)
    return None if link is None else {"label": label[:40], "url": link}


def event(
    *,
    title: str = "",
    body: str = "",
    fmt: str = "text",
    priority: int | None = None,
    tags: list[str] | None = None,
    click: Any = None,
    icon: Any = None,
    image: Any = None,
    actions: list[dict[str, str] | None] | None = None,
    collapse: str | None = None,
    category: str | None = None,
) -> dict[str, Any]:
    """An event dict with only the fields that have a value, text cut to size."""
    ev: dict[str, Any] = {}
    title, body = clip(title.strip(), TITLE_MAX), clip(body.strip(), BODY_MAX)
    if title:
        ev["title"] = title
    if body:
        ev["body"] = body
    if fmt != "text":
        ev["format"] = fmt
    if priority is not None:
        ev["priority"] = max(1, min(5, priority))
    if tags:
        ev["tags"] = tags[:MAX_TAGS]
    if category:
        ev["category"] = category
    for name, value in (("click", click), ("icon", icon), ("image", image)):
        link = url(value)
        if link is not None:
            ev[name] = link
    kept = [a for a in (actions or []) if a is not None][:MAX_ACTIONS]
    if kept:
        ev["actions"] = kept
    if collapse:
        ev["collapse_key"] = collapse
    return ev


def bullet_list(lines: list[str], total: int | None = None) -> str:
    """Up to LIST_ITEMS lines as a list, with how many more there were."""
    shown = lines[:LIST_ITEMS]
    more = (total if total is not None else len(lines)) - len(shown)
    out = "\n".join(f"- {line}" for line in shown)
    if more > 0:
        out += f"\n… and {more} more"
    return out
