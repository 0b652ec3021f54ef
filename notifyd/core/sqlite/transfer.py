"""Export and import of events with their read state, and of the installation
(users, tokens, grants, channels, preferences, inbound webhooks), in SQLite.

The record format and its validation live in :mod:`notifyd.core.transfer`; this
module only reads and writes rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
import trio

from ..acl import Visibility
from ..store import (
    AccountsImport,
    Event,
    EventExport,
    ExportSummary,
    ImportBatch,
    ImportItem,
    WatermarkReader,
)
from .queries import EVENT_COLUMNS, N_EVENT, SELECT_EVENT, event_from_row, visibility_sql

T = TypeVar("T")

_STATE_FIELDS = ("seen_at", "read_at", "archived_at", "clicked_at", "action")


def _filter_sql(topic: str | None, since: int | None, params: list[Any]) -> str:
    where = ["e.id > ?"]
    params.append(since or 0)
    if topic is not None:
        where.append("e.topic GLOB ?" if "*" in topic else "e.topic = ?")
        params.append(topic)
    return " AND ".join(where)


class SQLiteExport(EventExport):
    """One read-only connection holding a read transaction (a WAL snapshot) for
    as long as the export runs; its queries run in worker threads, one at a time."""

    def __init__(
        self, connect: Callable[[], sqlite3.Connection], topic: str | None, since: int | None
    ) -> None:
        self._connect = connect
        self._topic = topic
        self._since = since
        self._cursor = since or 0
        self._conn: sqlite3.Connection | None = None
        self._names: dict[int, str] = {}
        self._readers: list[WatermarkReader] = []
        self._lock = trio.Lock()

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        async with self._lock:
            assert self._conn is not None
            return await trio.to_thread.run_sync(fn, self._conn)

    async def open(self) -> None:
        self._conn = await trio.to_thread.run_sync(self._connect)
        try:
            self.summary = await self._run(self._start)
        except BaseException:
            await self.aclose()
            raise

    def _start(self, conn: sqlite3.Connection) -> ExportSummary:
        conn.execute("BEGIN")
        seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        last_id = seq[0] if seq else 0
        params: list[Any] = []
        where = _filter_sql(self._topic, self._since, params)
        count = conn.execute(f"SELECT count(*) FROM events e WHERE {where}", params).fetchone()[0]
        users = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT id, name, role FROM users")}
        self._names = {uid: name for uid, (name, _) in users.items()}
        grants: dict[int, list[str]] = {}
        for user_id, pattern in conn.execute("SELECT user_id, pattern FROM acl WHERE read = 1"):
            grants.setdefault(user_id, []).append(pattern)
        with_state: set[int] = set()
        for user_id, upto in conn.execute(
            "SELECT user_id, read_upto FROM inbox_marks WHERE read_upto > ?", (self._since or 0,)
        ).fetchall():
            if user_id not in users:
                continue
            admin = users[user_id][1] == "admin"
            reader = WatermarkReader(users[user_id][0], upto, admin, grants.get(user_id, []))
            vis_params: list[Any] = []
            vis = visibility_sql(
                Visibility(everything=admin, any_of=tuple(reader.patterns)), vis_params
            )
            sql = f"SELECT 1 FROM events e WHERE {where} AND e.id <= ?"
            if vis:
                sql += f" AND {vis}"
            if conn.execute(sql + " LIMIT 1", [*params, upto, *vis_params]).fetchone():
                self._readers.append(reader)
                with_state.add(user_id)
        rparams: list[Any] = []
        rwhere = _filter_sql(self._topic, self._since, rparams)
        for (user_id,) in conn.execute(
            "SELECT DISTINCT r.user_id FROM receipts r JOIN events e ON e.id = r.event_id "
            f"WHERE {rwhere} AND (r.read IS NOT NULL OR r.seen_at IS NOT NULL OR "
            "r.archived_at IS NOT NULL OR r.clicked_at IS NOT NULL)",
            rparams,
        ):
            if user_id in users:
                with_state.add(user_id)
        listed = sorted(users[uid] for uid in with_state)
        return ExportSummary(events=count, last_event_id=last_id, users=listed)

    async def next_page(self, limit: int = 500) -> list[Event]:
        return await self._run(lambda conn: self._page(conn, limit))

    def _page(self, conn: sqlite3.Connection, limit: int) -> list[Event]:
        params: list[Any] = []
        where = _filter_sql(self._topic, self._cursor, params)
        rows = conn.execute(
            f"SELECT {SELECT_EVENT}, e.superseded_by FROM events e WHERE {where} "
            "ORDER BY e.id LIMIT ?",
            [*params, limit],
        ).fetchall()
        if not rows:
            return []
        events = []
        for row in rows:
            ev = event_from_row(row)
            ev["superseded"] = row[N_EVENT] is not None
            ev["state"] = {}
            events.append(ev)
        receipts: dict[int, dict[str, tuple[Any, ...]]] = {}
        for r in conn.execute(
            "SELECT event_id, user_id, read, seen_at, read_at, archived_at, clicked_at, action "
            "FROM receipts WHERE event_id BETWEEN ? AND ?",
            (events[0]["id"], events[-1]["id"]),
        ):
            name = self._names.get(r[1])
            if name is not None:
                receipts.setdefault(r[0], {})[name] = r[2:]
        for ev in events:
            mine = receipts.get(ev["id"], {})
            by_mark = {u.name for u in self._readers if u.reads(ev["id"], ev["topic"])}
            for name in sorted(mine.keys() | by_mark):
                entry: dict[str, Any] = {}
                got = mine.get(name)
                read = got[0] if got is not None else None
                if read is None and name in by_mark:
                    read = 1  # the user's "mark all read" watermark covers it
                if read is not None:
                    entry["read"] = bool(read)
                if got is not None:
                    for key, value in zip(_STATE_FIELDS, got[1:], strict=True):
                        if value is not None:
                            entry[key] = value
                if entry:
                    ev["state"][name] = entry
        self._cursor = events[-1]["id"]
        return events

    async def account_records(self) -> list[dict[str, Any]]:
        return await self._run(read_accounts)

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await trio.to_thread.run_sync(conn.close)


# -- the installation ----------------------------------------------------------------


def _json(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def read_accounts(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every user, token, grant, channel, preferences document and hook (with its id
    and secret), as the export's installation records (users by name), in that order."""
    out: list[dict[str, Any]] = []
    for name, role, pw, tz, created in conn.execute(
        "SELECT name, role, password_hash, tz, created_at FROM users ORDER BY id"
    ):
        out.append({"type": "user", "name": name, "role": role, "password_hash": pw,
                    "tz": tz or "UTC", "created_at": created})  # fmt: skip
    for row in conn.execute(
        "SELECT u.name, t.hash, t.prefix, t.label, t.scopes, t.topics, t.created_at, "
        "t.last_used_at, t.expires_at FROM tokens t JOIN users u ON u.id = t.user_id ORDER BY t.id"
    ):
        out.append({"type": "token", "user": row[0], "hash": row[1], "prefix": row[2],
                    "label": row[3], "scopes": [x for x in row[4].split(",") if x],
                    "topics": row[5], "created_at": row[6], "last_used_at": row[7],
                    "expires_at": row[8]})  # fmt: skip
    for row in conn.execute(
        "SELECT u.name, a.pattern, a.read, a.write, a.created_at FROM acl a "
        "JOIN users u ON u.id = a.user_id ORDER BY a.id"
    ):
        out.append({"type": "grant", "user": row[0], "pattern": row[1], "read": bool(row[2]),
                    "write": bool(row[3]), "created_at": row[4]})  # fmt: skip
    for row in conn.execute(
        "SELECT u.name, c.name, c.kind, c.config, c.enabled, c.created_at FROM channels c "
        "JOIN users u ON u.id = c.user_id ORDER BY c.id"
    ):
        out.append({"type": "channel", "user": row[0], "name": row[1], "kind": row[2],
                    "config": _json(row[3]), "enabled": bool(row[4]),
                    "created_at": row[5]})  # fmt: skip
    for row in conn.execute(
        "SELECT u.name, p.doc, p.updated_at FROM preferences p "
        "JOIN users u ON u.id = p.user_id ORDER BY u.id"
    ):
        out.append({"type": "preferences", "user": row[0], "doc": _json(row[1]),
                    "updated_at": row[2]})  # fmt: skip
    for row in conn.execute(
        "SELECT u.name, h.id, h.name, h.topic, h.template, h.options, h.secret, h.created_at, "
        "h.last_used_at FROM hooks h JOIN users u ON u.id = h.user_id ORDER BY u.id, h.name"
    ):
        out.append({"type": "hook", "user": row[0], "id": row[1], "name": row[2],
                    "topic": row[3], "template": row[4], "options": _json(row[5]),
                    "secret": row[6], "created_at": row[7],
                    "last_used_at": row[8]})  # fmt: skip
    return out


def import_accounts(conn: sqlite3.Connection, records: list[dict[str, Any]]) -> AccountsImport:
    """Write what is new among the validated installation ``records`` (in the
    writer's transaction), by the rules of :func:`notifyd.core.transfer.plan_accounts`."""
    from ..transfer import plan_accounts  # transfer imports the store's types

    plan = plan_accounts(read_accounts(conn), records)
    add = plan.insert
    conn.executemany(
        "INSERT INTO users (name, role, password_hash, tz, created_at) VALUES (?, ?, ?, ?, ?)",
        [(r["name"], r["role"], r["password_hash"], r["tz"], r["created_at"]) for r in add["user"]],
    )
    conn.executemany(
        "UPDATE users SET password_hash = ? WHERE name = ? AND password_hash IS NULL",
        [(pw, name) for name, pw in plan.passwords],
    )
    ids = {name: uid for uid, name in conn.execute("SELECT id, name FROM users")}
    conn.executemany(
        "INSERT INTO tokens (user_id, hash, prefix, label, scopes, topics, created_at, "
        "last_used_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(ids[r["user"]], r["hash"], r["prefix"], r["label"], ",".join(r["scopes"]), r["topics"],
          r["created_at"], r["last_used_at"], r["expires_at"]) for r in add["token"]],
    )  # fmt: skip
    conn.executemany(
        "INSERT INTO acl (user_id, pattern, read, write, created_at) VALUES (?, ?, ?, ?, ?)",
        [(ids[r["user"]], r["pattern"], int(r["read"]), int(r["write"]), r["created_at"])
         for r in add["grant"]],
    )  # fmt: skip
    conn.executemany(
        "INSERT INTO channels (user_id, name, kind, config, enabled, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [(ids[r["user"]], r["name"], r["kind"], orjson.dumps(r["config"]).decode(),
          int(r["enabled"]), r["created_at"]) for r in add["channel"]],
    )  # fmt: skip
    conn.executemany(
        "INSERT INTO preferences (user_id, doc, updated_at) VALUES (?, ?, ?)",
        [(ids[r["user"]], orjson.dumps(r["doc"]).decode(), r["updated_at"])
         for r in add["preferences"]],
    )  # fmt: skip
    conn.executemany(
        "INSERT INTO hooks (id, user_id, name, topic, template, options, secret, created_at, "
        "last_used_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(r["id"], ids[r["user"]], r["name"], r["topic"], r["template"],
          orjson.dumps(r["options"]).decode(), r["secret"], r["created_at"], r["last_used_at"])
         for r in add["hook"]],
    )  # fmt: skip
    return plan.result


_INSERT = (
    f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}, publisher_id, superseded_by) "
    f"VALUES ({', '.join('?' * (len(EVENT_COLUMNS) + 2))})"
)
_RECEIPT = (
    "INSERT INTO receipts (user_id, event_id, read, seen_at, read_at, archived_at, clicked_at, "
    "action) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (user_id, event_id) DO NOTHING"
)


def import_items(
    conn: sqlite3.Connection,
    items: list[ImportItem],
    publisher_id: int,
    users: dict[str, int],
    before_id: int,
) -> ImportBatch:
    """Insert what is new among ``items`` with fresh ids, in order, and their
    receipts — no outbox rows: imported events are history, not news."""
    out = ImportBatch()
    fresh: list[ImportItem] = []
    # what the target held at each created_at: one query per timestamp, not per
    # event (a batch publish shares one created_at among thousands of events)
    held: dict[str, dict[tuple[str, str, str], int]] = {}
    for item in items:
        ev = item.event
        at = held.get(item.created_at)
        if at is None:
            at = held[item.created_at] = {
                (r[0], r[1], r[2]): r[3]
                for r in conn.execute(
                    "SELECT topic, title, body, count(*) FROM events WHERE created_at = ? "
                    "AND id <= ? GROUP BY topic, title, body",
                    (item.created_at, before_id),
                )
            }
        present = at.get((ev["topic"], ev["title"], ev["body"]), 0)
        if present >= item.occurrence:
            out.skipped += 1
        else:
            fresh.append(item)
    if not fresh:
        return out
    seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    first = (seq[0] if seq else 0) + 1
    rows, receipts = [], []
    for offset, item in enumerate(fresh):
        ev = item.event
        event_id = first + offset
        stored: Event = {"id": event_id, **ev, "created_at": item.created_at}
        rows.append(
            (
                event_id, ev["topic"], ev["title"], ev["body"], ev["format"], ev["priority"],
                ev["category"], orjson.dumps(ev["tags"]).decode() if ev["tags"] else None,
                ev["click"], ev["icon"], ev["image"],
                orjson.dumps(ev["actions"]).decode() if ev["actions"] else None,
                int(ev["sensitive"]), ev["collapse_key"], ev["deliver_at"], ev["expires_at"],
                item.created_at,
                orjson.dumps(ev["attachment"]).decode() if ev.get("attachment") else None,
                publisher_id,
                # superseded by an event of the source; 0: hidden like any superseded one
                0 if item.superseded else None,
            )
        )  # fmt: skip
        out.stored.append(stored)
        for name, st in item.state.items():
            user_id = users.get(name)
            if user_id is None:
                continue
            read = st.get("read")
            receipts.append(
                (user_id, event_id, None if read is None else int(read),
                 *(st.get(k) for k in _STATE_FIELDS))
            )  # fmt: skip
    conn.executemany(_INSERT, rows)
    conn.execute(
        "INSERT INTO events_fts (rowid, title, body) "
        "SELECT id, title, body FROM events WHERE id BETWEEN ? AND ?",
        (first, first + len(rows) - 1),
    )
    conn.executemany(_RECEIPT, receipts)
    out.states = len(receipts)
    return out
