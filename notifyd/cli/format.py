"""Formatting and argument helpers for the CLI, kept apart so they can be tested
without a terminal or a daemon.

Argument helpers raise ``ValueError`` and the CLI turns that into a usage error.
click is imported only to colour text, httpx not at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TypedDict, Unpack

# notifyd.core.priority imports nothing (notifyd.core.models would pull in pydantic
# and slow every `notifyd send`)
from notifyd.core.priority import PRIORITY_LABELS, PRIORITY_NAMES  # noqa: F401 - used by callers

ACTION_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")
#: token scopes (notifyd.core.acl.SCOPES; a test keeps the two equal)
SCOPES = ("publish", "subscribe", "account", "admin")

_DURATION_RE = re.compile(r"^\+?(\d+)\s*(s|sec|m|min|h|d|w)$", re.IGNORECASE)
_DURATION_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


class Style(TypedDict, total=False):
    """The keyword arguments of ``click.style`` that the CLI uses."""

    fg: str
    bold: bool
    dim: bool


_PRIORITY_STYLES: dict[int, Style] = {
    1: {"dim": True},
    2: {"dim": True},
    4: {"fg": "yellow", "bold": True},
    5: {"fg": "red", "bold": True},
}


# --- arguments --------------------------------------------------------------


def parse_priority(value: str) -> int:
    """``"4"`` or ``"high"`` → 4; used where the API wants a number (filters)."""
    text = value.strip().lower()
    if text.isdigit() and 1 <= int(text) <= 5:
        return int(text)
    if text in PRIORITY_NAMES:
        return PRIORITY_NAMES[text]
    raise ValueError(f"{value!r} is not a priority: use 1–5 or min, low, default, high, urgent")


def check_priority(value: str) -> str:
    """Validate a priority but keep the user's spelling: the server accepts both."""
    parse_priority(value)
    return value.strip().lower()


def parse_action(value: str) -> dict:
    """``LABEL=URL`` or ``LABEL=METHOD URL`` → ``{"label", "url"[, "method"]}``."""
    label, sep, rest = value.partition("=")
    label, rest = label.strip(), rest.strip()
    if not sep or not label or not rest:
        raise ValueError(
            f"{value!r} is not an action: write LABEL=URL, e.g. 'Open=https://example.com'"
        )
    action = {"label": label, "url": rest}
    method, space, url = rest.partition(" ")
    if space and method.upper() in ACTION_METHODS:
        action = {"label": label, "url": url.strip(), "method": method.upper()}
    return action


def split_csv(values: Iterable[str]) -> list[str]:
    """Flatten ``--tag a,b --tag c`` into ``["a", "b", "c"]``, dropping blanks and repeats."""
    out: list[str] = []
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if item and item not in out:
                out.append(item)
    return out


def parse_scopes(values: Iterable[str]) -> list[str]:
    scopes = [s.lower() for s in split_csv(values)]
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise ValueError(f"unknown scope {unknown[0]!r}: choose from {', '.join(SCOPES)}")
    return scopes


def parse_when(value: str, now: datetime | None = None) -> str:
    """Turn what a person types for ``--deliver-at``/``--expires-at`` into RFC 3339.

    ``30m``, ``+2h``, ``1d`` are relative to now. A date-time without a zone means
    local time, since that is what someone at a terminal means; one with an offset
    or ``Z`` is passed on as written.
    """
    text = value.strip()
    now = now or datetime.now(UTC)
    m = _DURATION_RE.match(text)
    if m:
        when = now + timedelta(seconds=int(m.group(1)) * _DURATION_UNITS[m.group(2).lower()])
        return _rfc3339(when)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{value!r} is not a time: use e.g. 30m, 2h, 1d, 2026-01-02T09:00 (local) "
            "or 2026-01-02T08:00:00Z"
        ) from None
    if dt.tzinfo is None:
        dt = dt.astimezone()  # naive → the local zone
    return _rfc3339(dt)


def _rfc3339(dt: datetime) -> str:
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def dedupe_ids(ids: Iterable[int]) -> list[int]:
    return list(dict.fromkeys(ids))


# --- display ----------------------------------------------------------------


def priority_label(value: object) -> str:
    if isinstance(value, int) and value in PRIORITY_LABELS:
        return PRIORITY_LABELS[value]
    if isinstance(value, str):
        try:
            return PRIORITY_LABELS[parse_priority(value)]
        except ValueError:
            pass
    return str(value) if value is not None else "default"


def priority_style(value: object) -> Style:
    if isinstance(value, int):
        return _PRIORITY_STYLES.get(value, {})
    return {}


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def short_time(value: str | None, now: datetime | None = None) -> str:
    """An RFC 3339 UTC time in local time, as short as stays unambiguous."""
    dt = parse_time(value)
    if dt is None:
        return value or "-"
    local = dt.astimezone()
    now = (now or datetime.now(UTC)).astimezone(local.tzinfo)
    if local.date() == now.date():
        return local.strftime("%H:%M:%S")
    if local.year == now.year:
        return local.strftime("%b %d %H:%M")
    return local.strftime("%Y-%m-%d %H:%M")


def first_line(text: str | None) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


def truncate(text: str, width: int) -> str:
    if width <= 0:
        return ""
    if len(text) <= width:
        return text
    return text[: max(width - 1, 0)] + "…"


def event_summary(event: dict) -> str:
    """``title — first line of body``, or whichever of the two exists."""
    title = (event.get("title") or "").strip()
    body = first_line(event.get("body"))
    if title and body:
        return f"{title} — {body}"
    return title or body


def event_line(event: dict, *, color: bool = False, now: datetime | None = None) -> str:
    """One line for ``notifyd tail``: ``#id  time  [priority]  topic  title — body``."""
    priority = event.get("priority")
    label = f"[{priority_label(priority)}]".ljust(9)  # 9 = len("[default]"): keeps topics aligned
    if color:
        label = _style(label, **priority_style(priority))
    ident = f"#{event.get('id')}"
    if color:
        ident = _style(ident, bold=True)
    parts = [ident, short_time(event.get("created_at"), now), label, str(event.get("topic", ""))]
    summary = event_summary(event)
    if summary:
        parts.append(summary)
    return "  ".join(parts)


def render_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    color: bool = False,
    bold_rows: Sequence[bool] | None = None,
    width: int | None = None,
) -> list[str]:
    """Align ``rows`` under ``headers``; the last column is cut to fit ``width``.

    Widths are measured on plain text and styling is applied after padding, so
    ANSI codes never throw the columns off.
    """
    cells = [["" if c is None else str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    if width and len(headers) > 1:
        used = sum(widths[:-1]) + 2 * (len(headers) - 1)
        widths[-1] = min(widths[-1], max(width - used, 10))

    def line(values: Sequence[str], bold: bool) -> str:
        padded = [v.ljust(widths[i]) for i, v in enumerate(values[:-1])]
        padded.append(truncate(values[-1], widths[-1]))
        text = "  ".join(padded).rstrip()
        return _style(text, bold=True) if bold and color else text

    out = [line(list(headers), True)]
    for i, row in enumerate(cells):
        out.append(line(row, bool(bold_rows and bold_rows[i])))
    return out


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def yes_no(value: object) -> str:
    return "yes" if value else "no"


def permission_of(entry: dict) -> str:
    read, write = bool(entry.get("read")), bool(entry.get("write"))
    if read and write:
        return "rw"
    return "read" if read else ("write" if write else "none")


def _style(text: str, **styles: Unpack[Style]) -> str:
    if not styles:
        return text
    import click  # already loaded by the CLI; lazy so tests of plain text never need it

    return click.style(text, **styles)


# --- tables -------------------------------------------------------------------

Table = tuple[list[str], list[list[object]]]


def events_table(events: Sequence[dict], now: datetime | None = None) -> Table:
    """History rows; unread events get a ``*`` before their id."""
    rows = [
        [
            ("*" if ev.get("read") is False else " ") + str(ev.get("id")),
            short_time(ev.get("created_at"), now),
            priority_label(ev.get("priority")),
            ev.get("topic"),
            ev.get("category"),
            event_summary(ev),
        ]
        for ev in events
    ]
    return [" ID", "TIME", "PRI", "TOPIC", "CATEGORY", "TITLE"], rows


def users_table(users: Sequence[dict]) -> Table:
    rows = [
        [
            u.get("id"),
            u.get("name"),
            u.get("role"),
            u.get("tz") or "-",
            yes_no(u.get("has_password")),
            short_time(u.get("created_at")),
        ]
        for u in users
    ]
    return ["ID", "NAME", "ROLE", "TZ", "PASSWORD", "CREATED"], rows


def tokens_table(tokens: Sequence[dict]) -> Table:
    rows = [
        [
            t.get("id"),
            t.get("user"),
            t.get("prefix"),
            ",".join(t.get("scopes") or []),
            t.get("topics") or "*",
            short_time(t.get("created_at")),
            short_time(t["last_used_at"]) if t.get("last_used_at") else "never",
            t.get("label") or "",
        ]
        for t in tokens
    ]
    return ["ID", "USER", "PREFIX", "SCOPES", "TOPICS", "CREATED", "LAST USED", "LABEL"], rows


def acl_table(entries: Sequence[dict]) -> Table:
    rows = [[e.get("id"), e.get("user"), e.get("pattern"), permission_of(e)] for e in entries]
    return ["ID", "USER", "PATTERN", "PERMISSION"], rows


def human_size(n: object) -> str:
    """``1536`` → ``1.5 KiB``; ``-`` when unknown."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"  # pragma: no cover - the loop returns at GiB


def hooks_table(hooks: Sequence[dict]) -> Table:
    """Webhooks: their URLs as listed by the daemon, which never include the secret."""
    rows = [
        [
            h.get("name"),
            h.get("template"),
            h.get("topic"),
            h.get("user"),
            short_time(h["last_used_at"]) if h.get("last_used_at") else "never",
            h.get("url"),
        ]
        for h in hooks
    ]
    return ["NAME", "TEMPLATE", "TOPIC", "USER", "LAST USED", "URL"], rows


def rendered_event_lines(event: dict) -> list[str]:
    """An event a hook's template rendered (``notifyd hooks test``), for people:
    the title, then one ``field: value`` line per field that is set."""
    lines = [event.get("title") or "(no title)"]
    shown = ("topic", "priority", "category", "tags", "click", "image", "collapse_key")
    for key in shown:
        value = event.get(key)
        if value in (None, "", []):
            continue
        if key == "priority":
            value = priority_label(value)
        elif key == "tags":
            value = ", ".join(str(t) for t in value) if isinstance(value, list) else value
        lines.append(f"  {key}: {value}")
    for action in event.get("actions") or []:
        if isinstance(action, dict):
            method = f"{action['method']} " if action.get("method") else ""
            lines.append(f"  action: {action.get('label')} → {method}{action.get('url')}")
    body = event.get("body") or ""
    if body:
        lines.append("  body:")
        lines.extend(f"    {line}" for line in str(body).splitlines())
    return lines
