"""Gotify's objects and notifyd's, both ways: messages, priorities, extras,
applications, clients, errors.

Pure translation, no requests and no I/O except :class:`Shaper`, which reads the
extras kept with events from the store.

Decisions (see ``docs/compat.md``):

- An *application* is a notifyd token with scope ``publish`` (or ``admin``); its
  Gotify ``id`` (``appid``) is the token id. Its messages go to its **default topic**:
  the token's ``topics`` when that is a plain topic; ``P/<name>`` when it is ``P/*``;
  else ``gotify/<name>``, where ``<name>`` is the token's label made topic-safe, or its
  id when it has no label.
- A *client* is a notifyd token with scope ``subscribe`` (or ``admin``).
- Priorities: Gotify 0–10 → notifyd 1–5 (0–1→1, 2–3→2, 4–5→3, 6–7→4, 8–10→5) and
  back (1→1, 2→3, 3→5, 4→7, 5→10).
- ``extras`` are kept unchanged beside the event (``event_extras``) and returned as
  sent; ``client::display.contentType: text/markdown`` makes the event markdown,
  ``client::notification.click.url`` its ``click`` and ``…bigImageUrl`` its ``image``.
  Events that came in another way get extras made from those fields.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any

from ...core.models import check_url
from ...core.services import Services
from ...core.store import Event, EventExtras, Token

#: the icon shown for every application (served by the notification center)
APP_IMAGE = "static/icons/icon-192.png"
#: the topic prefix of applications whose token names no plain topic
APP_TOPIC_PREFIX = "gotify"

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")

_TO_GOTIFY = {1: 1, 2: 3, 3: 5, 4: 7, 5: 10}


# -- priorities ------------------------------------------------------------------------


def priority_in(value: int) -> int:
    """Gotify's priority (0–10; anything below or above counts as 0 or 10) → notifyd's 1–5."""
    if value <= 1:
        return 1
    if value <= 3:
        return 2
    if value <= 5:
        return 3
    if value <= 7:
        return 4
    return 5


def priority_out(value: int) -> int:
    """notifyd's priority 1–5 → Gotify's 0–10 scale."""
    return _TO_GOTIFY.get(value, 5)


# -- applications and clients -------------------------------------------------------------


def is_app(token: Token) -> bool:
    return "publish" in token.scopes or "admin" in token.scopes


def is_client(token: Token) -> bool:
    return "subscribe" in token.scopes or "admin" in token.scopes


def topic_segment(name: str | None) -> str | None:
    """``name`` as one topic segment (runs of other characters become ``-``), or None."""
    if not name:
        return None
    seg = _UNSAFE.sub("-", name).strip("-.")[:64].strip("-.")
    return seg or None


def default_topic(token: Token) -> str:
    """Where an application token's Gotify messages go (see the module docstring)."""
    pattern = token.topics
    if pattern is not None and "*" not in pattern:
        return pattern
    name = topic_segment(token.label) or str(token.id)
    if pattern is not None and pattern.endswith("/*") and "*" not in pattern[:-2]:
        return f"{pattern[:-2]}/{name}"
    return f"{APP_TOPIC_PREFIX}/{name}"


def app_name(token: Token) -> str:
    return token.label or default_topic(token)


def shown_token(token: Token, own_secret: str | None, own_id: int | None) -> str:
    """Gotify shows tokens; notifyd keeps only their hash. The caller's own token is
    known (it just sent it); any other is shown as its prefix, marked as cut."""
    if own_secret is not None and token.id == own_id:
        return own_secret
    return token.prefix + "…"


def application(token: Token, own_secret: str | None = None, own_id: int | None = None) -> dict:
    return {
        "id": token.id,
        "token": shown_token(token, own_secret, own_id),
        "name": app_name(token),
        "description": f"notifyd token {token.prefix}…, publishes to topic {default_topic(token)}",
        "internal": False,
        "image": APP_IMAGE,
        "defaultPriority": 0,
        "lastUsed": token.last_used_at,
    }


def client(token: Token, own_secret: str | None = None, own_id: int | None = None) -> dict:
    return {
        "id": token.id,
        "token": shown_token(token, own_secret, own_id),
        "name": token.label or token.prefix + "…",
        "lastUsed": token.last_used_at,
    }


# -- messages ----------------------------------------------------------------------------


def _nested(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _url(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return check_url(value)
    except ValueError:
        return None


def fields_from_extras(extras: dict[str, Any] | None) -> dict[str, Any]:
    """The notifyd event fields that Gotify's well-known extras stand for. Values
    notifyd cannot hold (a click URL that is not http(s)) are left to the extras."""
    fields: dict[str, Any] = {}
    if not extras:
        return fields
    if _nested(extras, "client::display", "contentType") == "text/markdown":
        fields["format"] = "markdown"
    click = _url(_nested(extras, "client::notification", "click", "url"))
    if click is not None:
        fields["click"] = click
    image = _url(_nested(extras, "client::notification", "bigImageUrl"))
    if image is not None:
        fields["image"] = image
    return fields


def extras_from_fields(event: Event) -> dict[str, Any] | None:
    """Extras that tell a Gotify client what the event's fields say (for events that
    did not come through Gotify)."""
    extras: dict[str, Any] = {}
    if event.get("format") == "markdown":
        extras["client::display"] = {"contentType": "text/markdown"}
    notification: dict[str, Any] = {}
    if event.get("click"):
        notification["click"] = {"url": event["click"]}
    if event.get("image"):
        notification["bigImageUrl"] = event["image"]
    if notification:
        extras["client::notification"] = notification
    return extras or None


def message(event: Event, extras: EventExtras | None, appid: int) -> dict[str, Any]:
    """A notifyd event as Gotify's message object."""
    msg: dict[str, Any] = {
        "id": event["id"],
        "appid": appid,
        "message": event["body"],
        "title": event["title"],
        "priority": priority_out(event["priority"]),
        "date": event["created_at"],
    }
    shown = extras.extras if extras is not None and extras.extras is not None else None
    if shown is None:
        shown = extras_from_fields(event)
    if shown is not None:
        msg["extras"] = shown
    return msg


class AppIndex:
    """One reader's applications, for ``appid``: the publishing application when it
    is one of the reader's, else the reader's application whose default topic is the
    event's topic (the lowest id), else 0."""

    def __init__(self, tokens: list[Token]) -> None:
        self.apps = {t.id: t for t in tokens if is_app(t)}
        self.by_topic: dict[str, int] = {}
        for token in sorted(self.apps.values(), key=lambda t: t.id):
            self.by_topic.setdefault(default_topic(token), token.id)

    def appid(self, event: Event, extras: EventExtras | None) -> int:
        if extras is not None and extras.token_id in self.apps:
            return extras.token_id
        return self.by_topic.get(event["topic"], 0)


class _ExtrasCache:
    """Extras of recent events, shared by all Gotify streams (an event's extras never
    change): one store read per event however many phones are listening."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._items: OrderedDict[int, EventExtras | None] = OrderedDict()

    def get(self, event_id: int) -> tuple[bool, EventExtras | None]:
        if event_id in self._items:
            self._items.move_to_end(event_id)
            return True, self._items[event_id]
        return False, None

    def put(self, event_id: int, value: EventExtras | None) -> None:
        self._items[event_id] = value
        self._items.move_to_end(event_id)
        while len(self._items) > self.size:
            self._items.popitem(last=False)


_cache = _ExtrasCache()


class Shaper:
    """Turns a reader's events into Gotify messages."""

    def __init__(self, svc: Services, apps: AppIndex, *, cache: bool = False) -> None:
        self.svc = svc
        self.apps = apps
        self.cache = cache

    async def extras(self, events: list[Event]) -> dict[int, EventExtras | None]:
        ids = [ev["id"] for ev in events]
        if not self.cache:
            found = await self.svc.store.event_extras(ids)
            return {i: found.get(i) for i in ids}
        out: dict[int, EventExtras | None] = {}
        missing = []
        for i in ids:
            hit, value = _cache.get(i)
            if hit:
                out[i] = value
            else:
                missing.append(i)
        if missing:
            found = await self.svc.store.event_extras(missing)
            for i in missing:
                out[i] = found.get(i)
                _cache.put(i, out[i])
        return out

    async def messages(self, events: list[Event]) -> list[dict[str, Any]]:
        if not events:
            return []
        extras = await self.extras(events)
        return [
            message(ev, extras[ev["id"]], self.apps.appid(ev, extras[ev["id"]])) for ev in events
        ]


# -- errors (the body is built by ``responses.render_gotify``) ---------------------------

STATUS_TEXT = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Request Entity Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


def gotify_status(status: int) -> int:
    """Gotify answers invalid input with 400, where notifyd says 422."""
    return 400 if status == 422 else status
