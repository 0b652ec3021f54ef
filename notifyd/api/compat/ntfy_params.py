"""ntfy's request parameters: every documented spelling, decoded and checked.

ntfy reads a parameter from the first header among its aliases (names are
case-insensitive), then from the lowercase query parameter of the same names
(``X-Title``, ``Title``, ``t`` → ``?title=`` or ``?t=``). Header values may be raw
UTF-8 or RFC 2047 encoded words. ``POST /`` with a JSON body puts its fields in
front of both (:class:`Params` ``overrides``), as ntfy's server does by turning
the JSON into headers.

This module also holds ntfy's error shape (:class:`NtfyError`, numeric codes from
ntfy's ``server/errors.go``) and the parsers of the values: priorities, tags,
action buttons (short and JSON form) and the subscribe filters. Delays and
``since`` are in :mod:`.ntfy_time`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from typing import Any

from ...core.errors import NotifydError
from ...core.models import MAX_ACTIONS, MAX_TAGS, SLUG_RE, TOPIC_SEGMENT

# -- errors ------------------------------------------------------------------------


class NtfyError(Exception):
    """An error in ntfy's terms: HTTP status, ntfy's numeric code, text, optionally a
    link to documentation; answered by ``responses.render_ntfy`` as
    ``{"code", "http", "error", "link"?}``."""

    def __init__(
        self, http: int, code: int, error: str, detail: str | None = None,
        retry_after: float | None = None, link: str | None = None,
    ) -> None:  # fmt: skip
        message = f"{error}, {detail}" if detail else error
        super().__init__(message)
        self.http = http
        self.code = code
        self.error = message
        self.retry_after = retry_after
        self.link = link


def bad(code: int, error: str, detail: str | None = None) -> NtfyError:
    return NtfyError(400, code, error, detail)


#: notifyd error status → ntfy's (status, code, text) for it
_FROM_STATUS = {
    400: (400, 40000, "invalid request"),
    401: (401, 40101, "unauthorized"),
    403: (403, 40301, "forbidden"),
    404: (404, 40401, "page not found"),
    409: (409, 40900, "conflict"),
    413: (413, 41301, "request too large"),
    429: (429, 42901, "limit reached: too many requests, please be nice"),
    503: (503, 50300, "service unavailable"),
}
#: codes ntfy uses for invalid values of these event fields
_FIELD_CODES = {
    "topic": 40009, "priority": 40007, "deliver_at": 40004, "icon": 40021, "image": 40013,
    "actions": 40018,
}  # fmt: skip


def from_notifyd(exc: NotifydError) -> NtfyError:
    """A core error in ntfy's shape; invalid fields (notifyd's 422) are ntfy's 400s."""
    if exc.status == 422:
        head = (exc.field or "").split(".")[0].split("[")[0]
        return NtfyError(400, _FIELD_CODES.get(head, INVALID), "invalid request", exc.message)
    return for_status(exc.status, exc.message, exc.retry_after)


def for_status(status: int, detail: str, retry_after: float | None = None) -> NtfyError:
    """An error of HTTP ``status`` in ntfy's shape (its code and text for that status)."""
    http, code, text = _FROM_STATUS.get(status, (500, 50001, "internal server error"))
    return NtfyError(http, code, text, detail, retry_after=retry_after)


# ntfy's codes (server/errors.go); 40000 is ours, for invalid values ntfy has no code for
INVALID = 40000
DELAY_PARSE = 40004
DELAY_SMALL = 40005
PRIORITY = 40007
SINCE = 40008
TOPIC = 40009
TOPIC_DISALLOWED = 40010
NOT_UTF8 = 40011
ATTACH_URL = 40013
ATTACHMENTS = 40014
WS_UPGRADE = 40016
JSON_BODY = 40017
ACTIONS = 40018
ICON_URL = 40021

TOPIC_RE = re.compile(rf"^{TOPIC_SEGMENT}$")
SEQUENCE_RE = re.compile(r"^[-_A-Za-z0-9]{1,64}$")
#: a message id a subscriber may filter on: notifyd's are decimal event ids (and
#: ``s<N>`` for scheduled ones); ntfy's own are 12 letters and digits
MESSAGE_ID_RE = re.compile(r"^[-_A-Za-z0-9]{1,64}$")


def check_topic_name(name: str) -> str:
    """One topic of an ntfy path: a single notifyd topic segment."""
    if not TOPIC_RE.fullmatch(name) or name in (".", ".."):
        raise bad(TOPIC, "invalid request: topic invalid",
                  f"{name[:80]!r} is not a topic: use 1–64 of A–Z a–z 0–9 _ . -")  # fmt: skip
    return name


# -- reading parameters ------------------------------------------------------------


def decode_header_value(value: str, name: str = "header") -> str:
    """A header value as the client meant it: raw UTF-8 (servers decode header
    bytes as latin-1) and RFC 2047 encoded words (``=?UTF-8?B?…?=``). A malformed
    encoded word is ntfy's 400, never an exception out of the request."""
    try:
        value = value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        pass
    if "=?" in value and "?=" in value:
        try:
            value = str(make_header(decode_header(value)))
        except Exception:  # noqa: BLE001 - the stdlib's decoder raises a zoo of types
            # (HeaderParseError, CharsetError, LookupError, binascii and Unicode errors)
            raise bad(INVALID, "invalid request: header invalid",
                      f"{name}: malformed RFC 2047 encoded word") from None  # fmt: skip
    return value


def address_of(headers: Mapping[str, str], scheme: str = "http") -> str:
    """The server's address as a client reached it, from its ``Host`` (what uploaded
    attachments' URLs start with when ``base_url`` is unset); "" for a strange Host."""
    host = headers.get("host", "")
    if not host or len(host) > 255 or any(c in host for c in "/\\@ \t\r\n?#"):
        return ""
    return f"{scheme}://{host}"


class Params:
    """ntfy parameters from headers, query and (``POST /``) a JSON body.

    ``headers`` and ``query`` map lowercase names to values; ``overrides`` maps the
    first (canonical) name of an alias list to a value that wins over both.
    """

    def __init__(
        self,
        headers: Mapping[str, str],
        query: Mapping[str, str],
        overrides: Mapping[str, str] | None = None,
    ) -> None:
        self.headers = headers
        self.query = query
        self.overrides = overrides or {}

    def get(self, *names: str) -> str:
        if names[0] in self.overrides:
            return self.overrides[names[0]]
        for name in names:
            value = self.headers.get(name)
            if value and value.strip():
                return decode_header_value(value, name).strip()
        for name in names:
            value = self.query.get(name)
            if value and value.strip():
                return value.strip()
        return ""

    def flag(self, default: bool, *names: str) -> bool:
        value = self.get(*names).lower()
        if not value:
            return default
        return value in ("1", "yes", "true")


# -- values ------------------------------------------------------------------------

_PRIORITIES = {
    "1": 1, "min": 1, "2": 2, "low": 2, "3": 3, "default": 3,
    "4": 4, "high": 4, "5": 5, "max": 5, "urgent": 5,
}  # fmt: skip


def parse_priority(value: str) -> int | None:
    """ntfy's priorities (1–5 or names); None when unset. ``u=…`` values are RFC 9218
    ``Priority`` headers that browsers and proxies add: ignored, as ntfy does."""
    p = value.strip().lower()
    if not p or is_http_priority(p):
        return None
    if p in _PRIORITIES:
        return _PRIORITIES[p]
    raise bad(PRIORITY, "invalid priority parameter",
              "use 1–5 or min, low, default, high, max/urgent")  # fmt: skip


def is_http_priority(value: str) -> bool:
    """An RFC 9218 ``Priority`` header (``u=1, i``), not ntfy's priority."""
    return re.search(r"(?:^|[\s,])u=\d", value) is not None


#: ntfy tags that are emoji short codes but not notifyd slugs, and their slug aliases
TAG_ALIASES = {"+1": "thumbsup", "-1": "thumbsdown"}


def map_tags(raw: list[str]) -> list[str]:
    """ntfy tags → notifyd tags (lowercase slugs of ≤ 32 characters).

    Emoji short codes are already slugs except ``+1``/``-1``, which become their
    aliases ``thumbsup``/``thumbsdown`` (ntfy clients show the same emoji). Other
    tags are lowercased, runs of other characters become ``-``, and the result is
    cut to 32 characters; duplicates and empty ones are dropped.
    """
    out: list[str] = []
    for tag in raw:
        t = tag.strip().lower()
        t = TAG_ALIASES.get(t, t)
        if not SLUG_RE.fullmatch(t):
            t = re.sub(r"[^a-z0-9_\-]+", "-", t).strip("-_")[:32].rstrip("-_")
        if t and SLUG_RE.fullmatch(t) and t not in out:
            out.append(t)
    if len(out) > MAX_TAGS:
        raise bad(INVALID, "invalid request: too many tags", f"notifyd keeps at most {MAX_TAGS}")
    return out


def split_tags(value: str) -> list[str]:
    return [t for t in (decode_header_value(p).strip() for p in value.split(",")) if t]


# -- actions -----------------------------------------------------------------------

_ACTION_KEYS = {"action", "label", "url", "method", "body", "clear", "intent", "value"}
_KEY_RE = re.compile(r"^\s*([A-Za-z][\w.\-]*)\s*=(.*)$", re.S)


def _split_quoted(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double or single quotes."""
    parts, buf, quote = [], [], ""
    for ch in text:
        if quote:
            buf.append(ch)
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
            buf.append(ch)
        elif ch == sep:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    if quote:
        raise bad(ACTIONS, "invalid request: actions invalid", "unbalanced quotes")
    parts.append("".join(buf))
    return parts


def _unquote(value: str) -> str:
    v = value.strip()
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
        return v[1:-1]
    return v


def parse_actions_simple(text: str) -> list[dict[str, Any]]:
    """``view, Label, https://…, clear=true; http, Label, https://…, method=PUT`` and
    the ``key=value`` spelling of the same."""
    actions: list[dict[str, Any]] = []
    for raw in _split_quoted(text, ";"):
        if not raw.strip():
            continue
        action: dict[str, Any] = {}
        positional = 0
        for part in _split_quoted(raw, ","):
            if not part.strip():
                continue
            m = _KEY_RE.match(part)
            key = m.group(1).lower() if m else ""
            if m and (key in _ACTION_KEYS or key.startswith(("headers.", "extras."))):
                value = _unquote(m.group(2))
                if key.startswith("headers."):
                    action.setdefault("headers", {})[m.group(1)[8:]] = value
                elif key.startswith("extras."):
                    action.setdefault("extras", {})[m.group(1)[7:]] = value
                elif key == "clear":
                    action["clear"] = value.lower() in ("1", "yes", "true")
                else:
                    action[key] = value
                continue
            value = _unquote(part)
            if positional == 0:
                action["action"] = value
            elif positional == 1:
                action["label"] = value
            elif positional == 2 and action.get("action") in ("view", "http"):
                action["url"] = value
            elif positional == 2 and action.get("action") == "copy":
                action["value"] = value
            else:
                raise bad(ACTIONS, "invalid request: actions invalid",
                          f"unexpected {value[:60]!r} (use key=value)")  # fmt: skip
            positional += 1
        actions.append(action)
    return actions


def parse_actions(value: str | list[Any]) -> list[dict[str, Any]]:
    """ntfy's action buttons (a JSON array or the short header form), checked as ntfy
    checks them."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError as exc:
                raise bad(ACTIONS, "invalid request: actions invalid", str(exc)) from None
        else:
            value = parse_actions_simple(text)
    if not isinstance(value, list) or not all(isinstance(a, dict) for a in value):
        raise bad(ACTIONS, "invalid request: actions invalid", "expected a list of objects")
    if len(value) > MAX_ACTIONS:
        raise bad(ACTIONS, "invalid request: actions invalid",
                  f"too many actions, only {MAX_ACTIONS} allowed")  # fmt: skip
    for a in value:
        kind = str(a.get("action") or "").lower()
        if kind not in ("view", "http", "broadcast", "copy"):
            raise bad(ACTIONS, "invalid request: actions invalid",
                      f"action {kind!r} unknown")  # fmt: skip
        if not a.get("label"):
            raise bad(ACTIONS, "invalid request: actions invalid", "label must be set")
        if kind in ("view", "http") and not a.get("url"):
            raise bad(ACTIONS, "invalid request: actions invalid",
                      f"parameter 'url' is required for action '{kind}'")  # fmt: skip
        a["action"] = kind
    return value


def map_actions(actions: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """ntfy actions → notifyd's ``{label, url, method?}``; returns them and what was
    left out, and why. ``view`` opens its URL; ``http`` becomes an HTTP action (ntfy's
    default method is POST). Dropped: ``broadcast`` and ``copy`` (no URL to act on),
    ``http`` with headers or a body (notifyd's actions carry neither, and a request
    without them could do the wrong thing), and URLs that are not http(s). ``clear``
    has no notifyd equivalent and is ignored. Labels are cut to 40 characters."""
    out, dropped = [], []
    for a in actions:
        kind, label, url = a["action"], str(a["label"])[:40], str(a.get("url") or "")
        if kind in ("broadcast", "copy"):
            dropped.append(f"{kind} action {label!r}: not supported")
        elif not re.match(r"(?i)^https?://\S{3,}$", url) or len(url) > 2048:
            dropped.append(f"{kind} action {label!r}: only http(s) URLs are kept")
        elif kind == "http" and (a.get("headers") or a.get("body")):
            dropped.append(f"http action {label!r}: headers and bodies are not supported")
        elif kind == "http":
            method = str(a.get("method") or "POST").upper()
            if method not in ("GET", "POST", "PUT", "DELETE", "PATCH"):
                raise bad(ACTIONS, "invalid request: actions invalid",
                          f"method {method!r} not supported")  # fmt: skip
            out.append({"label": label, "url": url, "method": method})
        else:
            out.append({"label": label, "url": url})
    return out, dropped


# -- subscribing -------------------------------------------------------------------


@dataclass
class Filters:
    """ntfy's subscribe filters: exact ``id``, ``message`` and ``title``, any of the
    ``priority`` values, all of the ``tags``."""

    id: str = ""
    message: str = ""
    title: str = ""
    priorities: frozenset[int] = frozenset()
    tags: tuple[str, ...] = ()
    active: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.active = bool(self.id or self.message or self.title or self.priorities or self.tags)

    @property
    def event_id(self) -> int | None:
        """The event the ``id`` filter names, if it names a stored one the way
        notifyd writes ids (decimal, no leading zero: ``007`` matches nothing, as
        ntfy compares ids as strings); None otherwise."""
        if self.id.isdigit() and self.id.isascii() and not self.id.startswith("0"):
            return int(self.id)
        return None

    def passes(self, msg: dict[str, Any], title: str | None = None) -> bool:
        """Whether ntfy message ``msg`` passes; ``title``: the event's own title (an
        event with a title and no body shows the title as ntfy's message)."""
        if not self.active:
            return True
        if self.id and msg["id"] != self.id:
            return False
        if self.message and msg.get("message", "") != self.message:
            return False
        if self.title and (msg.get("title", "") if title is None else title) != self.title:
            return False
        if self.priorities and msg.get("priority", 3) not in self.priorities:
            return False
        have = msg.get("tags") or ()
        return all(t in have for t in self.tags)


def parse_filters(params: Params) -> Filters:
    priorities = set()
    raw = params.get("x-priority", "priority", "prio", "p")
    for p in ("" if is_http_priority(raw.lower()) else raw).split(","):
        if p.strip():
            value = parse_priority(p)
            priorities.add(3 if value is None else value)
    tags = map_tags(split_tags(params.get("x-tags", "tags", "tag", "ta")))
    message_id = params.get("x-id", "id")
    if message_id and not MESSAGE_ID_RE.fullmatch(message_id):
        raise bad(INVALID, "invalid request: id invalid",
                  "a message id is 1–64 of A–Z a–z 0–9 _ -")  # fmt: skip
    return Filters(
        id=message_id,
        message=params.get("x-message", "message", "m"),
        title=params.get("x-title", "title", "t"),
        priorities=frozenset(priorities),
        tags=tuple(tags),
    )
