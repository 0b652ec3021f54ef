"""SQL fragments shared by the SQLite store: event columns and history filters."""

from __future__ import annotations

import unicodedata
from typing import Any

import orjson

from .. import search
from ..acl import Visibility
from ..prefs import Preferences
from ..store import Event, HistoryQuery, with_inbox_state

EVENT_COLUMNS = (
    "id", "topic", "title", "body", "format", "priority", "category", "tags", "click",
    "icon", "image", "actions", "sensitive", "collapse_key", "deliver_at", "expires_at",
    "created_at", "attachment",
)  # fmt: skip
SELECT_EVENT = ", ".join(f"e.{c}" for c in EVENT_COLUMNS)
N_EVENT = len(EVENT_COLUMNS)

# read, seen_at, read_at, archived_at, clicked_at, action + the user's watermark
SELECT_STATE = "r.read, r.seen_at, r.archived_at, r.clicked_at, r.action"

_loads = orjson.loads


def event_from_row(row: tuple[Any, ...]) -> Event:
    ev = dict(zip(EVENT_COLUMNS, row[:N_EVENT], strict=True))
    ev["tags"] = _loads(ev["tags"]) if ev["tags"] else []
    ev["actions"] = _loads(ev["actions"]) if ev["actions"] else []
    ev["sensitive"] = bool(ev["sensitive"])
    ev["attachment"] = _loads(ev["attachment"]) if ev["attachment"] else None
    return ev


def event_with_state(row: tuple[Any, ...], watermark: int) -> Event:
    return with_inbox_state(event_from_row(row), row[N_EVENT : N_EVENT + 5], watermark)


def _topic_match(column: str, pattern: str, indexed: bool) -> str:
    # A unary + keeps SQLite from answering the test through the (topic, id) index:
    # see history_sql for when a scan in id order is the better plan.
    col = column if indexed else f"+{column}"
    return f"{col} GLOB ?" if "*" in pattern else f"{col} = ?"


def visibility_sql(
    vis: Visibility, params: list[Any], column: str = "e.topic", indexed: bool = True
) -> str:
    """A WHERE fragment limiting ``column`` to what ``vis`` allows ('' = no limit)."""
    parts: list[str] = []
    if not vis.everything:
        alts = []
        for pattern in vis.any_of:
            alts.append(_topic_match(column, pattern, indexed))
            params.append(pattern)
        parts.append("(" + " OR ".join(alts) + ")" if alts else "0")
    if vis.also_matching is not None:
        parts.append(_topic_match(column, vis.also_matching, indexed))
        params.append(vis.also_matching)
    return " AND ".join(parts)


def topics_sql(topics: tuple[str, ...], params: list[Any], column: str = "e.topic") -> str:
    """A WHERE fragment matching any of ``topics`` (exact names or '*' patterns)."""
    params.extend(topics)
    return "(" + " OR ".join(_topic_match(column, t, True) for t in topics) + ")"


def fts_query(text: str) -> str | None:
    """Turn what a person typed into a safe FTS5 query: every word must occur,
    the last one as a prefix (search-as-you-type). The text is composed (NFC)
    first, so that an accent typed as a separate mark (as some keyboards and
    macOS file names send it) does not split its word."""
    composed = unicodedata.normalize("NFC", text)
    words = [w.replace('"', "") for w in search.WORD.findall(composed)][: search.MAX_WORDS]
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
    q: HistoryQuery,
    now: str,
    watermark: int,
    prefs: Preferences | None = None,
    *,
    indexed: bool = True,
    fts_join: bool = False,
) -> tuple[str, list[Any]]:
    """The WHERE clause of a history query over ``events e LEFT JOIN receipts r``.

    ``indexed=False`` writes the topic tests (visibility, topic patterns) so that
    SQLite cannot use them to pick an index. ``fts_join=True`` expects the caller to
    join ``events_fts f`` and tests ``events_fts MATCH ?`` on it instead of an
    ``IN (SELECT rowid …)`` list of every match.
    """
    params: list[Any] = []
    where = ["e.superseded_by IS NULL", "(e.expires_at IS NULL OR e.expires_at > ?)"]
    params.append(now)
    muted = mute_sql(prefs, params)
    if muted:
        where.append(muted)
    vis = visibility_sql(q.visibility, params, indexed=indexed)
    if vis:
        where.append(vis)
    if q.topic is not None:
        where.append(_topic_match("e.topic", q.topic, indexed or "*" not in q.topic))
        params.append(q.topic)
    if q.category is not None:
        where.append("e.category = ?")
        params.append(q.category)
    if q.min_priority is not None:
        where.append("e.priority >= ?")
        params.append(q.min_priority)
    # on the FTS rowid when joined, so that the index seeks to the page's start
    id_col = "f.rowid" if fts_join and q.q else "e.id"
    if q.since is not None:
        where.append(f"{id_col} > ?")
        params.append(q.since)
    if q.before is not None:
        where.append(f"{id_col} < ?")
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
        elif fts_join:
            where.append("events_fts MATCH ?")
            params.append(match)
        else:
            where.append("e.id IN (SELECT rowid FROM events_fts WHERE events_fts MATCH ?)")
            params.append(match)
    return " AND ".join(where), params


#: newest ids a history page scans in id order before it lets SQLite pick the index
SCAN_WINDOW = 20_000

_FROM = "FROM events e LEFT JOIN receipts r ON r.user_id = ? AND r.event_id = e.id"


def history_sql(
    q: HistoryQuery,
    now: str,
    watermark: int,
    prefs: Preferences | None,
    top_id: int,
) -> list[tuple[str, list[Any]]]:
    """The statements of one history page, newest first; run them in order and stop
    once ``q.limit`` rows have come back (each asks for what is still missing, as
    the last ``?``; the ids of a later statement are all below those of an earlier).

    The plans, and why:

    * Full-text search walks the FTS index newest first (``ORDER BY f.rowid
      DESC``) joined to events and stops after a page, instead of building the
      list of every match first (for a common word, a third of the table).
    * A reader who sees only some topics (ACL grants) or asks for a topic pattern
      makes SQLite merge one index range per pattern and sort every visible
      event to return the newest 50. Scanning the newest ids in id order and
      testing the topic is far cheaper when the page fills from recent events, the
      usual case; so the newest :data:`SCAN_WINDOW` ids are scanned that way first,
      and only what they did not fill is asked with the indexed plan, whose cost
      is bounded by the number of visible events.
    * Otherwise (exact topic, category, no topic restriction) one statement: an
      index or the primary key already yields rows newest first.
    """
    select = f"SELECT {SELECT_EVENT}, {SELECT_STATE}"
    if q.q and fts_query(q.q) is None:
        return []  # nothing to search for (only punctuation): nothing matches
    if q.q:
        where, params = history_where(q, now, watermark, prefs, fts_join=True)
        sql = (
            f"{select} FROM events_fts f CROSS JOIN events e ON e.id = f.rowid "
            "LEFT JOIN receipts r ON r.user_id = ? AND r.event_id = e.id "
            f"WHERE {where} ORDER BY f.rowid DESC LIMIT ?"
        )
        return [(sql, [q.user_id, *params])]
    where, params = history_where(q, now, watermark, prefs)
    plain = (f"{select} {_FROM} WHERE {where} ORDER BY e.id DESC LIMIT ?", [q.user_id, *params])
    vis = q.visibility
    patterned = not vis.everything or vis.also_matching is not None
    if q.topic is not None:
        patterned = "*" in q.topic
    if not patterned or q.category is not None:
        return [plain]
    upper = top_id + 1 if q.before is None else min(q.before, top_id + 1)
    split = upper - SCAN_WINDOW
    if split <= (q.since or 0):
        where, params = history_where(q, now, watermark, prefs, indexed=False)
        return [
            (f"{select} {_FROM} WHERE {where} ORDER BY e.id DESC LIMIT ?", [q.user_id, *params])
        ]
    scan_where, scan_params = history_where(q, now, watermark, prefs, indexed=False)
    scan = (
        f"{select} {_FROM} WHERE {scan_where} AND e.id >= ? ORDER BY e.id DESC LIMIT ?",
        [q.user_id, *scan_params, split],
    )
    rest = (
        f"{select} {_FROM} WHERE {where} AND e.id < ? ORDER BY e.id DESC LIMIT ?",
        [q.user_id, *params, split],
    )
    return [scan, rest]
