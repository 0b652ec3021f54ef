"""The operations role (:class:`~notifyd.core.store.OperationsStore`) on PostgreSQL.

:class:`PostgresOperationsStore` is a mixin composed with ``PostgresEventStore``,
whose connection pool, worker threads (``_run``), commit lock and commit
listeners it uses.

- ``backup``: not done by notifyd. A PostgreSQL database is backed up with the
  operator's tooling (``pg_dump``, base backups with WAL archiving); the call
  raises :class:`BackupUnsupported` (409), which the admin route and the CLI show.
- ``integrity_check``: what notifyd can check honestly: the schema version is the
  one this code migrates to, the sequencer's ``last_id`` is not below the highest
  event id (else new ids would collide), and no receipts or extras point at
  missing events. ``full=True`` also runs ``amcheck``'s ``bt_index_check`` on
  notifyd's B-tree indexes, but only when the ``amcheck`` extension is installed
  in the database (``storage_info().checks`` says whether it is); notifyd never
  installs it.
- ``checkpoint``: nothing: PostgreSQL checkpoints its WAL by itself.
- ``after_prune``: ``VACUUM (ANALYZE)`` of the tables a prune deletes from, on an
  autocommit connection of its own (VACUUM cannot run in a transaction), by one
  node at a time: the node that gets ``pg_try_advisory_lock(VACUUM_LOCK)`` does
  it, the others skip it (issue 15, guarantee 5).
- ``open_export``: one connection of its own in a ``REPEATABLE READ READ ONLY``
  transaction: every page reads the same snapshot. Same records as the SQLite
  engine (:class:`~notifyd.core.store.EventExport`).
- ``import_events``: one transaction holding the sequencer (the new ids follow
  every other node's), as the SQLite engine does it otherwise.
- ``account_records`` / ``import_accounts``: the installation (users, tokens,
  grants, channels, preferences, inbound webhooks with their ids and secrets), read in the export's snapshot, written in one
  transaction by the rules of :func:`notifyd.core.transfer.plan_accounts`; ids
  are mapped by name. The transaction takes ``ACCOUNTS_IMPORT_LOCK`` so that two
  nodes importing at once do not both insert the same user.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
import trio
from psycopg.types.json import Jsonb

from ..acl import Visibility
from ..errors import Conflict
from ..store import (
    AccountsImport,
    BackupInfo,
    Event,
    EventExport,
    ExportSummary,
    ImportBatch,
    ImportItem,
    OperationsStore,
    Signal,
    StorageInfo,
    WatermarkReader,
)
from .events import (
    EVENT_COLUMNS,
    EVENTS_CHANNEL,
    N_EVENT,
    SELECT_EVENT,
    Conn,
    _row,
    event_from_row,
    lock_sequencer,
    topic_match,
    visibility_sql,
)
from .schema import MIGRATIONS, schema_version

T = TypeVar("T")

#: the advisory lock key of the post-prune VACUUM: one node at a time ("vacuum")
VACUUM_LOCK = 0x766163756D
#: the transaction-level advisory lock of an account import: one node at a time ("accimp")
ACCOUNTS_IMPORT_LOCK = 0x616363696D70
#: the tables a prune deletes from (events.py ``_delete_events``)
PRUNED_TABLES = ("events", "receipts", "event_extras")
#: how long an export's snapshot may sit idle between two pages before the server
#: ends it (a client reading slowly; a snapshot held forever holds back VACUUM)
EXPORT_IDLE_MS = 10 * 60 * 1000
_STATE_FIELDS = ("seen_at", "read_at", "archived_at", "clicked_at", "action")

BACKUP_MESSAGE = (
    "notifyd does not back up a PostgreSQL database: use pg_dump or your PostgreSQL "
    "backup tooling (base backups with WAL archiving); see docs/cluster.md. "
    "`notifyd export` writes the events with their read state as JSON Lines."
)


class BackupUnsupported(Conflict):
    """``backup`` on an engine whose backups are the operator's tool."""

    code = "backup_unsupported"


@dataclass
class PostgresStorageInfo(StorageInfo):
    """:class:`StorageInfo` plus what a PostgreSQL database adds."""

    server_version: str = ""
    schema_version: int | None = None


def redact_url(url: str) -> str:
    """``url`` without its password (and without query parameters, which may hold one)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}@{host}"
    return urlunsplit(parts._replace(netloc=netloc, query="", fragment=""))


# -- integrity --------------------------------------------------------------------------


def _amcheck_installed(conn: Conn) -> bool:
    row = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'amcheck'").fetchone()
    return row is not None


def check_database(conn: Conn, full: bool) -> list[str]:
    """The checks of :meth:`PostgresOperationsStore.integrity_check` (blocking)."""
    problems: list[str] = []
    version = schema_version(conn)
    if version != len(MIGRATIONS):
        problems.append(f"schema version is {version}, this notifyd expects {len(MIGRATIONS)}")
        return problems  # the checks below need the tables
    row = conn.execute(
        "SELECT (SELECT last_id FROM event_sequencer WHERE id = 1), "
        "(SELECT count(*) FROM event_sequencer), (SELECT max(id) FROM events)"
    ).fetchone()
    assert row is not None
    last_id, rows, max_id = row
    if rows != 1:
        problems.append(f"event_sequencer has {rows} rows, not 1")
    elif max_id is not None and last_id < max_id:
        problems.append(
            f"event_sequencer.last_id is {last_id} but events go up to #{max_id}: "
            "new events would get ids already taken"
        )
    for table in ("receipts", "event_extras"):
        orphans = conn.execute(
            f"SELECT count(*) FROM {table} x WHERE NOT EXISTS "
            "(SELECT 1 FROM events e WHERE e.id = x.event_id)"
        ).fetchone()
        assert orphans is not None
        if orphans[0]:
            problems.append(f"{table}: {orphans[0]} rows for events that do not exist")
    if full and _amcheck_installed(conn):
        indexes = conn.execute(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_am a ON a.oid = c.relam JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE a.amname = 'btree' AND n.nspname = current_schema() ORDER BY c.relname"
        ).fetchall()
        for (name,) in indexes:
            try:
                with conn.transaction():
                    conn.execute("SELECT bt_index_check(%s::regclass)", (name,))
            except psycopg.errors.DataCorrupted as exc:
                problems.append(f"index {name}: {exc}")
            except psycopg.errors.InsufficientPrivilege:
                problems.append(
                    "amcheck is installed but notifyd's role may not run bt_index_check: "
                    "GRANT EXECUTE ON FUNCTION bt_index_check(regclass) to it"
                )
                break
    return problems or ["ok"]


# -- export -----------------------------------------------------------------------------


def _filter_sql(topic: str | None, since: int | None, params: list[Any]) -> str:
    where = ["e.id > %s"]
    params.append(since or 0)
    if topic is not None:
        where.append(topic_match("e.topic", topic, params))
    return " AND ".join(where)


class PostgresExport(EventExport):
    """One connection of its own holding a ``REPEATABLE READ READ ONLY``
    transaction (one snapshot) while the export runs; its queries run in worker
    threads, one at a time."""

    def __init__(self, connect: Callable[[], Conn], topic: str | None, since: int | None) -> None:
        self._connect = connect
        self._topic = topic
        self._since = since
        self._cursor = since or 0
        self._conn: Conn | None = None
        self._names: dict[int, str] = {}
        self._readers: list[WatermarkReader] = []
        self._lock = trio.Lock()

    async def _call(self, fn: Callable[[Conn], T]) -> T:
        async with self._lock:
            conn = self._conn
            assert conn is not None
            return await trio.to_thread.run_sync(fn, conn)

    async def open(self) -> None:
        self._conn = await trio.to_thread.run_sync(self._connect)
        try:
            self.summary = await self._call(self._start)
        except BaseException:
            await self.aclose()
            raise

    def _start(self, conn: Conn) -> ExportSummary:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        seq = conn.execute("SELECT last_id FROM event_sequencer WHERE id = 1").fetchone()
        last_id = int(seq[0]) if seq else 0
        params: list[Any] = []
        where = _filter_sql(self._topic, self._since, params)
        row = conn.execute(f"SELECT count(*) FROM events e WHERE {where}", params).fetchone()
        count = int(row[0]) if row else 0
        users = {
            int(r[0]): (str(r[1]), str(r[2]))
            for r in conn.execute("SELECT id, name, role FROM users")
        }
        self._names = {uid: name for uid, (name, _) in users.items()}
        grants: dict[int, list[str]] = {}
        for user_id, pattern in conn.execute("SELECT user_id, pattern FROM acl WHERE read"):
            grants.setdefault(int(user_id), []).append(str(pattern))
        with_state: set[int] = set()
        marks = conn.execute(
            "SELECT user_id, read_upto FROM inbox_marks WHERE read_upto > %s", (self._since or 0,)
        ).fetchall()
        for user_id, upto in marks:
            if user_id not in users:
                continue
            admin = users[user_id][1] == "admin"
            reader = WatermarkReader(users[user_id][0], int(upto), admin, grants.get(user_id, []))
            vis_params: list[Any] = []
            vis = visibility_sql(
                Visibility(everything=admin, any_of=tuple(reader.patterns)), vis_params
            )
            sql = f"SELECT 1 FROM events e WHERE {where} AND e.id <= %s"
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
        return await self._call(lambda conn: self._page(conn, limit))

    def _page(self, conn: Conn, limit: int) -> list[Event]:
        params: list[Any] = []
        where = _filter_sql(self._topic, self._cursor, params)
        rows = conn.execute(
            f"SELECT {SELECT_EVENT}, e.superseded_by FROM events e WHERE {where} "
            "ORDER BY e.id LIMIT %s",
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
            "FROM receipts WHERE event_id BETWEEN %s AND %s",
            (events[0]["id"], events[-1]["id"]),
        ):
            name = self._names.get(r[1])
            if name is not None:
                receipts.setdefault(int(r[0]), {})[name] = tuple(r[2:])
        for ev in events:
            mine = receipts.get(ev["id"], {})
            by_mark = {u.name for u in self._readers if u.reads(ev["id"], ev["topic"])}
            for name in sorted(mine.keys() | by_mark):
                entry: dict[str, Any] = {}
                got = mine.get(name)
                read = got[0] if got is not None else None
                if read is None and name in by_mark:
                    read = True  # the user's "mark all read" watermark covers it
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
        return await self._call(read_accounts)

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await trio.to_thread.run_sync(conn.close)  # ends the read-only transaction


# -- the installation -------------------------------------------------------------------


def read_accounts(conn: Conn) -> list[dict[str, Any]]:
    """Every user, token, grant, channel, preferences document and hook (with its id
    and secret), as the export's installation records (users by name), in that
    order (blocking)."""
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
                    "label": row[3], "scopes": [x for x in str(row[4]).split(",") if x],
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
                    "config": row[3], "enabled": bool(row[4]), "created_at": row[5]})  # fmt: skip
    for row in conn.execute(
        "SELECT u.name, p.doc, p.updated_at FROM preferences p "
        "JOIN users u ON u.id = p.user_id ORDER BY u.id"
    ):
        out.append({"type": "preferences", "user": row[0], "doc": row[1],
                    "updated_at": row[2]})  # fmt: skip
    for row in conn.execute(
        "SELECT u.name, h.id, h.name, h.topic, h.template, h.options, h.secret, h.created_at, "
        "h.last_used_at FROM hooks h JOIN users u ON u.id = h.user_id ORDER BY u.id, h.name"
    ):
        out.append({"type": "hook", "user": row[0], "id": row[1], "name": row[2],
                    "topic": row[3], "template": row[4], "options": row[5], "secret": row[6],
                    "created_at": row[7], "last_used_at": row[8]})  # fmt: skip
    return out


def import_accounts(conn: Conn, records: list[dict[str, Any]]) -> AccountsImport:
    """Write what is new among the validated installation ``records`` in one
    transaction (blocking), by the rules of :func:`notifyd.core.transfer.plan_accounts`."""
    from ..transfer import plan_accounts  # transfer imports the store's types

    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (ACCOUNTS_IMPORT_LOCK,))
        plan = plan_accounts(read_accounts(conn), records)
        add = plan.insert
        with conn.cursor() as cur:
            if add["user"]:
                cur.executemany(
                    "INSERT INTO users (name, role, password_hash, tz, created_at) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    [(r["name"], r["role"], r["password_hash"], r["tz"], r["created_at"])
                     for r in add["user"]],
                )  # fmt: skip
            if plan.passwords:
                cur.executemany(
                    "UPDATE users SET password_hash = %s WHERE name = %s AND password_hash IS NULL",
                    [(pw, name) for name, pw in plan.passwords],
                )
            ids = {str(name): int(uid) for uid, name in conn.execute("SELECT id, name FROM users")}
            if add["token"]:
                cur.executemany(
                    "INSERT INTO tokens (user_id, hash, prefix, label, scopes, topics, created_at, "
                    "last_used_at, expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    [(ids[r["user"]], r["hash"], r["prefix"], r["label"], ",".join(r["scopes"]),
                      r["topics"], r["created_at"], r["last_used_at"], r["expires_at"])
                     for r in add["token"]],
                )  # fmt: skip
            if add["grant"]:
                cur.executemany(
                    "INSERT INTO acl (user_id, pattern, read, write, created_at) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    [(ids[r["user"]], r["pattern"], r["read"], r["write"], r["created_at"])
                     for r in add["grant"]],
                )  # fmt: skip
            if add["channel"]:
                cur.executemany(
                    "INSERT INTO channels (user_id, name, kind, config, enabled, created_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s)",
                    [(ids[r["user"]], r["name"], r["kind"], Jsonb(r["config"]), r["enabled"],
                      r["created_at"]) for r in add["channel"]],
                )  # fmt: skip
            if add["preferences"]:
                cur.executemany(
                    "INSERT INTO preferences (user_id, doc, updated_at) VALUES (%s, %s, %s)",
                    [(ids[r["user"]], Jsonb(r["doc"]), r["updated_at"])
                     for r in add["preferences"]],
                )  # fmt: skip
            if add["hook"]:
                cur.executemany(
                    "INSERT INTO hooks (id, user_id, name, topic, template, options, secret, "
                    "created_at, last_used_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    [(r["id"], ids[r["user"]], r["name"], r["topic"], r["template"],
                      Jsonb(r["options"]), r["secret"], r["created_at"], r["last_used_at"])
                     for r in add["hook"]],
                )  # fmt: skip
    return plan.result


# -- import -----------------------------------------------------------------------------

_RECEIPT = (
    "INSERT INTO receipts (user_id, event_id, read, seen_at, read_at, archived_at, clicked_at, "
    "action) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (user_id, event_id) DO NOTHING"
)
_INSERT = (
    f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}, publisher_id, search) "
    f"VALUES ({', '.join(['%s'] * (len(EVENT_COLUMNS) + 1))}, %s::tsvector)"
)


def import_items(
    conn: Conn,
    items: list[ImportItem],
    publisher_id: int,
    users: dict[str, int],
    before_id: int,
    origin: str,
) -> ImportBatch:
    """Insert what is new among ``items`` with fresh ids after the sequencer's, in
    order, with their receipts, in one transaction (blocking). No outbox rows:
    imported events are history, not news."""
    out = ImportBatch()
    with conn.transaction():
        last_id, _ = lock_sequencer(conn)
        fresh: list[ImportItem] = []
        # what the target held at each created_at: one query per timestamp
        held: dict[str, dict[tuple[str, str, str], int]] = {}
        for item in items:
            ev = item.event
            at = held.get(item.created_at)
            if at is None:
                at = held[item.created_at] = {
                    (r[0], r[1], r[2]): int(r[3])
                    for r in conn.execute(
                        "SELECT topic, title, body, count(*) FROM events WHERE created_at = %s "
                        "AND id <= %s GROUP BY topic, title, body",
                        (item.created_at, before_id),
                    )
                }
            if at.get((ev["topic"], ev["title"], ev["body"]), 0) >= item.occurrence:
                out.skipped += 1
            else:
                fresh.append(item)
        if not fresh:
            return out
        rows, receipts, superseded = [], [], []
        for event_id, item in enumerate(fresh, start=last_id + 1):
            stored: Event = {"id": event_id, **item.event, "created_at": item.created_at}
            rows.append(_row(stored, publisher_id))
            out.stored.append(stored)
            if item.superseded:
                superseded.append(event_id)
            for name, st in item.state.items():
                user_id = users.get(name)
                if user_id is None:
                    continue
                receipts.append(
                    (user_id, event_id, st.get("read"), *(st.get(k) for k in _STATE_FIELDS))
                )
        newest = last_id + len(fresh)
        with conn.cursor() as cur:
            cur.executemany(_INSERT, rows)
            if superseded:
                # superseded by an event of the source; 0: hidden like any superseded one
                cur.execute("UPDATE events SET superseded_by = 0 WHERE id = ANY(%s)", (superseded,))
            if receipts:
                cur.executemany(_RECEIPT, receipts)
        conn.execute(
            "UPDATE event_sequencer SET last_id = %s WHERE id = 1 RETURNING pg_notify(%s, %s)",
            (newest, EVENTS_CHANNEL, f"{newest} {origin}"),
        )
        out.states = len(receipts)
    return out


# -- the role ---------------------------------------------------------------------------


class PostgresOperationsStore(OperationsStore):
    """The operations role; a mixin over ``PostgresEventStore`` (see the module)."""

    #: called in the worker thread while this node holds the VACUUM lock, before
    #: it vacuums (a seam for tests that overlap two nodes' chores); None in production
    during_vacuum: Callable[[], None] | None = None

    if TYPE_CHECKING:
        url: str
        token: str
        _commit_lock: trio.Lock

        async def _run(self, fn: Callable[[Conn], T]) -> T: ...

        async def _thread(self, fn: Callable[[], T]) -> T: ...

        def _connect_kwargs(self) -> dict[str, Any]: ...

        async def _committed(self, events: list[Event]) -> None: ...

        def signal(self, message: Signal) -> None: ...

    async def backup(
        self, dest: str, pages: int = 1024, progress: Callable[[int, int], None] | None = None
    ) -> BackupInfo:
        raise BackupUnsupported(BACKUP_MESSAGE)

    async def integrity_check(self, full: bool = False) -> list[str]:
        return await self._run(lambda conn: check_database(conn, full))

    async def storage_info(self) -> PostgresStorageInfo:
        def fn(conn: Conn) -> tuple[int, str, int | None, bool]:
            row = conn.execute(
                "SELECT pg_database_size(current_database()), current_setting('server_version')"
            ).fetchone()
            assert row is not None
            return int(row[0]), str(row[1]), schema_version(conn), _amcheck_installed(conn)

        size, server, version, amcheck = await self._run(fn)
        full = "consistency+amcheck" if amcheck else "consistency (amcheck not installed)"
        return PostgresStorageInfo(
            engine="postgresql",
            location=redact_url(self.url),
            size_bytes=size,
            log_bytes=0,  # the WAL belongs to the whole server, not to this database
            checks=("consistency", full),
            server_version=server,
            schema_version=version,
        )

    async def checkpoint(self) -> None:
        """Nothing: the server checkpoints its WAL itself (``checkpoint_timeout``,
        ``max_wal_size``)."""
        return None

    async def after_prune(self) -> None:
        await self.vacuum_pruned()

    async def vacuum_pruned(self) -> bool:
        """``VACUUM (ANALYZE)`` the tables a prune deletes from, unless another node
        is doing it right now (``pg_try_advisory_lock``); True when this one did."""
        hook = self.during_vacuum

        def fn() -> bool:
            with psycopg.connect(self.url, **self._connect_kwargs()) as conn:
                # autocommit (VACUUM refuses a transaction block); no statement
                # timeout: a large table takes what it takes, and one node at most
                conn.execute("SET statement_timeout = 0")
                got = conn.execute("SELECT pg_try_advisory_lock(%s)", (VACUUM_LOCK,)).fetchone()
                if got is None or not got[0]:
                    return False
                try:
                    if hook is not None:
                        hook()
                    conn.execute(f"VACUUM (ANALYZE) {', '.join(PRUNED_TABLES)}")
                finally:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (VACUUM_LOCK,))
                return True

        return await self._thread(fn)

    async def open_export(self, topic: str | None, since: int | None) -> EventExport:
        def connect() -> Conn:
            conn = psycopg.connect(self.url, **self._connect_kwargs())
            conn.execute(f"SET idle_in_transaction_session_timeout = {EXPORT_IDLE_MS}")
            return conn

        export = PostgresExport(connect, topic, since)
        await export.open()
        return export

    async def import_events(
        self, items: list[ImportItem], publisher_id: int, users: dict[str, int], before_id: int
    ) -> ImportBatch:
        async with self._commit_lock:
            batch = await self._run(
                lambda conn: import_items(conn, items, publisher_id, users, before_id, self.token)
            )
        await self._committed(batch.stored)
        return batch

    async def import_accounts(self, records: list[dict[str, Any]]) -> AccountsImport:
        done = await self._run(lambda conn: import_accounts(conn, records))
        if any(done.added.values()):
            self.signal({"kind": "rights", "user": None})
        return done


__all__ = ["BackupUnsupported", "PostgresOperationsStore", "PostgresStorageInfo"]
