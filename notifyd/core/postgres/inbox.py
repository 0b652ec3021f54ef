"""The inbox role (:class:`~notifyd.core.store.InboxStore`) on PostgreSQL: per-user
read/seen/archive/click state and "read all". ``count`` lives with the history
in :class:`~notifyd.core.postgres.events.PostgresEventStore` (the same query).

:class:`PostgresInboxStore` is a mixin composed with ``PostgresEventStore``,
whose connection pool and worker threads (``_run``) it uses.

State is stored as in the SQLite engine: a ``receipts`` row per (user, event)
with an explicit ``read`` flag (NULL: none), and a per-user "mark all read"
watermark in ``inbox_marks`` that decides for events without a flag
(:func:`notifyd.core.store.with_inbox_state`). Statements that write receipts
for events take ``FOR KEY SHARE`` locks on those events' rows, so that a prune
running at the same time (``FOR UPDATE SKIP LOCKED``) leaves them for its next
pass instead of leaving receipts of deleted events behind.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ..acl import Visibility
from ..store import HistoryQuery, InboxStore
from ..timeutil import now_rfc3339
from .events import _FROM, Conn, _last_id, _preferences, _watermark, history_where, visibility_sql

T = TypeVar("T")

#: the advisory lock key (with the user id) that makes one user's "read all"
#: calls, on any node, run one after the other ("inbox" in ASCII)
READ_ALL_LOCK = 0x696E626F

_STATE_SQL = {
    "read": (
        "INSERT INTO receipts (user_id, event_id, read, read_at, seen_at) "
        "VALUES (%s, %s, TRUE, %s, %s) ON CONFLICT (user_id, event_id) DO UPDATE SET "
        "read = TRUE, read_at = excluded.read_at, "
        "seen_at = COALESCE(receipts.seen_at, excluded.seen_at)"
    ),
    "unread": (
        "INSERT INTO receipts (user_id, event_id, read) VALUES (%s, %s, FALSE) "
        "ON CONFLICT (user_id, event_id) DO UPDATE SET read = FALSE, read_at = NULL"
    ),
    "seen": (
        "INSERT INTO receipts (user_id, event_id, seen_at) VALUES (%s, %s, %s) "
        "ON CONFLICT (user_id, event_id) DO UPDATE SET "
        "seen_at = COALESCE(receipts.seen_at, excluded.seen_at)"
    ),
    "archive": (
        "INSERT INTO receipts (user_id, event_id, archived_at) VALUES (%s, %s, %s) "
        "ON CONFLICT (user_id, event_id) DO UPDATE SET archived_at = excluded.archived_at"
    ),
    "unarchive": (
        "INSERT INTO receipts (user_id, event_id) VALUES (%s, %s) "
        "ON CONFLICT (user_id, event_id) DO UPDATE SET archived_at = NULL"
    ),
    "click": (
        "INSERT INTO receipts (user_id, event_id, read, read_at, seen_at, clicked_at, action) "
        "VALUES (%s, %s, TRUE, %s, %s, %s, %s) ON CONFLICT (user_id, event_id) DO UPDATE SET "
        "read = TRUE, read_at = COALESCE(receipts.read_at, excluded.read_at), "
        "seen_at = COALESCE(receipts.seen_at, excluded.seen_at), "
        "clicked_at = excluded.clicked_at, action = excluded.action"
    ),
}


def _state_params(
    state: str, user_id: int, event_id: int, now: str, action: str | None
) -> tuple[Any, ...]:
    if state == "read":
        return (user_id, event_id, now, now)
    if state in ("unread", "unarchive"):
        return (user_id, event_id)
    if state in ("seen", "archive"):
        return (user_id, event_id, now)
    return (user_id, event_id, now, now, now, action)


def _read_all(conn: Conn, query: HistoryQuery) -> dict[str, int]:
    """The SQLite engine's "read all", on PostgreSQL (the caller is in a transaction).

    ``upto`` is the newest id given (the sequencer's committed ``last_id``: every
    id up to it is visible here, see events.py), and only events up to it are
    marked. Unfiltered, over the whole inbox (everything visible, archived left
    out): the user's watermark rises to ``upto`` (never falls) and their explicit
    unread marks up to it become read; ``updated`` counts the unread events up to
    it before. Otherwise each matching unread event gets a read receipt."""
    user_id = query.user_id
    conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (READ_ALL_LOCK, user_id))
    w = _watermark(conn, user_id)
    now = now_rfc3339()
    upto = _last_id(conn)
    unread_q = HistoryQuery(**{**query.__dict__, "unread": True, "before": upto + 1})
    where, params = history_where(unread_q, now, w, _preferences(conn, user_id))
    base = f"{_FROM} WHERE {where}"
    if (
        not query.filtered
        and query.archived == "exclude"
        and query.visibility.everything
        and query.visibility.also_matching is None
    ):
        row = conn.execute(f"SELECT count(*) {base}", [user_id, *params]).fetchone()
        count = int(row[0]) if row else 0
        conn.execute(
            "INSERT INTO inbox_marks (user_id, read_upto) VALUES (%s, %s) ON CONFLICT (user_id) "
            "DO UPDATE SET read_upto = GREATEST(inbox_marks.read_upto, excluded.read_upto)",
            (user_id, upto),
        )
        conn.execute(
            "UPDATE receipts SET read = TRUE, read_at = %s WHERE user_id = %s AND read = FALSE "
            "AND event_id <= %s",
            (now, user_id, upto),
        )
        return {"updated": count, "upto": upto}
    cur = conn.execute(
        "INSERT INTO receipts (user_id, event_id, read, read_at, seen_at) "
        f"SELECT %s, e.id, TRUE, %s, %s {base} FOR KEY SHARE OF e "
        "ON CONFLICT (user_id, event_id) DO UPDATE SET read = TRUE, "
        "read_at = excluded.read_at, seen_at = COALESCE(receipts.seen_at, excluded.seen_at)",
        [user_id, now, now, user_id, *params],
    )
    return {"updated": cur.rowcount, "upto": upto}


class PostgresInboxStore(InboxStore):
    """The inbox role's writes; compose with ``PostgresEventStore`` (first in the
    bases: it gives ``_run`` and ``count``)."""

    if TYPE_CHECKING:

        async def _run(self, fn: Callable[[Conn], T]) -> T: ...

    async def set_state(
        self,
        user_id: int,
        event_ids: list[int],
        state: str,
        visibility: Visibility,
        action: str | None = None,
    ) -> list[tuple[int, str]]:
        sql = _STATE_SQL[state]
        if visibility.empty or not event_ids:
            return []

        def fn(conn: Conn) -> list[tuple[int, str]]:
            params: list[Any] = [list(event_ids)]
            where = "e.id = ANY(%s)"
            vis = visibility_sql(visibility, params)
            if vis:
                where += " AND " + vis
            with conn.transaction():
                found = [
                    (int(r[0]), str(r[1]))
                    for r in conn.execute(
                        f"SELECT e.id, e.topic FROM events e WHERE {where} ORDER BY e.id "
                        "FOR KEY SHARE",
                        params,
                    )
                ]
                if found:
                    now = now_rfc3339()
                    with conn.cursor() as cur:
                        cur.executemany(
                            sql, [_state_params(state, user_id, i, now, action) for i, _ in found]
                        )
            return found

        return await self._run(fn)

    async def read_all(self, query: HistoryQuery) -> dict[str, int]:
        if query.visibility.empty:
            return {"updated": 0, "upto": 0}

        def fn(conn: Conn) -> dict[str, int]:
            with conn.transaction():
                return _read_all(conn, query)

        return await self._run(fn)


__all__ = ["PostgresInboxStore"]
