"""The nodes of a cluster: heartbeats, the locks that keep chores single, and what
the operator's tools (``notifyd migrate``, ``notifyd doctor``) read of them.

Heartbeats
----------

A daemon's store (``node`` given: :func:`notifyd.core.storage.open_store` passes
``node_name`` for the daemon, nothing for its delivery worker) keeps one row of
``nodes`` up to date: written before :meth:`PostgresNodes.start` returns, then
every :data:`HEARTBEAT_INTERVAL` seconds from a trio system task, and deleted by
a clean :meth:`PostgresNodes.close`. A node that crashed or lost the server keeps
its row, with an old ``seen_at`` (``notifyd doctor`` warns after a
minute); a row nobody refreshed for :data:`FORGET_AFTER` is
deleted by the other nodes' heartbeats, and a node started again under the same
name takes its row over.

``seen_at`` is the server's clock. ``clock_offset`` is this node's clock minus
the server's, measured around one round trip (this node's ``time.time()`` at the
midpoint of a ``SELECT clock_timestamp()``): event times (``created_at``),
schedules, sessions and delivery leases are stamped by the nodes' clocks, so
nodes whose clocks disagree by seconds disagree about what is due or expired.

Chores on one node at a time
----------------------------

Every node runs the housekeeping loops; in a cluster the work must not be done
twice nor fought over. Each chore takes an advisory lock of its own with
``pg_try_advisory_xact_lock`` in the transaction that does the work: the node
that gets it works, a node that does not skips the round (its call returns 0)
instead of queueing behind the other, and the lock ends with the transaction, so
a node that dies mid-chore holds nothing. The keys (one keyspace per database;
each the ASCII of a word, so that they are easy to spot in ``pg_locks``):

- ``schema.MIGRATION_LOCK`` ("notifyd"): migrations; this one is waited for
  (``pg_advisory_xact_lock``), since every node must see the result.
- :data:`RETENTION_LOCK` ("retain"): ``prune`` and ``drop_expired``, one batch of
  deleted events at a time.
- :data:`IDEMPOTENCY_LOCK` ("idemkey"): ``forget_idempotency_keys``.
- ``operations.VACUUM_LOCK``: ``VACUUM (ANALYZE)`` after a large
  prune; session-level (``pg_try_advisory_lock``, VACUUM cannot run in a
  transaction), on a connection of its own, unlocked right after.

Releasing scheduled events needs no lock of its own: ``release_due`` locks the
event sequencer row first, so releases (on any node) run one after the other,
and the rows it deletes are gone for the next one.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import psycopg
import trio

from ..errors import StoreUnavailable
from ..timeutil import format_ts

if TYPE_CHECKING:
    from .events import PostgresEventStore

    _Base = PostgresEventStore
else:
    _Base = object

log = logging.getLogger("notifyd.store")
Conn = psycopg.Connection[Any]

#: seconds between two heartbeats of a node
HEARTBEAT_INTERVAL = 10.0
#: a node not seen for longer is forgotten (its row deleted by another's heartbeat)
FORGET_AFTER = 24 * 3600.0
#: heartbeats a node may miss before the others take its delivery claims back
DEAD_AFTER_BEATS = 3

#: advisory lock of event pruning (``prune`` and ``drop_expired``): "retain"
RETENTION_LOCK = 0x72657461696E
#: advisory lock of forgetting old idempotency keys: "idemkey"
IDEMPOTENCY_LOCK = 0x6964656D6B6579


def try_chore_lock(conn: Conn, key: int) -> bool:
    """Take the advisory lock ``key`` until the caller's transaction ends, unless
    another session holds it; whether this one got it. Call it inside
    ``conn.transaction()``: on an autocommit connection outside one, the lock
    would end with the statement that took it."""
    row = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (key,)).fetchone()
    return bool(row and row[0])


# -- heartbeats --------------------------------------------------------------------------


def measure_offset(conn: Conn) -> float:
    """This machine's clock minus the server's, in seconds, read at the midpoint of
    one round trip (blocking)."""
    before = time.time()
    row = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
    after = time.time()
    assert row is not None
    return (before + after) / 2 - float(row[0])


@dataclass(frozen=True)
class NodeIdentity:
    """What a node writes in its row besides the times."""

    name: str
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    version: str = ""
    #: when the store started, on this node's clock
    started: float = field(default_factory=time.time)


def beat(conn: Conn, me: NodeIdentity) -> str | None:
    """Write this node's row: seen now (the server's clock), with a fresh clock
    offset; forget nodes not seen for :data:`FORGET_AFTER`. Returns who held the
    row before when that was another process (``"<host> pid <pid>"``), else None."""
    offset = measure_offset(conn)
    with conn.transaction():
        held = conn.execute(
            "SELECT host, pid FROM nodes WHERE name = %s FOR UPDATE", (me.name,)
        ).fetchone()
        conn.execute(
            "INSERT INTO nodes (name, host, pid, version, started_at, seen_at, clock_offset) "
            "VALUES (%s, %s, %s, %s, to_timestamp(%s), clock_timestamp(), %s) "
            "ON CONFLICT (name) DO UPDATE SET host = excluded.host, pid = excluded.pid, "
            "version = excluded.version, started_at = excluded.started_at, "
            "seen_at = excluded.seen_at, clock_offset = excluded.clock_offset",
            (me.name, me.host, me.pid, me.version, me.started - offset, offset),
        )
        conn.execute(
            "DELETE FROM nodes WHERE seen_at < clock_timestamp() - make_interval(secs => %s)",
            (FORGET_AFTER,),
        )
    if held is None or (held[0], held[1]) == (me.host, me.pid):
        return None
    return f"{held[0]} pid {held[1]}"


def release_dead_claims(conn: Conn, dead_after: float, now: float) -> int:
    """End the delivery claims of nodes not seen for ``dead_after`` seconds (or not
    at all: a node that stopped removed its row), so that the rows a dead node was
    sending go out from the others within a few heartbeats instead of when their
    leases end. Claim owners are ``<node>/<process>`` (node names hold no ``/``).
    A node that was only cut off from the server for that long may still send some
    of them: delivery stays at least once."""
    return conn.execute(
        "UPDATE deliveries d SET claimed_by = NULL, lease_until = NULL, "
        "next_attempt_at = LEAST(d.next_attempt_at, %s) "
        "WHERE d.claimed_by IS NOT NULL AND NOT EXISTS (SELECT 1 FROM nodes n "
        "WHERE n.name = split_part(d.claimed_by, '/', 1) "
        "AND n.seen_at >= clock_timestamp() - make_interval(secs => %s))",
        (format_ts(now), dead_after),
    ).rowcount


def leave(conn: Conn, me: NodeIdentity) -> None:
    """Delete this node's row (a clean stop); a row another process took over
    under the same name (another host or pid) is left alone."""
    conn.execute(
        "DELETE FROM nodes WHERE name = %s AND host = %s AND pid = %s", (me.name, me.host, me.pid)
    )


class PostgresNodes(_Base):
    """Mixin of :class:`~notifyd.core.postgres.store.PostgresStore`, before
    ``PostgresEventStore`` in its bases: this node's heartbeat from ``start`` to
    ``close`` (see the module), when the store was given a ``node`` name."""

    #: seconds between heartbeats (tests shorten it)
    heartbeat_interval: float = HEARTBEAT_INTERVAL
    _identity: NodeIdentity | None = None
    _beating: trio.CancelScope | None = None
    _beat_done: trio.Event | None = None

    async def start(self) -> None:
        await super().start()
        if not self.node:
            return
        from ... import __version__

        me = NodeIdentity(self.node, version=__version__)
        try:
            await self._run(lambda conn: beat(conn, me))  # the row exists once started
        except BaseException:
            with trio.CancelScope(shield=True):
                await super().close()  # not started, then: nothing left open
            raise
        self._identity = me
        self._beating = trio.CancelScope()
        self._beat_done = trio.Event()
        trio.lowlevel.spawn_system_task(self._heartbeat, me, self._beating, self._beat_done)

    async def _heartbeat(self, me: NodeIdentity, scope: trio.CancelScope, done: trio.Event) -> None:
        failing = False
        try:
            with scope:
                while True:
                    await trio.sleep(self.heartbeat_interval)
                    dead_after = DEAD_AFTER_BEATS * self.heartbeat_interval
                    try:
                        other = await self._run(lambda conn: beat(conn, me))
                        freed = await self._run(
                            partial(release_dead_claims, dead_after=dead_after, now=self.clock())
                        )
                    except StoreUnavailable as exc:
                        if not failing:  # once until it works again
                            log.warning("node %s: heartbeat failed: %s", me.name, exc)
                        failing = True
                    else:
                        if failing:
                            log.info("node %s: heartbeat works again", me.name)
                        failing = False
                        if freed:
                            log.warning("took back %d delivery claims of nodes not seen "
                                        "for %.0f s", freed, dead_after)  # fmt: skip
                        if other is not None:  # it wrote the row since our last beat
                            log.warning(
                                "node_name %r is also used by %s: give every node a name "
                                "of its own (claims and doctor tell nodes apart by it)",
                                me.name, other,
                            )  # fmt: skip
        except Exception:  # a system task must not raise: that would end the process
            log.exception("node %s: the heartbeat stopped", me.name)
        finally:
            done.set()

    async def close(self) -> None:
        me, self._identity = self._identity, None
        if me is not None and self._beating is not None and self._beat_done is not None:
            self._beating.cancel(reason="store closing")
            await self._beat_done.wait()  # a beat in flight must not write the row again
            try:
                await self._run(lambda conn: leave(conn, me))
            except StoreUnavailable as exc:
                log.warning("node %s: could not remove its row from nodes: %s", me.name, exc)
        await super().close()


# -- what the operator's tools read (blocking; no store, no daemon) --------------------


def scrub(message: str, url: str, password: str | None) -> str:
    """``message`` (a libpq error, which may quote the connection string) without
    the password: neither the one of ``password`` nor one inside a URL."""
    from ..config import redact_url

    if password:
        message = message.replace(password, "****")
    secret = urlsplit(url).password if "://" in url else None
    if secret:
        message = message.replace(secret, "****")
    return redact_url(message).strip()


def connect(url: str, password: str | None, timeout: int = 10) -> Conn:
    """A connection of its own for a command (``migrate``, ``doctor``): autocommit,
    bounded connect and statement times.

    Raises:
        StoreUnavailable: the server cannot be reached or refused the login; the
            message never holds the password.
    """
    extra: dict[str, Any] = {} if password is None else {"password": password}
    try:
        return psycopg.connect(
            url,
            **extra,
            autocommit=True,
            connect_timeout=timeout,
            options="-c statement_timeout=60000",
            application_name="notifyd-tool",
        )
    except psycopg.Error as exc:
        raise StoreUnavailable(scrub(str(exc), url, password)) from None


@dataclass
class NodeRow:
    """One row of ``nodes`` as ``notifyd doctor`` shows it."""

    name: str
    host: str
    pid: int
    version: str
    started_at: str
    seen_at: str
    #: seconds since ``seen_at``, by the server's clock
    seen_ago: float
    clock_offset: float

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "host": self.host,
            "pid": self.pid,
            "version": self.version,
            "started_at": self.started_at,
            "seen_at": self.seen_at,
            "seen_seconds_ago": round(self.seen_ago, 3),
            "clock_offset_seconds": round(self.clock_offset, 6),
        }


@dataclass
class ClusterState:
    """What ``notifyd doctor`` checks of a cluster's database."""

    server_version: str
    #: one ``SELECT 1`` round trip, in milliseconds
    latency_ms: float
    #: None: notifyd never migrated this database
    schema_version: int | None
    #: the version this notifyd migrates to
    expected_version: int
    nodes: list[NodeRow]
    #: this machine's (the doctor's) clock minus the server's
    local_offset: float


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds")


def read_cluster(conn: Conn) -> ClusterState:
    """The server, schema and nodes of the database ``conn`` is on (blocking)."""
    from .schema import MIGRATIONS, schema_version

    started = time.perf_counter()
    conn.execute("SELECT 1").fetchone()
    latency = (time.perf_counter() - started) * 1000
    row = conn.execute("SELECT current_setting('server_version')").fetchone()
    server = str(row[0]) if row else "?"
    version = schema_version(conn)
    offset = measure_offset(conn)
    nodes: list[NodeRow] = []
    if version is not None and conn.execute("SELECT to_regclass('nodes')").fetchone() != (None,):
        for r in conn.execute(
            "SELECT name, host, pid, version, started_at, seen_at, "
            "extract(epoch FROM clock_timestamp() - seen_at)::float8, clock_offset "
            "FROM nodes ORDER BY name"
        ):
            nodes.append(
                NodeRow(
                    str(r[0]),
                    str(r[1]),
                    int(r[2]),
                    str(r[3]),
                    _iso(r[4]),
                    _iso(r[5]),
                    max(0.0, float(r[6])),
                    float(r[7]),
                )  # fmt: skip
            )
    return ClusterState(server, latency, version, len(MIGRATIONS), nodes, offset)


def migrate_with_report(conn: Conn) -> tuple[int | None, int]:
    """Migrate (:func:`~notifyd.core.postgres.schema.migrate`); the version before
    (None: never migrated) and after. Raises ``SchemaTooNew`` for a newer schema."""
    from .schema import MIGRATION_LOCK, migrate, schema_version

    with conn.transaction():
        # the migrations' own lock, taken first (it is re-entrant within a session)
        # so that "before" is what this migration found, not what another one left
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        before = schema_version(conn)
        return before, migrate(conn)


__all__ = [
    "FORGET_AFTER",
    "HEARTBEAT_INTERVAL",
    "IDEMPOTENCY_LOCK",
    "RETENTION_LOCK",
    "ClusterState",
    "NodeRow",
    "PostgresNodes",
    "connect",
    "read_cluster",
    "try_chore_lock",
]
