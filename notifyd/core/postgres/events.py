"""The event role (:class:`~notifyd.core.store.EventStore`) on PostgreSQL.

Ids in commit order, across every node
--------------------------------------

Event ids are the stream cursor of the whole cluster: a reader that has seen id
N and later reads ``events_after(N, …)`` must never miss an event, on any node.
A sequence (``BIGSERIAL``) does not give that: ``nextval`` is handed out when a
transaction asks, not when it commits, so transaction A can take id 7, B take id
8 and commit first; a reader then sees 8, moves its cursor to 8, and never sees
7 when A commits.

Here ids come from one row, ``event_sequencer(last_id)``. Every transaction that
gives ids (a publish batch, a release of scheduled events) starts with
``SELECT last_id … FOR UPDATE`` on that row, inserts its events with the ids
``last_id + 1 …``, sets ``last_id`` to the highest, and commits; the row lock is
held until the commit (or rollback). The argument:

1. Take an event X (transaction T_X) and an event Y < X (transaction T_Y), both
   committed. If T_Y = T_X they become visible together. Otherwise T_Y locked the
   row *before* T_X did: had it locked after T_X committed, it would have read
   ``last_id >= X`` and given ids above X; and it cannot have locked while T_X
   held the lock. So T_X's ``FOR UPDATE`` waited for T_Y to end, i.e. to commit
   (Y exists). In READ COMMITTED a waiter re-reads the row's newest committed
   version, so T_X reads T_Y's ``last_id`` and continues above it.
2. PostgreSQL marks a transaction committed for every new snapshot
   (``ProcArrayEndTransaction``) before it releases its locks. So when T_X got
   the lock, T_Y was already visible to every snapshot taken from then on, and
   any snapshot that sees T_X (which commits later still) also sees T_Y.
3. Hence a reader that sees id X sees every committed id below X: ids increase
   in commit order, and ``since=X`` skips nothing that commits later. A
   rolled-back transaction's ids were never visible and are given again.
4. ``last_event_id`` reads the committed ``last_id``: every id up to it is
   visible to any later statement, so ``events_after(cursor, last_event_id())``
   never stops short of an id and then jumps past it. Pruning never touches the
   row, so the cursor never goes down.

The cost is one row lock per *transaction*, not per event: concurrent publishes
on a node are merged into one transaction (group commit, as the SQLite writer
does) that takes the lock once for all its events; nodes queue on the row, each
holding it for one batch's inserts and commit. The idempotency lookups run under
the lock too, which makes "one key, one publish" hold across nodes without a
unique-violation retry.

Blocking psycopg calls run in worker threads (``trio.to_thread.run_sync``) under
a :class:`trio.CapacityLimiter` as large as the connection pool, each connection
with a ``statement_timeout`` so that a stuck query cannot pin a thread forever,
and an ``idle_in_transaction_session_timeout`` as long, so that a node frozen in
the middle of a publish releases the sequencer (its publish fails, unacknowledged,
and the client's retry with its idempotency key is safe).

When the server cannot be reached (stopped, crashed, a failover under way), the
store says so quickly instead of letting every statement wait: a statement waits
at most :data:`CONNECT_WAIT` for a pooled connection, and once a statement or the
LISTEN thread has found the server away, statements are refused at once with
``StoreUnavailable`` (503 with Retry-After) except one probe per ``poll_interval``.
The first probe that connects replaces the pool with a new one (the old one's
connections belonged to the server that went away, and its own reconnection backs
off for minutes), so the node serves again within about a second of the server's
return, whether the same server restarted or a standby took over its address.
Live streams do not touch the store and stay open meanwhile.

Full-text search (``q=``): :mod:`notifyd.core.postgres.search`.

Commit listeners hear every event of the cluster, each once, in id order. Each
transaction that stores events sends one ``NOTIFY`` on :data:`EVENTS_CHANNEL`
with its newest id and its node's token (delivered at its commit). Every node
keeps a cursor of what its listeners heard: its own commits are told at once by
the commit path (after reading any other node's events below them it has not
heard yet), and a LISTEN connection in a thread of its own (``_Wakeups``) has it
read whatever else was committed, by cursor, on each other node's notification
and every ``poll_interval``, so a lost notification or a dropped LISTEN
connection delays events, never loses them.

The outbox rows of stored events (:func:`enqueue_deliveries`) are written in the
transaction that stores them; the outbox role is :mod:`notifyd.core.postgres.outbox`.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import orjson
import psycopg
import trio
from psycopg import sql
from psycopg.types.json import Json, Jsonb
from psycopg_pool import ConnectionPool, PoolClosed

from ..acl import Visibility
from ..errors import StoreUnavailable
from ..fanout import ChannelTarget, plan_deliveries
from ..metrics import COMMIT_BATCH, COMMIT_SECONDS, EVENTS_PUBLISHED, PRUNED
from ..models import EventIn, attachment_dict
from ..prefs import Preferences
from ..store import (
    MAX_SIGNAL,
    CommitListener,
    Event,
    EventExtras,
    EventStore,
    HistoryQuery,
    PublishResult,
    Signal,
    SignalListener,
    with_inbox_state,
)
from ..timeutil import format_ts, now_rfc3339, parse_rfc3339
from . import search
from .nodes import IDEMPOTENCY_LOCK, RETENTION_LOCK, try_chore_lock
from .schema import migrate

T = TypeVar("T")
log = logging.getLogger("notifyd.store")
Conn = psycopg.Connection[Any]

EVENT_COLUMNS = (
    "id", "topic", "title", "body", "format", "priority", "category", "tags", "click",
    "icon", "image", "actions", "sensitive", "collapse_key", "deliver_at", "expires_at",
    "created_at", "attachment",
)  # fmt: skip
N_EVENT = len(EVENT_COLUMNS)
SELECT_EVENT = ", ".join(f"e.{c}" for c in EVENT_COLUMNS)
SELECT_STATE = "r.read, r.seen_at, r.archived_at, r.clicked_at, r.action"
_INSERT_EVENT = (
    f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}, publisher_id, search) "
    f"VALUES ({', '.join(['%s'] * (N_EVENT + 1))}, %s::tsvector)"
)
#: the same rows by COPY: for a batch it takes about half the time of the INSERTs
#: (the text form of the tsvector goes in as it is)
_COPY_EVENTS = f"COPY events ({', '.join(EVENT_COLUMNS)}, publisher_id, search) FROM STDIN"
#: events per transaction from which they are written by COPY
COPY_FROM = 16
_LOCK_SEQUENCER = "SELECT last_id, last_created_at FROM event_sequencer WHERE id = 1 FOR UPDATE"
#: errors after which the statement may succeed on a new try: connection lost or
#: ended by the server (shutdown, a failover, an idle transaction's timeout), a
#: statement timeout
_UNAVAILABLE = (psycopg.OperationalError, psycopg.errors.IdleInTransactionSessionTimeout)
#: how long a statement waits for a pooled connection. The pool is as large as the
#: thread limiter, so a wait means the pool is (re)connecting: a few milliseconds
#: when the server is up; longer means it is away, and callers should hear 503 soon
#: rather than after the statement timeout.
CONNECT_WAIT = 5.0


def _connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` says the server cannot be reached (no connection could be had,
    or it ended: shut down, crashed, starting up, a network fault), as opposed to a
    statement that failed on a live server (a timeout, a lock wait)."""
    state = getattr(exc, "sqlstate", None)
    if isinstance(exc, PoolClosed):  # an old pool, replaced after an outage
        return False
    return isinstance(exc, psycopg.OperationalError) and (
        state is None or state.startswith("08") or state in ("57P01", "57P02", "57P03")
    )


#: the LISTEN/NOTIFY channel on which every transaction that stores events sends
#: its newest id and its node's token (``"<id> <token>"``) at commit: a wake-up for the other nodes, which then read the new
#: events by cursor (a lost notification delays them, never loses an event)
EVENTS_CHANNEL = "notifyd_events"
#: the channel of :meth:`PostgresEventStore.signal`: ``"<token> <JSON>"``
SIGNALS_CHANNEL = "notifyd_signals"
_FROM = "FROM events e LEFT JOIN receipts r ON r.user_id = %s AND r.event_id = e.id"


# -- rows and events -------------------------------------------------------------------


def event_from_row(row: tuple[Any, ...]) -> Event:
    ev = dict(zip(EVENT_COLUMNS, row[:N_EVENT], strict=True))
    ev["tags"] = ev["tags"] or []
    ev["actions"] = ev["actions"] or []
    return ev


def event_with_state(row: tuple[Any, ...], watermark: int) -> Event:
    return with_inbox_state(event_from_row(row), row[N_EVENT : N_EVENT + 5], watermark)


def _event(ev: EventIn, event_id: int | None, created_at: str) -> Event:
    return {
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
        "actions": [a.model_dump(exclude_none=True) for a in ev.actions],
        "sensitive": ev.sensitive,
        "collapse_key": ev.collapse_key,
        "deliver_at": ev.deliver_at,
        "expires_at": ev.expires_at,
        "created_at": created_at,
        "attachment": attachment_dict(ev.attachment),
    }


def _row(d: Event, publisher_id: int) -> tuple[Any, ...]:
    return (
        d["id"], d["topic"], d["title"], d["body"], d["format"], d["priority"], d["category"],
        Jsonb(d["tags"]) if d["tags"] else None, d["click"], d["icon"], d["image"],
        Json(d["actions"]) if d["actions"] else None, d["sensitive"], d["collapse_key"],
        d["deliver_at"], d["expires_at"], d["created_at"],
        Json(d["attachment"]) if d.get("attachment") else None, publisher_id,
        search.document(d["title"], d["body"]),
    )  # fmt: skip


def lock_sequencer(conn: Conn) -> tuple[int, str]:
    """Lock the sequencer row until the caller's transaction ends; the newest id
    given and the newest ``created_at`` stamped."""
    row = conn.execute(_LOCK_SEQUENCER).fetchone()
    assert row is not None, "event_sequencer has no row: the schema is not migrated"
    return int(row[0]), str(row[1])


def insert_events(
    conn: Conn,
    items: list[tuple[EventIn, int]],
    sequencer: tuple[int, str],
    created_at: str,
    origin: str = "",
    now: float | None = None,
) -> list[Event]:
    """Insert events with the ids after the sequencer's (the caller holds its
    lock), apply collapse keys, store extras, write their outbox rows (planned at
    ``now``, see :func:`enqueue_deliveries`), move the sequencer, and notify
    ``<newest id> <origin>`` (``origin``: the storing node's token).

    ``created_at`` is raised to the newest stamp already given when a node's clock
    is behind another's, so that ``created_at`` never decreases as ids grow (what
    :meth:`~PostgresEventStore.cursor_at` and pruning in time order rely on)."""
    last_id, last_created_at = sequencer
    created_at = max(created_at, last_created_at)
    if not items:
        return []
    events = [_event(ev, last_id + n, created_at) for n, (ev, _) in enumerate(items, start=1)]
    rows = [_row(d, publisher) for d, (_, publisher) in zip(events, items, strict=True)]
    with conn.cursor() as cur:
        if len(rows) >= COPY_FROM:
            with cur.copy(_COPY_EVENTS) as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            cur.executemany(_INSERT_EVENT, rows)
        extras = [
            (d["id"], ev._token_id, None if ev._extras is None else Json(ev._extras))
            for (ev, _), d in zip(items, events, strict=True)
            if ev._token_id is not None or ev._extras is not None
        ]
        if extras:
            cur.executemany(
                "INSERT INTO event_extras (event_id, token_id, extras) VALUES (%s, %s, %s)", extras
            )
        collapsing = [
            (d["id"], d["topic"], d["collapse_key"], d["id"])
            for d in events
            if d["collapse_key"] is not None
        ]
        if collapsing:
            cur.executemany(
                "UPDATE events SET superseded_by = %s WHERE topic = %s AND collapse_key = %s "
                "AND superseded_by IS NULL AND id < %s",
                collapsing,
            )
    enqueue_deliveries(conn, events, parse_rfc3339(created_at) if now is None else now)
    # and one wake-up per transaction, delivered at its commit, in commit order
    # (in the same statement: one round trip fewer while the sequencer is held)
    newest = events[-1]["id"]
    conn.execute(
        "UPDATE event_sequencer SET last_id = %s, last_created_at = %s WHERE id = 1 "
        "RETURNING pg_notify(%s, %s)",
        (newest, created_at, EVENTS_CHANNEL, f"{newest} {origin}"),
    )
    return events


def enqueue_deliveries(conn: Conn, events: list[Event], now: float) -> int:
    """Write the outbox rows of ``events`` in the caller's transaction, as the
    SQLite engine decides them (:func:`notifyd.core.fanout.plan_deliveries`): an
    event and its deliveries commit together."""
    chans = [
        ChannelTarget(int(r[0]), int(r[1]), r[2], r[3])
        for r in conn.execute(
            "SELECT c.id, c.user_id, u.role, c.name FROM channels c "
            "JOIN users u ON u.id = c.user_id WHERE c.enabled ORDER BY c.id"
        )
    ]
    if not chans or not events:
        return 0
    grants: dict[int, list[str]] = {}
    for user_id, pattern in conn.execute("SELECT user_id, pattern FROM acl WHERE read"):
        grants.setdefault(int(user_id), []).append(pattern)
    prefs: dict[int, Preferences] = {}
    for user_id, doc in conn.execute(
        "SELECT user_id, doc FROM preferences WHERE user_id = ANY(%s)",
        (sorted({c.user_id for c in chans}),),
    ):
        try:
            prefs[int(user_id)] = Preferences.from_json(doc)
        except ValueError:
            continue  # validated when stored; a bad document must not block publishing
    recent: dict[int, int] = {}
    if any(p.rate_limit_per_minute for p in prefs.values()):
        for channel_id, n in conn.execute(
            "SELECT channel_id, count(*) FROM deliveries WHERE created_at > %s "
            "AND digest_key IS NULL GROUP BY channel_id",
            (format_ts(now - 60),),
        ):
            recent[int(channel_id)] = int(n)
    rows = plan_deliveries(events, chans, grants, prefs, recent, now)
    if rows:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO deliveries (event_id, user_id, channel_id, next_attempt_at, "
                "created_at, digest_key) VALUES (%s, %s, %s, %s, %s, %s)",
                rows,
            )
    return len(rows)


def _cancel_scheduled(conn: Conn, topic: str, collapse_key: str) -> int:
    return conn.execute(
        "DELETE FROM scheduled WHERE topic = %s AND collapse_key = %s", (topic, collapse_key)
    ).rowcount


@dataclass(eq=False)
class PublishRequest:
    events: list[EventIn]
    publisher_id: int
    key: str | None
    batch: bool
    now: float
    done: trio.Event = field(default_factory=trio.Event)
    #: set once the commit listeners heard the request's group (or gave up on it)
    told: trio.Event = field(default_factory=trio.Event)
    result: PublishResult | None = None
    error: BaseException | None = None


#: called in the worker thread inside a publish transaction, after its events are
#: written and before it commits (a seam for tests that hold a transaction open)
BeforeCommit = Callable[[list[Event]], None]


def publish_many(
    conn: Conn,
    requests: list[PublishRequest],
    before_commit: BeforeCommit | None = None,
    origin: str = "",
) -> list[PublishResult]:
    """Store the events of several publish requests in one transaction that holds
    the sequencer from its first statement to its commit."""
    now_ts = max(r.now for r in requests)
    now = format_ts(now_ts)
    out: list[PublishResult] = []
    with conn.transaction():
        sequencer = lock_sequencer(conn)
        # per request: its result when it is a replay, else its slots:
        # ("e", index into immediate) | ("s", scheduled event)
        plans: list[PublishResult | list[tuple[str, Any]]] = []
        immediate: list[tuple[EventIn, int]] = []
        keys: dict[tuple[int, str], int] = {}  # keys first used in this batch
        for n, req in enumerate(requests):
            if req.key is not None:
                earlier = keys.get((req.publisher_id, req.key))
                if earlier is not None:
                    plans.append([("same", earlier)])
                    continue
                hit = conn.execute(
                    "SELECT event_ids, batch FROM idempotency WHERE user_id = %s AND key = %s",
                    (req.publisher_id, req.key),
                ).fetchone()
                if hit is not None:
                    plans.append(PublishResult(events=hit[0], replayed=True, batch=hit[1]))
                    continue
                keys[(req.publisher_id, req.key)] = n
            slots: list[tuple[str, Any]] = []
            for ev in req.events:
                if ev.collapse_key is not None:
                    _cancel_scheduled(conn, ev.topic, ev.collapse_key)
                if ev.deliver_at is not None and ev.deliver_at > now:
                    row = conn.execute(
                        "INSERT INTO scheduled (deliver_at, publisher_id, topic, collapse_key, "
                        "payload, created_at) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                        (
                            ev.deliver_at,
                            req.publisher_id,
                            ev.topic,
                            ev.collapse_key,
                            Jsonb(ev.model_dump(mode="json")),
                            now,
                        ),
                    ).fetchone()
                    assert row is not None
                    d = _event(ev, None, now)
                    d.update(scheduled_id=row[0], status="scheduled")
                    slots.append(("s", d))
                else:
                    slots.append(("e", len(immediate)))
                    immediate.append((ev, req.publisher_id))
            plans.append(slots)
        stored = insert_events(conn, immediate, sequencer, now, origin, now_ts)
        for req, plan in zip(requests, plans, strict=True):
            if isinstance(plan, PublishResult):
                out.append(plan)
                continue
            if plan and plan[0][0] == "same":
                first = out[plan[0][1]]
                out.append(PublishResult(events=first.events, replayed=True, batch=first.batch))
                continue
            items = [stored[v] if kind == "e" else v for kind, v in plan]
            if req.key is not None:
                conn.execute(
                    "INSERT INTO idempotency (user_id, key, event_ids, batch, created_at) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    (req.publisher_id, req.key, Json(items), req.batch, now),
                )
            out.append(
                PublishResult(
                    events=items,
                    batch=req.batch,
                    scheduled=[v for kind, v in plan if kind == "s"],
                    new_events=[stored[v] for kind, v in plan if kind == "e"],
                )
            )
        if before_commit is not None:
            before_commit(stored)
    return out


# -- filters ---------------------------------------------------------------------------


def like_pattern(pattern: str) -> str:
    """A topic glob (``*`` = any run of characters, nothing else special) as a
    LIKE pattern with ``\\`` as its escape character."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def topic_match(column: str, pattern: str, params: list[Any]) -> str:
    if "*" in pattern:
        params.append(like_pattern(pattern))
        return f"{column} LIKE %s ESCAPE '\\'"
    params.append(pattern)
    return f"{column} = %s"


def visibility_sql(vis: Visibility, params: list[Any], column: str = "e.topic") -> str:
    """A WHERE fragment limiting ``column`` to what ``vis`` allows ('' = no limit)."""
    parts: list[str] = []
    if not vis.everything:
        alts = [topic_match(column, pattern, params) for pattern in vis.any_of]
        parts.append("(" + " OR ".join(alts) + ")" if alts else "FALSE")
    if vis.also_matching is not None:
        parts.append(topic_match(column, vis.also_matching, params))
    return " AND ".join(parts)


def topics_sql(topics: tuple[str, ...], params: list[Any], column: str = "e.topic") -> str:
    return "(" + " OR ".join(topic_match(column, t, params) for t in topics) + ")"


def _unread_sql() -> str:
    # read NULL: the watermark decides; an explicit mark wins
    return "(CASE WHEN r.read IS NULL THEN e.id > %s ELSE NOT r.read END)"


def mute_sql(prefs: Preferences | None, params: list[Any]) -> str:
    """A WHERE fragment dropping what the user's first matching rule mutes ('' = none)."""
    if prefs is None or not any(r.mute for r in prefs.rules):
        return ""
    cases = []
    for rule in prefs.rules:
        cond = [topic_match("e.topic", rule.topic, params), "e.priority >= %s"]
        params.append(rule.min_priority)
        if rule.category is not None:
            cond.append("e.category = %s")
            params.append(rule.category)
        cases.append(f"WHEN {' AND '.join(cond)} THEN {'TRUE' if rule.mute else 'FALSE'}")
    return f"NOT (CASE {' '.join(cases)} ELSE FALSE END)"


def may_share_a_topic(a: str, b: str) -> bool:
    """False only when no topic can match both globs (``*``: any run of characters):
    their literal starts (up to the first ``*``; a plain topic is all start) differ."""
    pa, pb = a.split("*", 1)[0], b.split("*", 1)[0]
    if "*" in a and "*" in b:
        return pa.startswith(pb) or pb.startswith(pa)
    if "*" in b:
        return a.startswith(pb)
    if "*" in a:
        return b.startswith(pa)
    return a == b


def history_where(
    q: HistoryQuery, now: str, watermark: int, prefs: Preferences | None
) -> tuple[str, list[Any]]:
    """The WHERE clause of a history query over ``events e LEFT JOIN receipts r``."""
    params: list[Any] = [now]
    where = ["e.superseded_by IS NULL", "(e.expires_at IS NULL OR e.expires_at > %s)"]
    muted = mute_sql(prefs, params)
    if muted:
        where.append(muted)
    visibility = q.visibility
    if q.topic is not None and not visibility.everything:
        # only the grants the topic filter can meet: the planner cannot tell that
        # 'shop/*' and a grant on 'app/*' exclude each other, and would walk every
        # event looking for a page of them
        topic = q.topic
        kept = tuple(g for g in visibility.any_of if may_share_a_topic(g, topic))
        visibility = Visibility(False, kept, visibility.also_matching)
    vis = visibility_sql(visibility, params)
    if vis:
        where.append(vis)
    if q.topic is not None:
        where.append(topic_match("e.topic", q.topic, params))
    if q.category is not None:
        where.append("e.category = %s")
        params.append(q.category)
    if q.min_priority is not None:
        where.append("e.priority >= %s")
        params.append(q.min_priority)
    if q.since is not None:
        where.append("e.id > %s")
        params.append(q.since)
    if q.before is not None:
        where.append("e.id < %s")
        params.append(q.before)
    if q.unread is not None:
        where.append(_unread_sql() if q.unread else "NOT " + _unread_sql())
        params.append(watermark)
    if q.archived == "exclude":
        where.append("r.archived_at IS NULL")
    elif q.archived == "only":
        where.append("r.archived_at IS NOT NULL")
    if q.q:
        words = search.query(q.q)
        if words is None:
            where.append("FALSE")  # nothing to search for: nothing matches
        else:
            exact = search.exact_part(q.q)
            if exact is None:
                where.append("e.search @@ %s::tsquery")
                params.append(words)
            else:  # the index finds the exact words; the prefix is checked on those rows
                # (ts_match_vq is the @@ operator as a function: not an index condition)
                where.append("e.search @@ %s::tsquery AND ts_match_vq(e.search, %s::tsquery)")
                params += [exact, words]
    return " AND ".join(where), params


def _watermark(conn: Conn, user_id: int) -> int:
    row = conn.execute(
        "SELECT read_upto FROM inbox_marks WHERE user_id = %s", (user_id,)
    ).fetchone()
    return int(row[0]) if row else 0


def _preferences(conn: Conn, user_id: int) -> Preferences | None:
    row = conn.execute("SELECT doc FROM preferences WHERE user_id = %s", (user_id,)).fetchone()
    if row is None:
        return None
    try:
        return Preferences.from_json(row[0])
    except ValueError:
        return None  # validated when stored; a bad document must not hide the inbox


# -- the store -------------------------------------------------------------------------


class PostgresEventStore(EventStore):
    """The event role on one PostgreSQL database; any number of instances (nodes)
    may share it. ``count`` (of the inbox role) is here too: history needs it.

    ``add_commit_listener``: a listener hears the events committed on *every*
    node from :meth:`start` on, each once, in id order (see the module's
    docstring); this node's own before its ``publish`` returns."""

    engine = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        listen: bool = True,
        pool_size: int = 4,
        statement_timeout: float = 30.0,
        poll_interval: float = 1.0,
        clock: Callable[[], float] | None = None,
        node: str | None = None,
    ) -> None:
        import time

        self.url = url
        #: this node's name in ``nodes`` (heartbeats, postgres/nodes.py); None: no
        #: heartbeat (a delivery worker, a command-line tool, most tests)
        self.node = node
        self._password = password
        #: hear other nodes' commits and signals (LISTEN thread and polls); the
        #: delivery worker does not: its daemon hears them and pokes it
        self.listen = listen
        #: how often commit listeners look for other nodes' events without a
        #: notification (one lost, or the LISTEN connection down)
        self.poll_interval = poll_interval
        self.clock = clock or time.time
        self.statement_timeout = statement_timeout
        #: see :data:`BeforeCommit`; None in production
        self.before_commit: BeforeCommit | None = None
        self._pool_size = pool_size
        self._pool: ConnectionPool[Conn] | None = None
        self._limiter = trio.CapacityLimiter(pool_size)
        self._listeners: list[CommitListener] = []
        self._signal_listeners: list[SignalListener] = []
        #: encoded signals for the other nodes, sent in order by _send_signals
        self._outgoing: list[str] = []
        self._outgoing_ready = trio.Event()
        self._sender = trio.CancelScope()
        self._wakeups_token: trio.lowlevel.TrioToken | None = None
        self._pending: list[PublishRequest] = []
        #: held by the transaction giving ids on this node: one batch at a time,
        #: so that this node's commit listeners hear its events in id order
        self._commit_lock = trio.Lock()
        #: the newest id given to this node's commit listeners
        self._heard = 0
        self._hear_lock = trio.Lock()
        self._wakeups: _Wakeups | None = None
        #: names this instance in its notifications, so that its LISTEN thread
        #: skips its own commits (told by the commit path itself)
        self.token = secrets.token_hex(8)

    # -- life cycle --

    def _connect_kwargs(self) -> dict[str, Any]:
        # A statement may run (or wait for a lock) statement_timeout at most; a
        # transaction left open and idle as long (its node froze between two
        # statements while holding the sequencer) is ended by the server, so that
        # one stuck node cannot stall every publisher of the cluster. TCP
        # keepalives notice a peer that vanished without closing its connection.
        ms = max(1, int(self.statement_timeout * 1000))
        extra: dict[str, Any] = {} if self._password is None else {"password": self._password}
        return {
            **extra,
            "autocommit": True,
            "connect_timeout": 10,
            "options": f"-c statement_timeout={ms} -c idle_in_transaction_session_timeout={ms}",
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
        }

    async def start(self) -> None:
        def open_() -> ConnectionPool[Conn]:
            with psycopg.connect(self.url, **self._connect_kwargs()) as conn:
                migrate(conn)
            # the server has just answered: the pool's first connection gets as long
            # as a connection may take, not the (possibly short) statement timeout
            return self._new_pool(max(self.statement_timeout, CONNECT_WAIT))

        self._pool = await self._thread(open_)
        self._heard = await self.last_event_id()
        self._wakeups_token = trio.lowlevel.current_trio_token()
        if self.listen:
            self._wakeups = _Wakeups(self, self._wakeups_token)
            self._wakeups.start()
        trio.lowlevel.spawn_system_task(self._send_signals)

    async def close(self) -> None:
        self._sender.cancel(reason="store closing")
        if self._wakeups is not None:
            await trio.to_thread.run_sync(self._wakeups.stop)
            self._wakeups = None
        # in-flight commits finish first: they hold the lock
        async with self._commit_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            await trio.to_thread.run_sync(pool.close)

    def _new_pool(self, wait: float) -> ConnectionPool[Conn]:
        """A pool with its first connection made (blocking; ``wait``: how long to try)."""
        pool: ConnectionPool[Conn] = ConnectionPool(
            self.url,
            min_size=1,
            max_size=self._pool_size,
            kwargs=self._connect_kwargs(),
            open=False,
            timeout=min(self.statement_timeout, CONNECT_WAIT),
            # a connection that died while idle in the pool (a server restart,
            # a failover) is found out and replaced before anyone uses it
            check=ConnectionPool.check_connection,
        )
        try:
            pool.open(wait=True, timeout=wait)
        except BaseException:
            pool.close()
            raise
        return pool

    def _probe_pool(self) -> ConnectionPool[Conn]:
        """One plain connection first (refused at once while the server is down,
        where a pool would retry until its timeout), then a new pool."""
        kwargs = {**self._connect_kwargs(), "connect_timeout": int(CONNECT_WAIT)}
        with psycopg.connect(self.url, **kwargs) as conn:
            conn.execute("SELECT 1")
        return self._new_pool(CONNECT_WAIT)

    # While PostgreSQL cannot be reached (_unreachable says why), statements are
    # refused at once with StoreUnavailable (503), except one probe per poll
    # interval that tries a new connection; callers arriving during a probe wait
    # for its outcome. When the probe connects, a new pool replaces the old one,
    # whose connections (and reconnection attempts, which back off for minutes)
    # belonged to the server that went away. See _thread.
    _unreachable: str | None = None
    _probe_at = 0.0
    _probe: trio.Event | None = None

    def _lost(self, exc: BaseException) -> None:
        if self._unreachable is None:
            log.warning("PostgreSQL cannot be reached: %s", str(exc).strip())
            self._probe_at = 0.0  # the next statement tries again at once
        self._unreachable = str(exc).strip() or type(exc).__name__

    async def _reconnect(self) -> None:
        """Try PostgreSQL again (one caller per poll interval) or raise StoreUnavailable."""
        if self._probe is not None:  # someone is trying right now: wait for the outcome
            with trio.move_on_after(CONNECT_WAIT):
                await self._probe.wait()
            if self._unreachable is None:
                return
        now = trio.current_time()
        if self._unreachable is None:
            return
        if self._probe is not None or now < self._probe_at:
            raise StoreUnavailable(
                f"PostgreSQL cannot be reached ({self._unreachable}); retry shortly",
                retry_after=max(1.0, self.poll_interval),
            )
        self._probe_at = now + self.poll_interval
        self._probe = probe = trio.Event()
        try:
            try:
                fresh = await trio.to_thread.run_sync(self._probe_pool)
            except psycopg.Error as exc:
                self._unreachable = str(exc).strip() or type(exc).__name__
                raise StoreUnavailable(
                    f"PostgreSQL cannot be reached ({self._unreachable}); retry shortly",
                    retry_after=max(1.0, self.poll_interval),
                ) from exc
            old, self._pool = self._pool, fresh
            if old is None:  # the store closed meanwhile
                self._pool = None
                old = fresh
            else:
                self._unreachable = None
                log.warning("PostgreSQL answers again: serving with new connections")
            # the old pool's connections are gone; closing it waits for its workers
            threading.Thread(target=old.close, name="notifyd-pg-old-pool", daemon=True).start()
        finally:
            self._probe = None
            probe.set()

    async def _thread(self, fn: Callable[[], T]) -> T:
        if self._unreachable is not None:
            await self._reconnect()
        try:
            return await trio.to_thread.run_sync(fn, limiter=self._limiter)
        except _UNAVAILABLE as exc:
            if _connection_lost(exc):
                self._lost(exc)
            raise StoreUnavailable(f"PostgreSQL: {exc}", retry_after=1.0) from exc

    async def _run(self, fn: Callable[[Conn], T]) -> T:
        assert self._pool is not None, "store not started"

        def call() -> T:
            pool = self._pool  # the current one: _reconnect may have replaced it
            if pool is None:
                raise StoreUnavailable("the store is closing", retry_after=2.0)
            with pool.connection() as conn:
                return fn(conn)

        return await self._thread(call)

    # -- commit listeners --

    def add_commit_listener(self, listener: CommitListener) -> None:
        self._listeners.append(listener)

    def _tell(self, events: list[Event]) -> None:
        for listener in self._listeners:
            listener(events)

    async def _committed(self, events: list[Event]) -> None:
        """Give the events this node just committed (in id order) to the commit
        listeners, after any other node's events below them that they have not
        heard yet, and each event once (the wake-up path may have read them first)."""
        if not events:
            return
        EVENTS_PUBLISHED.inc(len(events))
        async with self._hear_lock:
            if events[0]["id"] > self._heard + 1:
                try:
                    await self._hear_upto(events[0]["id"] - 1)
                except StoreUnavailable:
                    # committed all the same (the publish succeeded); the next
                    # catch-up tells the listeners, in order
                    log.warning("commit listeners wait for the next poll", exc_info=True)
                    return
            fresh = [e for e in events if e["id"] > self._heard]
            if fresh:
                self._heard = fresh[-1]["id"]
                self._tell(fresh)

    async def catch_up(self) -> None:
        """Give every event committed (on any node) since the listeners last heard
        to them, in id order: on a notification, and every ``poll_interval``."""
        async with self._hear_lock:
            await self._hear_upto(await self.last_event_id())

    async def _hear_upto(self, upto: int) -> None:
        # the caller holds _hear_lock
        while self._heard < upto:
            page = await self._run(
                partial(_events_between, cursor=self._heard, upto=upto, limit=1000)
            )
            if not page:  # pruned meanwhile
                self._heard = upto
                return
            self._heard = page[-1]["id"]
            self._tell(page)

    # -- signals --

    def add_signal_listener(self, listener: SignalListener) -> None:
        self._signal_listeners.append(listener)

    def _tell_signal(self, message: Signal) -> None:
        for listener in self._signal_listeners:
            try:
                listener(message)
            except Exception:
                log.exception("a signal listener failed on %s", message.get("kind"))

    def signal(self, message: Signal) -> None:
        self._tell_signal(message)
        payload = orjson.dumps(message).decode()
        if len(payload) > MAX_SIGNAL:  # never for the daemon's own signals
            log.warning("signal %r too large for the other nodes: sent as a resync",
                        message.get("kind"))  # fmt: skip
            payload = '{"kind":"resync"}'
        self._outgoing.append(f"{self.token} {payload}")
        self._outgoing_ready.set()

    async def _send_signals(self) -> None:
        """Send queued signals to the other nodes (NOTIFY), in order, in batches. A
        batch that cannot be sent is dropped: the nodes that missed it were cut off
        from the server too and hear a resync when they reconnect."""
        with self._sender:
            while True:
                await self._outgoing_ready.wait()
                self._outgoing_ready = trio.Event()
                batch, self._outgoing = self._outgoing, []
                try:
                    await self._run(partial(_notify_all, batch=batch))
                except StoreUnavailable:
                    log.warning("%d signals to the other nodes were lost", len(batch))

    def _hear_signal(self, payload: str) -> None:
        # on the LISTEN thread: another node's signal (this node's were told already)
        token, _, body = payload.partition(" ")
        if token == self.token:
            return
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError:
            return
        if isinstance(message, dict):
            trio.from_thread.run_sync(self._tell_signal, message, trio_token=self._wakeups_token)

    # -- publishing --

    async def publish(
        self,
        events: list[EventIn],
        publisher_id: int,
        idempotency_key: str | None = None,
        batch: bool = False,
    ) -> PublishResult:
        request = PublishRequest(events, publisher_id, idempotency_key, batch, self.clock())
        self._pending.append(request)
        # Group commit: whoever gets the lock commits every request waiting then
        # (trio's lock is fair, so the requests queued behind a commit in flight
        # go together in the next one); the others find theirs done.
        try:
            await self._commit_lock.acquire()
        except BaseException:  # cancelled while queued: not published
            self._pending = [r for r in self._pending if r is not request]
            raise
        stored: list[Event] = []
        group: list[PublishRequest] = []
        try:
            if not request.done.is_set():
                group, self._pending = self._pending, []
                hook = self.before_commit
                started = trio.current_time()
                try:
                    results = await self._run(
                        lambda conn: publish_many(conn, group, hook, self.token)
                    )
                except BaseException as exc:
                    for req in group:
                        req.error = exc
                        req.done.set()
                        req.told.set()
                    raise
                finally:  # as the SQLite writer does: /metrics shows group commits
                    COMMIT_SECONDS.observe(trio.current_time() - started)
                    COMMIT_BATCH.observe(len(group))
                for req, result in zip(group, results, strict=True):
                    req.result = result
                    req.done.set()
                stored = [e for r in results for e in r.new_events]
        finally:
            self._commit_lock.release()
        if group:  # the leader tells the group's events, outside the commit lock
            try:  # so that the next batch commits meanwhile
                await self._committed(sorted(stored, key=lambda e: int(e["id"])))
            finally:
                for req in group:
                    req.told.set()
        else:
            await request.told.wait()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    async def release_due(self, now: float, limit: int = 500) -> int:
        due_at = format_ts(now)
        clock_now = self.clock()
        created_at = format_ts(clock_now)

        def fn(conn: Conn) -> list[Event]:
            with conn.transaction():
                # the sequencer first: releases (on any node) are serialised with
                # each other, so each scheduled event is released once, in order
                sequencer = lock_sequencer(conn)
                rows = conn.execute(
                    "SELECT id, publisher_id, payload FROM scheduled WHERE deliver_at <= %s "
                    "ORDER BY deliver_at, id LIMIT %s FOR UPDATE",
                    (due_at, limit),
                ).fetchall()
                if not rows:
                    return []
                conn.execute("DELETE FROM scheduled WHERE id = ANY(%s)", ([r[0] for r in rows],))
                items = [(EventIn.model_validate(r[2]), int(r[1])) for r in rows]
                return insert_events(conn, items, sequencer, created_at, self.token, clock_now)

        async with self._commit_lock:
            released = await self._run(fn)
        await self._committed(released)
        return len(released)

    async def cancel_scheduled(self, topic: str, collapse_key: str) -> int:
        def fn(conn: Conn) -> int:
            with conn.transaction():
                return _cancel_scheduled(conn, topic, collapse_key)

        return await self._run(fn)

    # -- reading --

    async def get_event(self, event_id: int, user_id: int) -> Event | None:
        def fn(conn: Conn) -> Event | None:
            row = conn.execute(
                f"SELECT {SELECT_EVENT}, {SELECT_STATE} {_FROM} WHERE e.id = %s",
                (user_id, event_id),
            ).fetchone()
            return None if row is None else event_with_state(row, _watermark(conn, user_id))

        return await self._run(fn)

    async def history(self, query: HistoryQuery) -> list[Event]:
        if query.visibility.empty:
            return []

        def fn(conn: Conn) -> list[Event]:
            w = _watermark(conn, query.user_id)
            where, params = history_where(
                query, now_rfc3339(), w, _preferences(conn, query.user_id)
            )
            order = search.history_order(conn, query.q) if query.q else "e.id DESC"
            rows = conn.execute(
                f"SELECT {SELECT_EVENT}, {SELECT_STATE} {_FROM} WHERE {where} "
                f"ORDER BY {order} LIMIT %s",
                [query.user_id, *params, query.limit],
            ).fetchall()
            return [event_with_state(row, w) for row in rows]

        return await self._run(fn)

    async def count(self, query: HistoryQuery) -> int:
        if query.visibility.empty:
            return 0

        def fn(conn: Conn) -> int:
            w = _watermark(conn, query.user_id)
            where, params = history_where(
                query, now_rfc3339(), w, _preferences(conn, query.user_id)
            )
            row = conn.execute(
                f"SELECT count(*) {_FROM} WHERE {where}", [query.user_id, *params]
            ).fetchone()
            return int(row[0]) if row else 0

        return await self._run(fn)

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
        params: list[Any] = [cursor, upto, now_rfc3339()]
        where = ["e.id > %s", "e.id <= %s", "(e.expires_at IS NULL OR e.expires_at > %s)"]
        vis = visibility_sql(visibility, params)
        if vis:
            where.append(vis)
        if topics:
            where.append(topics_sql(topics, params))
        sql = (
            f"SELECT {SELECT_EVENT} FROM events e WHERE {' AND '.join(where)} "
            "ORDER BY e.id LIMIT %s"
        )
        return await self._run(
            lambda conn: [event_from_row(r) for r in conn.execute(sql, [*params, limit])]
        )

    async def last_event_id(self) -> int:
        return await self._run(_last_id)

    async def cursor_at(self, created_at: str) -> int:
        def fn(conn: Conn) -> int:
            # the last id first: an event committed after it is not "before" anyone
            last = _last_id(conn)
            row = conn.execute(
                "SELECT id FROM events WHERE created_at >= %s AND id <= %s "
                "ORDER BY created_at, id LIMIT 1",
                (created_at, last),
            ).fetchone()
            return last if row is None else int(row[0]) - 1

        return await self._run(fn)

    async def event_extras(self, event_ids: list[int]) -> dict[int, EventExtras]:
        ids = list(dict.fromkeys(event_ids))
        if not ids:
            return {}

        def fn(conn: Conn) -> dict[int, EventExtras]:
            rows = conn.execute(
                "SELECT event_id, token_id, extras FROM event_extras WHERE event_id = ANY(%s)",
                (ids,),
            )
            return {int(r[0]): EventExtras(r[1], r[2]) for r in rows}

        return await self._run(fn)

    # -- housekeeping --

    async def _delete_events(self, where: str, order: str, value: str, limit: int) -> int:
        def fn(conn: Conn) -> int:
            with conn.transaction():
                if not try_chore_lock(conn, RETENTION_LOCK):
                    return 0  # another node is pruning right now: its chore, not ours
                ids = [
                    int(r[0])
                    for r in conn.execute(
                        f"DELETE FROM events WHERE id IN (SELECT id FROM events WHERE {where} "
                        f"ORDER BY {order} LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id",
                        (value, limit),
                    )
                ]
                if ids:
                    for table in ("receipts", "deliveries", "event_extras"):
                        conn.execute(f"DELETE FROM {table} WHERE event_id = ANY(%s)", (ids,))
                return len(ids)

        n = await self._run(fn)
        PRUNED.inc(n)
        return n

    async def prune(self, created_before: str, limit: int) -> int:
        return await self._delete_events("created_at < %s", "created_at, id", created_before, limit)

    async def drop_expired(self, now: str, limit: int) -> int:
        return await self._delete_events(
            "expires_at IS NOT NULL AND expires_at <= %s", "expires_at, id", now, limit
        )

    async def forget_idempotency_keys(self, created_before: str) -> int:
        def fn(conn: Conn) -> int:
            with conn.transaction():
                if not try_chore_lock(conn, IDEMPOTENCY_LOCK):
                    return 0  # another node is doing it right now
                return conn.execute(
                    "DELETE FROM idempotency WHERE created_at < %s", (created_before,)
                ).rowcount

        return await self._run(fn)


def _notify_all(conn: Conn, batch: list[str]) -> None:
    """NOTIFY each of ``batch`` on :data:`SIGNALS_CHANNEL`, in order, in one statement."""
    conn.execute(
        "SELECT pg_notify(%s, p) FROM unnest(%s::text[]) WITH ORDINALITY AS s(p, n) ORDER BY n",
        (SIGNALS_CHANNEL, batch),
    )


def _events_between(conn: Conn, cursor: int, upto: int, limit: int) -> list[Event]:
    """Every stored event with ``cursor < id <= upto``, in id order (what the
    commit listeners hear: no filter)."""
    rows = conn.execute(
        f"SELECT {SELECT_EVENT} FROM events e WHERE e.id > %s AND e.id <= %s "
        "ORDER BY e.id LIMIT %s",
        (cursor, upto, limit),
    )
    return [event_from_row(r) for r in rows]


class _Wakeups(threading.Thread):
    """A node's LISTEN connection, in a thread of its own: on each notification
    of :data:`EVENTS_CHANNEL`, and every ``poll_interval`` without one, it has the
    store's commit listeners catch up (:meth:`PostgresEventStore.catch_up`, run on
    the trio loop); it hands other nodes' :data:`SIGNALS_CHANNEL` notifications to
    the signal listeners. A dropped connection is opened again; while it is down
    the polls go on, so a lost notification only delays events (signals lost
    meanwhile are answered with a ``resync`` signal once it is back)."""

    def __init__(self, store: PostgresEventStore, token: trio.lowlevel.TrioToken) -> None:
        super().__init__(name="notifyd-pg-wakeups", daemon=True)
        self._store = store
        self._token = token
        self._stopping = threading.Event()
        #: a channel of this node's own, notified to wake the thread when it stops
        self.stop_channel = f"notifyd_stop_{os.getpid()}_{secrets.token_hex(6)}"
        self._conn: Conn | None = None

    def run(self) -> None:
        store = self._store
        listened_before = False
        listening = False  # the current connection got as far as listening
        while not self._stopping.is_set():
            try:
                wait = store.poll_interval
                if self._conn is None or self._conn.closed:
                    listening = False
                    self._conn = psycopg.connect(
                        store.url, **store._connect_kwargs(), application_name="notifyd-wakeups"
                    )
                    for channel in (EVENTS_CHANNEL, SIGNALS_CHANNEL, self.stop_channel):
                        self._conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    listening = True
                    if listened_before:  # signals sent while not listening are lost
                        trio.from_thread.run_sync(
                            store._tell_signal, {"kind": "resync"}, trio_token=self._token
                        )
                        wait = 0.0  # and events committed meanwhile are read at once
                    listened_before = True
                catch_up = True  # after a poll interval without notifications too
                for note in self._conn.notifies(timeout=wait, stop_after=1):
                    if note.channel == SIGNALS_CHANNEL:
                        store._hear_signal(note.payload)
                        catch_up = False
                    elif note.channel == EVENTS_CHANNEL:
                        # this node's own commit was told by its commit path
                        catch_up = not note.payload.endswith(f" {store.token}")
                    else:
                        catch_up = False  # the stop channel
                if self._conn.closed:  # ended without an error raised (a server shutdown)
                    raise psycopg.OperationalError("the LISTEN connection was closed")
                if not catch_up:
                    continue
            except (trio.RunFinishedError, trio.Cancelled):
                break  # the trio run is ending
            except psycopg.Error as exc:
                dropped = self._conn is not None and listening
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
                if dropped:
                    # reconnect first (soon), which tells a server gone (refused)
                    # from a connection ended alone (pg_terminate_backend)
                    self._stopping.wait(min(0.1, store.poll_interval))
                    continue
                if _connection_lost(exc):
                    # could not connect: the server is away; statements are refused
                    # at once from now on (503) instead of each waiting for the pool
                    try:
                        trio.from_thread.run_sync(store._lost, exc, trio_token=self._token)
                    except (trio.RunFinishedError, trio.Cancelled):
                        break
                # not connected: wait one poll interval (or the stop) before retrying
                self._stopping.wait(store.poll_interval)
            if self._stopping.is_set():
                break
            try:
                trio.from_thread.run(store.catch_up, trio_token=self._token)
            except (trio.RunFinishedError, trio.Cancelled):
                break  # the trio run is ending
            except Exception:  # noqa: BLE001 - PostgreSQL away: the next poll retries
                log.debug("catching up failed", exc_info=True)
        if self._conn is not None:
            self._conn.close()

    def stop(self) -> None:
        """End the thread (blocking: call it from a worker thread)."""
        self._stopping.set()
        try:
            with psycopg.connect(self._store.url, **self._store._connect_kwargs()) as conn:
                conn.execute("SELECT pg_notify(%s, '')", (self.stop_channel,))
        except psycopg.Error:
            pass  # the thread sees the flag at its next poll
        self.join()


def _last_id(conn: Conn) -> int:
    row = conn.execute("SELECT last_id FROM event_sequencer WHERE id = 1").fetchone()
    return int(row[0]) if row else 0


__all__ = ["PostgresEventStore"]
