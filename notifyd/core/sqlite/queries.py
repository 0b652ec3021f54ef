"""SQL fragments shared by the SQLite store: event columns and history filters."""

from __future__ import annotations

import re
from typing import Any

import orjson

from ..acl import Visibility
from ..prefs import Preferences
from ..store import Event, HistoryQuery

EVENT_COLUMNS = (
    "id", "topic", "title", "body", "format", "priority", "category", "tags", "click",
    "icon", "image", "actions", "sensitive", "collapse_key", "deliver_at", "expires_at",
    "created_at",
)  # fmt: skip
SELECT_EVENT = ", ".join(f"e.{c}" for c in EVENT_COLUMNS)
N_EVENT = len(EVENT_COLUMNS)

# read, seen_at, read_at, archived_at, clicked_at, action + the user's watermark
SELECT_STATE = "r.read, r.seen_at, r.archived_at, r.clicked_at, r.action"

_loads = orjson.loads


def event_from_row(row: tuple) -> Event:
    ev = dict(zip(EVENT_COLUMNS, row[:N_EVENT], strict=True))
    ev["tags"] = _loads(ev["tags"]) if ev["tags"] else []
    ev["actions"] = _loads(ev["actions"]) if ev["actions"] else []
    ev["sensitive"] = bool(ev["sensitive"])
    return ev


def event_with_state(row: tuple, watermark: int) -> Event:
    ev = event_from_row(row)
    read, seen_at, archived_at, clicked_at, action = row[N_EVENT : N_EVENT + 5]
    is_read = ev["id"] <= watermark if read is None else bool(read)
    ev["read"] = is_read
    ev["seen"] = is_read or seen_at is not None
    ev["archived"] = archived_at is not None
    ev["clicked_at"] = clicked_at
    ev["action"] = action
    return ev


def visibility_sql(vis: Visibility, params: list[Any], column: str = "e.topic") -> str:
    """A WHERE fragment limiting ``column`` to what ``vis`` allows ('' = no limit)."""
    parts: list[str] = []
    if not vis.everything:
        alts = []
        for pattern in vis.any_of:
            if "*" in pattern:
                alts.append(f"{column} GLOB ?")
            else:
                alts.append(f"{column} = ?")
            params.append(pattern)
        parts.append("(" + " OR ".join(alts) + ")" if alts else "0")
    if vis.also_matching is not None:
        parts.append(f"{column} GLOB ?" if "*" in vis.also_matching else f"{column} = ?")
        params.append(vis.also_matching)
    return " AND ".join(parts)


def topics_sql(topics: tuple[str, ...], params: list[Any], column: str = "e.topic") -> str:
    """A WHERE fragment matching any of ``topics`` (exact names or '*' patterns)."""
    params.extend(topics)
    return (
        "(" + " OR ".join(f"{column} GLOB ?" if "*" in t else f"{column} = ?" for t in topics) + ")"
    )


_WORD = re.compile(r"[\w\-]+", re.UNICODE)


def fts_query(text: str) -> str | None:
    """Turn what a person typed into a safe FTS5 query: every word must occur,
    the last one as a prefix (search-as-you-type)."""
    words = [w.replace('"', "") for w in _WORD.findall(text)][:16]
    if not words:
        return None
    quoted = [f'"{w}"' for w in words]
    quoted[-1] += "*"
    return " ".join(quoted)


def unread_sql() -> str:
    # read NULL -> decided by the watermark (:w); explicit 1/0 wins
    return "(CASE WHEN r.read IS NULL THEN e.id > ? ELSE r.read = 0 END)"


def mute_sql(prefs: Preferences | None, params: list[Any]) -> str:
    """A WHERE fragment dropping what the user's first matching rule mutes ('' = none)."""
    if prefs is None or not any(r.mute for r in prefs.rules):
        return ""
    cases = []
    for rule in prefs.rules:
        cond = ["e.topic GLOB ?" if "*" in rule.topic else "e.topic = ?", "e.priority >= ?"]
        params.extend([rule.topic, rule.min_priority])
        if rule.category is not None:
            cond.append("e.category = ?")
            params.append(rule.category)
        cases.append(f"WHEN {' AND '.join(cond)} THEN {1 if rule.mute else 0}")
    return f"(CASE {' '.join(cases)} ELSE 0 END) = 0"


def history_where(
    q: HistoryQuery, now: str, watermark: int, prefs: Preferences | None = None
) -> tuple[str, list[Any]]:
    params: list[Any] = []
    where = ["e.superseded_by IS NULL", "(e.expires_at IS NULL OR e.expires_at > ?)"]
    params.append(now)
    muted = mute_sql(prefs, params)
    if muted:
        where.append(muted)
    vis = visibility_sql(q.visibility, params)
    if vis:
        where.append(vis)
    if q.topic is not None:
        where.append("e.topic GLOB ?" if "*" in q.topic else "e.topic = ?")
        params.append(q.topic)
    if q.category is not None:
        where.append("e.category = ?")
        params.append(q.category)
    if q.min_priority is not None:
        where.append("e.priority >= ?")
        params.append(q.min_priority)
    if q.since is not None:
        where.append("e.id > ?")
        params.append(q.since)
    if q.before is not None:
        where.append("e.id < ?")
        params.append(q.before)
    if q.unread is True:
        where.append(unread_sql())
        params.append(watermark)
    elif q.unread is False:
        where.append("NOT " + unread_sql())
        params.append(watermark)
    if q.archived == "exclude":
        where.append("r.archived_at IS NULL")
    elif q.archived == "only":
        where.append("r.archived_at IS NOT NULL")
    if q.q:
        match = fts_query(q.q)
        if match is None:
            where.append("0")
        else:
            where.append("e.id IN (SELECT rowid FROM events_fts WHERE events_fts MATCH ?)")
            params.append(match)
    return " AND ".join(where), params
