"""SQLite store: WAL, one group-committing writer thread, a pool of readers."""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson
import trio

from ..acl import Grant, Visibility
from ..errors import Conflict, NotFound, StoreUnavailable
from ..metrics import EVENTS_PUBLISHED, PRUNED
from ..models import EventIn, attachment_dict
from ..store import (
    AccountsImport,
    AclEntry,
    BackupInfo,
    CommitListener,
    Event,
    EventExport,
    EventExtras,
    HistoryQuery,
    ImportBatch,
    ImportItem,
    PublishResult,
    Signal,
    SignalListener,
    StorageInfo,
    Store,
    Token,
    User,
    decode_groups,
    encode_groups,
)
from ..timeutil import format_ts, now_rfc3339
from .attachments import SQLiteAttachmentStore
from .delivery import DeliveryStore, enqueue_deliveries, load_preferences
from .hooks import SQLiteHookStore
from .limits import SQLiteLimitStore
from .maintenance import backup_file, checkpoint, delete_events, quick_check
from .queries import (
    EVENT_COLUMNS,
    SELECT_EVENT,
    SELECT_STATE,
    event_from_row,
    event_with_state,
    history_sql,
    history_where,
    topics_sql,
    unread_sql,
    visibility_sql,
)
from .schema import migrate
from .transfer import SQLiteExport, import_accounts, import_items
from .writer import Writer

log = logging.getLogger("notifyd.store")
T = TypeVar("T")

_INSERT_EVENT = (
    f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}, publisher_id) "
    f"VALUES ({', '.join('?' * (len(EVENT_COLUMNS) + 1))})"
)
_dumps = orjson.dumps
WAL_SIZE_LIMIT = 16 * 1024 * 1024
#: WAL pages after which a commit on the writer checkpoints by itself. The
#: housekeeping checkpointer (``checkpoint``, every second, on its own connection)
#: normally keeps the WAL far below this; it is the safety net, not the rule.
WAL_AUTOCHECKPOINT_PAGES = 10_000


def connect(path: str, synchronous: str = "FULL", readonly: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
    conn.execute("PRAGMA busy_timeout = 10000")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA foreign_keys = ON")
    if readonly:
        conn.execute("PRAGMA query_only = ON")
    return conn


def _event_row(
    ev: EventIn, event_id: int, created_at: str, publisher_id: int
) -> tuple[tuple[Any, ...], Event]:
    actions = [a.model_dump(exclude_none=True) for a in ev.actions]
    d: Event = {
        "id": event_id,
        "topic": ev.topic,
        "title": ev.title,
        "body": ev.body,
        "format": ev.format,
        "priority": ev.priority,
        "category": ev.category,
        "tags": ev.tags,
        "click": ev.click,
        "icon": ev.icon,
        "image": ev.image,
        "actions": actions,
        "sensitive": ev.sensitive,
        "collapse_key": ev.collapse_key,
        "deliver_at": ev.deliver_at,
        "expires_at": ev.expires_at,
        "created_at": created_at,
        "attachment": attachment_dict(ev.attachment),
    }
    att = d["attachment"]
    row = (
        event_id, ev.topic, ev.title, ev.body, ev.format, ev.priority, ev.category,
        _dumps(ev.tags).decode() if ev.tags else None, ev.click, ev.icon, ev.image,
        _dumps(actions).decode() if actions else None, int(ev.sensitive), ev.collapse_key,
        ev.deliver_at, ev.expires_at, created_at,
        None if att is None else _dumps(att).decode(), publisher_id,
    )  # fmt: skip
    return row, d


def _insert_events(
    conn: sqlite3.Connection, items: list[tuple[EventIn, int]], now: float
) -> list[Event]:
    """Insert events with ids assigned here, in order; apply collapse keys; write
    their outbox rows."""
    if not items:
        return []
    created_at = format_ts(now)
    seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    next_id = (seq[0] if seq else 0) + 1
    rows, events = [], []
    for offset, (ev, publisher_id) in enumerate(items):
        row, d = _event_row(ev, next_id + offset, created_at, publisher_id)
        rows.append(row)
        events.append(d)
    conn.executemany(_INSERT_EVENT, rows)
    # Full-text index in the same transaction (search is never behind), but in
    # one statement: far cheaper than a trigger firing once per row.
    conn.execute(
        "INSERT INTO events_fts (rowid, title, body) "
        "SELECT id, title, body FROM events WHERE id BETWEEN ? AND ?",
        (next_id, next_id + len(rows) - 1),
    )
    extras = [
        (d["id"], ev._token_id, None if ev._extras is None else _dumps(ev._extras).decode())
        for (ev, _), d in zip(items, events, strict=True)
        if ev._token_id is not None or ev._extras is not None
    ]
    if extras:
        conn.executemany(
            "INSERT INTO event_extras (event_id, token_id, extras) VALUES (?, ?, ?)", extras
        )
    for d in events:
        if d["collapse_key"] is not None:
            conn.execute(
                "UPDATE events SET superseded_by = ? WHERE topic = ? AND collapse_key = ? "
                "AND superseded_by IS NULL AND id < ?",
                (d["id"], d["topic"], d["collapse_key"], d["id"]),
            )
    enqueue_deliveries(conn, events, now)
    return events


def _cancel_scheduled(conn: sqlite3.Connection, topic: str, collapse_key: str) -> int:
    """A newer event with the same collapse key replaces a scheduled one that is not
    out yet: it is never released (ntfy's "updating scheduled notifications")."""
    return conn.execute(
        "DELETE FROM scheduled WHERE json_extract(payload, '$.topic') = ? "
        "AND json_extract(payload, '$.collapse_key') = ?",
        (topic, collapse_key),
    ).rowcount


@dataclass
class _PublishRequest:
    events: list[EventIn]
    publisher_id: int
    key: str | None
    batch: bool
    now: float


def _publish_many(conn: sqlite3.Connection, requests: list[_PublishRequest]) -> list[PublishResult]:
    """Store the events of several publish requests with one insert and one index
    update (the writer merges concurrent publishes into one call)."""
    now_ts = max(r.now for r in requests)
    now = format_ts(now_ts)
    results: list[PublishResult | None] = []
    slots: list[list[tuple[str, Any]]] = []  # per request: ("e", index) | ("s", event)
    immediate: list[tuple[EventIn, int]] = []
    keys: dict[tuple[int, str], int] = {}  # idempotency keys used earlier in this call
    for n, req in enumerate(requests):
        if req.key is not None:
            earlier = keys.get((req.publisher_id, req.key))
            if earlier is not None:
                results.append(None)
                slots.append([("same", earlier)])
                continue
            hit = conn.execute(
                "SELECT event_ids, batch FROM idempotency WHERE user_id = ? AND key = ?",
                (req.publisher_id, req.key),
            ).fetchone()
            if hit is not None:
                items = orjson.loads(hit[0])
                results.append(PublishResult(events=items, replayed=True, batch=bool(hit[1])))
                slots.append([])
                continue
            keys[(req.publisher_id, req.key)] = n
        mine: list[tuple[str, Any]] = []
        for ev in req.events:
            if ev.collapse_key is not None:
                _cancel_scheduled(conn, ev.topic, ev.collapse_key)
            if ev.deliver_at is not None and ev.deliver_at > now:
                cur = conn.execute(
                    "INSERT INTO scheduled (deliver_at, publisher_id, payload, created_at) "
                    "VALUES (?, ?, ?, ?)",
                    (ev.deliver_at, req.publisher_id, ev.model_dump_json(), now),
                )
                _, d = _event_row(ev, 0, now, req.publisher_id)
                d.update(id=None, scheduled_id=cur.lastrowid, status="scheduled")
                mine.append(("s", d))
            else:
                mine.append(("e", len(immediate)))
                immediate.append((ev, req.publisher_id))
        results.append(None)
        slots.append(mine)
    stored = _insert_events(conn, immediate, now_ts)
    out: list[PublishResult] = []
    for n, req in enumerate(requests):
        done = results[n]
        if done is not None:
            out.append(done)
            continue
        if slots[n] and slots[n][0][0] == "same":
            first = out[slots[n][0][1]]
            out.append(PublishResult(events=first.events, replayed=True, batch=first.batch))
            continue
        items = [stored[v] if kind == "e" else v for kind, v in slots[n]]
        result = PublishResult(
            events=items,
            batch=req.batch,
            scheduled=[v for kind, v in slots[n] if kind == "s"],
            new_events=[stored[v] for kind, v in slots[n] if kind == "e"],
        )
        if req.key is not None:
            conn.execute(
                "INSERT INTO idempotency (user_id, key, event_ids, batch, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (req.publisher_id, req.key, _dumps(items).decode(), int(req.batch), now),
            )
        out.append(result)
    return out


class _Readers:
    """A fixed pool of read-only connections used from worker threads."""

    def __init__(self, path: str, size: int) -> None:
        self._path = path
        self._pool: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._all: list[sqlite3.Connection] = []
        self.limiter = trio.CapacityLimiter(size)
        for _ in range(size):
            conn = connect(path, readonly=True)
            self._all.append(conn)
            self._pool.put(conn)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            conn = self._pool.get()
            try:
                return fn(conn)
            finally:
                self._pool.put(conn)

        return await trio.to_thread.run_sync(call, limiter=self.limiter)

    def close(self) -> None:
        for conn in self._all:
            conn.close()


def _user(row: tuple[Any, ...]) -> User:
    return User(
        id=row[0], name=row[1], role=row[2], tz=row[3] or "UTC", created_at=row[4],
        has_password=row[5] is not None,
    )  # fmt: skip


_USER_COLS = "id, name, role, tz, created_at, password_hash"
#: what a user owns, in the order it is deleted with them (children before parents).
#: deliveries has no user_id index (publishing would pay for it on every row); the
#: scan costs some 30 ms per million rows, once per removed user.
_USER_TABLES = (
    "deliveries", "channels", "preferences", "sessions", "tokens", "acl", "receipts",
    "inbox_marks", "idempotency",
)  # fmt: skip
_TOKEN_SELECT = (
    "SELECT t.id, t.user_id, u.name, t.prefix, t.label, t.scopes, t.topics, t.created_at, "
    "t.last_used_at FROM tokens t JOIN users u ON u.id = t.user_id"
)


def _token(row: tuple[Any, ...]) -> Token:
    return Token(
        id=row[0], user_id=row[1], user=row[2], prefix=row[3], label=row[4],
        scopes=tuple(s for s in row[5].split(",") if s), topics=row[6], created_at=row[7],
        last_used_at=row[8],
    )  # fmt: skip


def _watermark(conn: sqlite3.Connection, user_id: int) -> int:
    row = conn.execute("SELECT read_upto FROM inbox_marks WHERE user_id = ?", (user_id,)).fetchone()
    return row[0] if row else 0


_STATE_SQL = {
    "read": (
        "INSERT INTO receipts (user_id, event_id, read, read_at, seen_at) VALUES (?, ?, 1, ?, ?) "
        "ON CONFLICT (user_id, event_id) DO UPDATE SET read = 1, read_at = excluded.read_at, "
        "seen_at = COALESCE(seen_at, excluded.seen_at)"
    ),
    "unread": (
        "INSERT INTO receipts (user_id, event_id, read) VALUES (?, ?, 0) "
        "ON CONFLICT (user_id, event_id) DO UPDATE SET read = 0, read_at = NULL"
    ),
    "seen": (
        "INSERT INTO receipts (user_id, event_id, seen_at) VALUES (?, ?, ?) "
        "ON CONFLICT (user_id, event_id) DO UPDATE SET seen_at = COALESCE(seen_at, excluded.seen_at)"
    ),
    "archive": (
        "INSERT INTO receipts (user_id, event_id, archived_at) VALUES (?, ?, ?) "
        "ON CONFLICT (user_id, event_id) DO UPDATE SET archived_at = excluded.archived_at"
    ),
    "unarchive": (
        "INSERT INTO receipts (user_id, event_id) VALUES (?, ?) "
        "ON CONFLICT (user_id, event_id) DO UPDATE SET archived_at = NULL"
    ),
    "click": (
        "INSERT INTO receipts (user_id, event_id, read, read_at, seen_at, clicked_at, action) "
        "VALUES (?, ?, 1, ?, ?, ?, ?) ON CONFLICT (user_id, event_id) DO UPDATE SET read = 1, "
        "read_at = COALESCE(read_at, excluded.read_at), seen_at = COALESCE(seen_at, excluded.seen_at), "
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


class SQLiteStore(DeliveryStore, SQLiteLimitStore, SQLiteHookStore, SQLiteAttachmentStore, Store):
    """The SQLite engine (opened by :func:`notifyd.core.storage.open_store`)."""

    engine = "sqlite"

    def __init__(
        self,
        path: str | Path,
        synchronous: str = "FULL",
        readers: int = 4,
        clock: Callable[[], float] = time.time,
    ) -> None:
        #: wall clock of the store (stamps events and plans deliveries); tests
        #: pass a MockClock-driven one
        self.clock = clock
        self.path = str(path)
        self._checkpointed = 0  # the log's mtime when it was last checkpointed
        self.synchronous = synchronous.upper()
        self._n_readers = readers
        self._listeners: list[CommitListener] = []
        self._signal_listeners: list[SignalListener] = []
        self._writer = Writer(self._connect_writer)
        self._readers: _Readers | None = None

    def _connect_writer(self) -> sqlite3.Connection:
        conn = connect(self.path, self.synchronous)
        # after a large delete (retention) the WAL grew; give the space back once a
        # checkpoint has copied it all, instead of keeping the file at its peak
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        # checkpoints run beside the writer, not inside some publish's commit
        conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
        migrate(conn)
        return conn

    async def start(self) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        await self._writer.start()
        self._readers = _Readers(self.path, self._n_readers)

    async def close(self) -> None:
        await self._writer.stop()
        if self._readers is not None:
            self._readers.close()

    def add_commit_listener(self, listener: CommitListener) -> None:
        self._listeners.append(listener)

    def add_signal_listener(self, listener: SignalListener) -> None:
        self._signal_listeners.append(listener)

    def signal(self, message: Signal) -> None:
        # one process writes this database: its listeners are all there are
        for listener in self._signal_listeners:
            listener(message)

    def _emit(self, events: list[Event]) -> None:
        if not events:
            return
        EVENTS_PUBLISHED.inc(len(events))
        for listener in self._listeners:
            listener(events)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        assert self._readers is not None, "store not started"
        return await self._readers.run(fn)

    async def write(
        self, fn: Callable[[sqlite3.Connection], T], on_commit: Callable[[T], None] | None = None
    ) -> T:
        return await self._writer.submit(fn, on_commit)

    # -- events ---------------------------------------------------------------

    async def publish(
        self,
        events: list[EventIn],
        publisher_id: int,
        idempotency_key: str | None = None,
        batch: bool = False,
    ) -> PublishResult:
        request = _PublishRequest(events, publisher_id, idempotency_key, batch, self.clock())
        return await self._writer.submit_merged(
            _publish_many, request, lambda r: self._emit(r.new_events)
        )

    async def release_due(self, now: float, limit: int = 500) -> int:
        due_at = format_ts(now)

        def fn(conn: sqlite3.Connection) -> list[Event]:
            rows = conn.execute(
                "SELECT id, publisher_id, payload FROM scheduled WHERE deliver_at <= ? "
                "ORDER BY deliver_at, id LIMIT ?",
                (due_at, limit),
            ).fetchall()
            if not rows:
                return []
            items = [(EventIn.model_validate_json(r[2]), r[1]) for r in rows]
            conn.executemany("DELETE FROM scheduled WHERE id = ?", [(r[0],) for r in rows])
            return _insert_events(conn, items, self.clock())

        released = await self.write(fn, self._emit)
        return len(released)

    async def get_event(self, event_id: int, user_id: int) -> Event | None:
        def fn(conn: sqlite3.Connection) -> Event | None:
            row = conn.execute(
                f"SELECT {SELECT_EVENT}, {SELECT_STATE} FROM events e LEFT JOIN receipts r "
                "ON r.user_id = ? AND r.event_id = e.id WHERE e.id = ?",
                (user_id, event_id),
            ).fetchone()
            return None if row is None else event_with_state(row, _watermark(conn, user_id))

        return await self._read(fn)

    async def history(self, query: HistoryQuery) -> list[Event]:
        if query.visibility.empty:
            return []

        def fn(conn: sqlite3.Connection) -> list[Event]:
            w = _watermark(conn, query.user_id)
            prefs = load_preferences(conn, [query.user_id]).get(query.user_id)
            top = conn.execute("SELECT max(id) FROM events").fetchone()[0] or 0
            rows: list[tuple[Any, ...]] = []
            for sql, params in history_sql(query, now_rfc3339(), w, prefs, top):
                rows += conn.execute(sql, [*params, query.limit - len(rows)]).fetchall()
                if len(rows) >= query.limit:
                    break
            return [event_with_state(row, w) for row in rows]

        return await self._read(fn)

    async def count(self, query: HistoryQuery) -> int:
        if query.visibility.empty:
            return 0

        def fn(conn: sqlite3.Connection) -> int:
            w = _watermark(conn, query.user_id)
            prefs = load_preferences(conn, [query.user_id]).get(query.user_id)
            where, params = history_where(query, now_rfc3339(), w, prefs)
            sql = (
                "SELECT count(*) FROM events e LEFT JOIN receipts r "
                f"ON r.user_id = ? AND r.event_id = e.id WHERE {where}"
            )
            count: int = conn.execute(sql, [query.user_id, *params]).fetchone()[0]
            return count

        return await self._read(fn)

    async def events_after(
        self,
        cursor: int,
        upto: int,
        visibility: Visibility,
        topics: tuple[str, ...] | None,
        limit: int,
    ) -> list[Event]:
        if visibility.empty:
            return []

        def fn(conn: sqlite3.Connection) -> list[Event]:
            params: list[Any] = [cursor, upto, now_rfc3339()]
            where = ["e.id > ?", "e.id <= ?", "(e.expires_at IS NULL OR e.expires_at > ?)"]
            vis = visibility_sql(visibility, params)
            if vis:
                where.append(vis)
            if topics:
                where.append(topics_sql(topics, params))
            sql = f"SELECT {SELECT_EVENT} FROM events e WHERE {' AND '.join(where)} ORDER BY e.id LIMIT ?"
            return [event_from_row(r) for r in conn.execute(sql, [*params, limit])]

        return await self._read(fn)

    async def last_event_id(self) -> int:
        def fn(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
            return row[0] if row else 0

        return await self._read(fn)

    async def cursor_at(self, created_at: str) -> int:
        def fn(conn: sqlite3.Connection) -> int:
            # ids are assigned in commit order, so created_at grows with the id
            row = conn.execute(
                "SELECT id FROM events WHERE created_at >= ? ORDER BY created_at, id LIMIT 1",
                (created_at,),
            ).fetchone()
            if row is not None:
                before: int = row[0] - 1
                return before
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
            return row[0] if row else 0

        return await self._read(fn)

    async def cancel_scheduled(self, topic: str, collapse_key: str) -> int:
        return await self.write(lambda conn: _cancel_scheduled(conn, topic, collapse_key))

    async def event_extras(self, event_ids: list[int]) -> dict[int, EventExtras]:
        ids = list(dict.fromkeys(event_ids))
        if not ids:
            return {}

        def fn(conn: sqlite3.Connection) -> dict[int, EventExtras]:
            out: dict[int, EventExtras] = {}
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                rows = conn.execute(
                    "SELECT event_id, token_id, extras FROM event_extras "
                    f"WHERE event_id IN ({','.join('?' * len(chunk))})",
                    chunk,
                )
                for event_id, token_id, extras in rows:
                    out[event_id] = EventExtras(
                        token_id, None if extras is None else orjson.loads(extras)
                    )
            return out

        return await self._read(fn)

    async def set_state(
        self,
        user_id: int,
        event_ids: list[int],
        state: str,
        visibility: Visibility,
        action: str | None = None,
    ) -> list[tuple[int, str]]:
        sql = _STATE_SQL[state]
        if visibility.empty:
            return []

        def fn(conn: sqlite3.Connection) -> list[tuple[int, str]]:
            params: list[Any] = list(event_ids)
            where = f"e.id IN ({','.join('?' * len(event_ids))})"
            vis = visibility_sql(visibility, params)
            if vis:
                where += " AND " + vis
            found = [
                (r[0], r[1])
                for r in conn.execute(
                    f"SELECT e.id, e.topic FROM events e WHERE {where} ORDER BY e.id", params
                )
            ]
            now = now_rfc3339()
            conn.executemany(sql, [_state_params(state, user_id, i, now, action) for i, _ in found])
            return found

        return await self.write(fn) if event_ids else []

    async def read_all(self, query: HistoryQuery) -> dict[str, int]:
        if query.visibility.empty:
            return {"updated": 0, "upto": 0}

        def fn(conn: sqlite3.Connection) -> dict[str, int]:
            w = _watermark(conn, query.user_id)
            now = now_rfc3339()
            seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
            upto = seq[0] if seq else 0
            unread_q = HistoryQuery(**{**query.__dict__, "unread": True, "before": upto + 1})
            prefs = load_preferences(conn, [query.user_id]).get(query.user_id)
            where, params = history_where(unread_q, now, w, prefs)
            base = (
                "FROM events e LEFT JOIN receipts r ON r.user_id = ? AND r.event_id = e.id "
                f"WHERE {where}"
            )
            if (
                not query.filtered
                and query.archived == "exclude"
                and query.visibility.everything
                and query.visibility.also_matching is None
            ):
                count = conn.execute(
                    f"SELECT count(*) {base}", [query.user_id, *params]
                ).fetchone()[0]
                conn.execute(
                    "INSERT INTO inbox_marks (user_id, read_upto) VALUES (?, ?) ON CONFLICT (user_id) "
                    "DO UPDATE SET read_upto = max(read_upto, excluded.read_upto)",
                    (query.user_id, upto),
                )
                conn.execute(
                    "UPDATE receipts SET read = 1, read_at = ? WHERE user_id = ? AND read = 0 "
                    "AND event_id <= ?",
                    (now, query.user_id, upto),
                )
                return {"updated": count, "upto": upto}
            cur = conn.execute(
                "INSERT INTO receipts (user_id, event_id, read, read_at, seen_at) "
                f"SELECT ?, e.id, 1, ?, ? {base} ON CONFLICT (user_id, event_id) DO UPDATE SET "
                "read = 1, read_at = excluded.read_at, seen_at = COALESCE(seen_at, excluded.seen_at)",
                [query.user_id, now, now, query.user_id, *params],
            )
            return {"updated": cur.rowcount, "upto": upto}

        return await self.write(fn)

    # -- housekeeping --------------------------------------------------------

    async def _delete_events(self, where: str, order: str, value: str, limit: int) -> int:
        def fn(conn: sqlite3.Connection) -> int:
            ids = [
                r[0]
                for r in conn.execute(
                    f"SELECT id FROM events WHERE {where} ORDER BY {order} LIMIT ?", (value, limit)
                )
            ]
            if ids:
                delete_events(conn, ids)
            return len(ids)

        n = await self.write(fn)
        PRUNED.inc(n)
        return n

    async def prune(self, created_before: str, limit: int) -> int:
        # in created_at order, through its index: the search ends at the first event
        # that is young enough instead of scanning the table when nothing is old
        return await self._delete_events("created_at < ?", "created_at", created_before, limit)

    async def drop_expired(self, now: str, limit: int) -> int:
        return await self._delete_events(
            "expires_at IS NOT NULL AND expires_at <= ?", "expires_at", now, limit
        )

    async def after_prune(self) -> None:
        await self.checkpoint()

    async def checkpoint(self) -> None:
        # An idle daemon's log has not changed since the last pass: no connection,
        # no I/O (housekeeping calls this every second).
        try:
            stamp = os.stat(self.path + "-wal").st_mtime_ns
        except FileNotFoundError:
            return
        if stamp == self._checkpointed:
            return
        await trio.to_thread.run_sync(checkpoint, self.path)
        self._checkpointed = stamp

    async def forget_idempotency_keys(self, created_before: str) -> int:
        return await self.write(
            lambda c: (
                c.execute(
                    "DELETE FROM idempotency WHERE created_at < ?", (created_before,)
                ).rowcount
            )
        )

    # -- accounts --------------------------------------------------------------

    async def create_user(self, name: str, role: str, password_hash: str | None) -> User:
        def fn(conn: sqlite3.Connection) -> User:
            try:
                cur = conn.execute(
                    "INSERT INTO users (name, role, password_hash, tz, created_at) VALUES (?, ?, ?, 'UTC', ?)",
                    (name, role, password_hash, now_rfc3339()),
                )
            except sqlite3.IntegrityError:
                raise Conflict(f"a user named {name!r} exists already", field="name") from None
            row = conn.execute(
                f"SELECT {_USER_COLS} FROM users WHERE id = ?", (cur.lastrowid,)
            ).fetchone()
            return _user(row)

        return await self.write(fn)

    async def list_users(self) -> list[User]:
        return await self._read(
            lambda c: [_user(r) for r in c.execute(f"SELECT {_USER_COLS} FROM users ORDER BY name")]
        )

    async def get_user(self, name: str) -> User | None:
        def fn(conn: sqlite3.Connection) -> User | None:
            row = conn.execute(f"SELECT {_USER_COLS} FROM users WHERE name = ?", (name,)).fetchone()
            return None if row is None else _user(row)

        return await self._read(fn)

    async def get_user_by_id(self, user_id: int) -> User | None:
        def fn(conn: sqlite3.Connection) -> User | None:
            row = conn.execute(
                f"SELECT {_USER_COLS} FROM users WHERE id = ?", (user_id,)
            ).fetchone()
            return None if row is None else _user(row)

        return await self._read(fn)

    async def password_hash(self, name: str) -> tuple[int, str] | None:
        def fn(conn: sqlite3.Connection) -> tuple[int, str] | None:
            row = conn.execute(
                "SELECT id, password_hash FROM users WHERE name = ? AND password_hash IS NOT NULL",
                (name,),
            ).fetchone()
            return None if row is None else (row[0], row[1])

        return await self._read(fn)

    async def set_password(
        self, name: str, password_hash: str, keep_session: str | None = None
    ) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT id FROM users WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise NotFound(f"no user named {name!r}", field="name")
            conn.execute("UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, row[0]))
            conn.execute(
                "DELETE FROM sessions WHERE user_id = ? AND hash IS NOT ?", (row[0], keep_session)
            )

        await self.write(fn)

    async def delete_user(self, name: str) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT id, role FROM users WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise NotFound(f"no user named {name!r}", field="name")
            user_id, role = row
            other_admin = conn.execute(
                "SELECT 1 FROM users WHERE role = 'admin' AND id != ? LIMIT 1", (user_id,)
            ).fetchone()
            if role == "admin" and other_admin is None:
                raise Conflict(
                    f"{name!r} is the last admin; make another user an admin first", field="name"
                )
            # Pending and past deliveries to the user's channels go first (they point
            # at the channels), then the channels (Web Push subscriptions included)
            # and the rest; all in this one transaction.
            conn.execute(
                "DELETE FROM deliveries WHERE channel_id IN "
                "(SELECT id FROM channels WHERE user_id = ?)",
                (user_id,),
            )
            for table in _USER_TABLES:
                conn.execute(f"DELETE FROM {table} WHERE user_id = ?", (user_id,))
            # Tables added by later migrations that hold a user_id (nothing in them
            # may outlive its user either), so removal stays complete as they come.
            for (table,) in conn.execute(
                "SELECT m.name FROM sqlite_master m WHERE m.type = 'table' AND m.name NOT IN "
                f"({', '.join('?' * len(_USER_TABLES))}) AND m.name != 'users' AND EXISTS "
                "(SELECT 1 FROM pragma_table_info(m.name) p WHERE p.name = 'user_id')",
                _USER_TABLES,
            ).fetchall():
                conn.execute(f'DELETE FROM "{table}" WHERE user_id = ?', (user_id,))
            conn.execute("DELETE FROM users WHERE id = ?", (user_id,))

        await self.write(fn)

    async def create_token(
        self,
        user_id: int,
        token_hash: str,
        prefix: str,
        scopes: tuple[str, ...],
        topics: str | None,
        label: str | None,
    ) -> Token:
        def fn(conn: sqlite3.Connection) -> Token:
            cur = conn.execute(
                "INSERT INTO tokens (user_id, hash, prefix, label, scopes, topics, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (user_id, token_hash, prefix, label, ",".join(scopes), topics, now_rfc3339()),
            )
            return _token(
                conn.execute(f"{_TOKEN_SELECT} WHERE t.id = ?", (cur.lastrowid,)).fetchone()
            )

        return await self.write(fn)

    async def token_by_hash(self, token_hash: str) -> Token | None:
        def fn(conn: sqlite3.Connection) -> Token | None:
            row = conn.execute(f"{_TOKEN_SELECT} WHERE t.hash = ?", (token_hash,)).fetchone()
            return None if row is None else _token(row)

        return await self._read(fn)

    async def create_session(
        self,
        user_id: int,
        secret_hash: str,
        user_agent: str | None,
        expires_at: float,
        groups: tuple[str, ...] = (),
    ) -> None:
        group_names = encode_groups(groups)
        await self.write(
            lambda c: c.execute(
                "INSERT INTO sessions (user_id, hash, user_agent, created_at, expires_at, "
                "group_names) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    user_id,
                    secret_hash,
                    user_agent,
                    now_rfc3339(),
                    format_ts(expires_at),
                    group_names,
                ),
            )  # fmt: skip
        )

    async def session_user(self, secret_hash: str, now: float) -> int | None:
        found = await self.session(secret_hash, now)
        return None if found is None else found[0]

    async def session(self, secret_hash: str, now: float) -> tuple[int, tuple[str, ...]] | None:
        def fn(conn: sqlite3.Connection) -> tuple[int, tuple[str, ...]] | None:
            row = conn.execute(
                "SELECT user_id, group_names FROM sessions WHERE hash = ? AND expires_at > ?",
                (secret_hash, format_ts(now)),
            ).fetchone()
            return None if row is None else (row[0], decode_groups(row[1]))

        return await self._read(fn)

    async def delete_session(self, secret_hash: str) -> None:
        await self.write(lambda c: c.execute("DELETE FROM sessions WHERE hash = ?", (secret_hash,)))

    async def prune_sessions(self, now: float) -> int:
        return await self.write(
            lambda c: (
                c.execute("DELETE FROM sessions WHERE expires_at <= ?", (format_ts(now),)).rowcount
            )
        )

    async def touch_tokens(self, uses: list[tuple[int, float]]) -> None:
        rows = [(format_ts(ts), token_id) for token_id, ts in uses]
        await self.write(
            lambda c: c.executemany("UPDATE tokens SET last_used_at = ? WHERE id = ?", rows)
        )

    async def list_tokens(self, user_id: int | None = None) -> list[Token]:
        def fn(conn: sqlite3.Connection) -> list[Token]:
            if user_id is None:
                rows = conn.execute(f"{_TOKEN_SELECT} ORDER BY t.id")
            else:
                rows = conn.execute(
                    f"{_TOKEN_SELECT} WHERE t.user_id = ? ORDER BY t.id", (user_id,)
                )
            return [_token(r) for r in rows]

        return await self._read(fn)

    async def revoke_token(self, token_id: int, user_id: int | None = None) -> int:
        def fn(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT user_id FROM tokens WHERE id = ?", (token_id,)).fetchone()
            if user_id is None:
                cur = conn.execute("DELETE FROM tokens WHERE id = ?", (token_id,))
            else:
                cur = conn.execute(
                    "DELETE FROM tokens WHERE id = ? AND user_id = ?", (token_id, user_id)
                )
            if cur.rowcount == 0:
                raise NotFound(f"no token with id {token_id}", field="id")
            owner: int = row[0]
            return owner

        return await self.write(fn)

    async def grants(self, user_id: int) -> tuple[Grant, ...]:
        def fn(conn: sqlite3.Connection) -> tuple[Grant, ...]:
            rows = conn.execute(
                "SELECT pattern, read, write FROM acl WHERE user_id = ? ORDER BY id", (user_id,)
            )
            return tuple(Grant(r[0], bool(r[1]), bool(r[2])) for r in rows)

        return await self._read(fn)

    async def grant(self, user: str, pattern: str, read: bool, write: bool) -> AclEntry:
        def fn(conn: sqlite3.Connection) -> AclEntry:
            row = conn.execute("SELECT id FROM users WHERE name = ?", (user,)).fetchone()
            if row is None:
                raise NotFound(f"no user named {user!r}", field="user")
            conn.execute(
                "INSERT INTO acl (user_id, pattern, read, write, created_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (user_id, pattern) DO UPDATE SET read = excluded.read, write = excluded.write",
                (row[0], pattern, int(read), int(write), now_rfc3339()),
            )
            r = conn.execute(
                "SELECT id FROM acl WHERE user_id = ? AND pattern = ?", (row[0], pattern)
            ).fetchone()
            return AclEntry(id=r[0], user=user, pattern=pattern, read=read, write=write)

        return await self.write(fn)

    async def list_acl(self, user: str | None = None) -> list[AclEntry]:
        def fn(conn: sqlite3.Connection) -> list[AclEntry]:
            sql = "SELECT a.id, u.name, a.pattern, a.read, a.write FROM acl a JOIN users u ON u.id = a.user_id"
            rows = (
                conn.execute(sql + " WHERE u.name = ? ORDER BY a.id", (user,))
                if user is not None
                else conn.execute(sql + " ORDER BY u.name, a.id")
            )
            return [AclEntry(r[0], r[1], r[2], bool(r[3]), bool(r[4])) for r in rows]

        return await self._read(fn)

    async def revoke_acl(self, user: str, pattern: str) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                "DELETE FROM acl WHERE pattern = ? AND user_id = (SELECT id FROM users WHERE name = ?)",
                (pattern, user),
            )
            if cur.rowcount == 0:
                raise NotFound(f"user {user!r} has no grant for {pattern!r}", field="pattern")

        await self.write(fn)

    # -- operations (backup, integrity, export, import) -------------------------

    async def backup(
        self, dest: str, pages: int = 1024, progress: Callable[[int, int], None] | None = None
    ) -> BackupInfo:
        try:
            last_id, events = await trio.to_thread.run_sync(
                lambda: backup_file(self.path, dest, pages, progress)
            )
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(
                f"the backup failed: {exc} (it needs free space for one copy of the "
                "database in the data directory)",
                retry_after=60,
            ) from exc
        return BackupInfo(
            path=dest,
            bytes=Path(dest).stat().st_size,
            last_event_id=last_id,
            events=events,
            engine=self.engine,
            media_type="application/vnd.sqlite3",
            suffix=".db",
        )

    async def integrity_check(self, full: bool = False) -> list[str]:
        return await self._read(lambda conn: quick_check(conn, full))

    async def storage_info(self) -> StorageInfo:
        def sizes() -> tuple[int | None, int]:
            db, wal = Path(self.path), Path(self.path + "-wal")
            return (db.stat().st_size if db.exists() else None,
                    wal.stat().st_size if wal.exists() else 0)  # fmt: skip

        size, log_bytes = await trio.to_thread.run_sync(sizes)
        return StorageInfo(self.engine, self.path, size, log_bytes)

    async def open_export(self, topic: str | None, since: int | None) -> EventExport:
        export = SQLiteExport(lambda: connect(self.path, readonly=True), topic, since)
        await export.open()
        return export

    async def import_events(
        self, items: list[ImportItem], publisher_id: int, users: dict[str, int], before_id: int
    ) -> ImportBatch:
        return await self.write(
            lambda conn: import_items(conn, items, publisher_id, users, before_id),
            lambda batch: self._emit(batch.stored),
        )

    async def import_accounts(self, records: list[dict[str, Any]]) -> AccountsImport:
        done = await self.write(lambda conn: import_accounts(conn, records))
        if any(done.added.values()):
            self.signal({"kind": "rights", "user": None})
        return done


__all__ = ["SQLiteStore", "connect", "unread_sql"]
