"""PostgreSQL schema migrations, applied once however many nodes start at once.

:func:`migrate` runs in one transaction that first takes a transaction-level
advisory lock (``pg_advisory_xact_lock(MIGRATION_LOCK)``): a second node starting
at the same moment waits there, then finds the version table already up to date
and applies nothing. PostgreSQL DDL is transactional, so a migration that fails
leaves nothing behind. ``notifyd_schema`` holds the version (how many of
:data:`MIGRATIONS` have run). Never edit a migration that has shipped: add one.

The logical tables are those of the SQLite engine (``core/sqlite/schema.py``), as
far as the roles built so far need them. Migration 1 (the event role): ``events``, ``scheduled``,
``idempotency``, ``event_extras``, the per-user state the history joins
(``receipts``, ``inbox_marks``, ``preferences`` for mutes), and
``event_sequencer``: the one row whose lock orders ids by commit (see
:mod:`notifyd.core.postgres.events`). Migration 2 (the account role): ``users``,
``tokens``, ``sessions``, ``acl``. Migration 3 (the outbox role): ``channels``,
``deliveries`` (with ``claimed_by``/``lease_until``). Migration 4 (the cluster):
``nodes`` (heartbeats), ``rate_limits`` and ``failures`` (limits counted across nodes).
Migration 5: the groups of a single sign-on session (``sessions.group_names``).
Migration 6: ``hooks``, ``attachments``, ``attachment_chunks`` and ``events.attachment``.
Migration 7: ``server_keys``. Times are RFC 3339 strings as in SQLite
(``timeutil.format_ts``: fixed width, UTC, so they compare as text), so that both
engines answer the same filters with the same values.
"""

from __future__ import annotations

from typing import Any

import psycopg

from ..errors import StoreUnavailable

#: the advisory lock key of migrations (any constant; "notifyd" in ASCII)
MIGRATION_LOCK = 0x6E6F74696679_64

_M001_EVENTS = [
    """
    CREATE TABLE events (
        id BIGINT PRIMARY KEY,
        topic TEXT NOT NULL,
        title TEXT NOT NULL DEFAULT '',
        body TEXT NOT NULL DEFAULT '',
        format TEXT NOT NULL DEFAULT 'text',
        priority INTEGER NOT NULL DEFAULT 3,
        category TEXT NOT NULL DEFAULT 'general',
        tags JSONB,
        click TEXT,
        icon TEXT,
        image TEXT,
        actions JSON,
        sensitive BOOLEAN NOT NULL DEFAULT FALSE,
        collapse_key TEXT,
        deliver_at TEXT,
        expires_at TEXT,
        created_at TEXT NOT NULL,
        superseded_by BIGINT,
        publisher_id BIGINT,
        search TSVECTOR NOT NULL DEFAULT ''
    )
    """,
    "CREATE INDEX idx_events_topic ON events (topic, id)",
    "CREATE INDEX idx_events_category ON events (category, id)",
    "CREATE INDEX idx_events_created ON events (created_at)",
    "CREATE INDEX idx_events_collapse ON events (topic, collapse_key) "
    "WHERE collapse_key IS NOT NULL AND superseded_by IS NULL",
    "CREATE INDEX idx_events_expires ON events (expires_at) WHERE expires_at IS NOT NULL",
    # full-text search: the tokens of title and body, made by postgres/search.py
    "CREATE INDEX idx_events_search ON events USING GIN (search)",
    # The sequencer: one row, locked by every transaction that gives event ids and
    # held until it commits. last_id is the newest id given (never lowered);
    # last_created_at the newest created_at stamped (so that it never decreases
    # as ids grow, whatever the skew between the nodes' clocks).
    """
    CREATE TABLE event_sequencer (
        id SMALLINT PRIMARY KEY CHECK (id = 1),
        last_id BIGINT NOT NULL,
        last_created_at TEXT NOT NULL
    )
    """,
    "INSERT INTO event_sequencer (id, last_id, last_created_at) VALUES (1, 0, '')",
    # Scheduled events are not events yet: no event id; theirs only names them.
    """
    CREATE TABLE scheduled (
        id BIGSERIAL PRIMARY KEY,
        deliver_at TEXT NOT NULL,
        publisher_id BIGINT NOT NULL,
        topic TEXT NOT NULL,
        collapse_key TEXT,
        payload JSONB NOT NULL,
        created_at TEXT NOT NULL
    )
    """,
    "CREATE INDEX idx_scheduled_due ON scheduled (deliver_at, id)",
    "CREATE INDEX idx_scheduled_collapse ON scheduled (topic, collapse_key) "
    "WHERE collapse_key IS NOT NULL",
    """
    CREATE TABLE idempotency (
        user_id BIGINT NOT NULL,
        key TEXT NOT NULL,
        event_ids JSON NOT NULL,
        batch BOOLEAN NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (user_id, key)
    )
    """,
    "CREATE INDEX idx_idempotency_created ON idempotency (created_at)",
    """
    CREATE TABLE event_extras (
        event_id BIGINT PRIMARY KEY,
        token_id BIGINT,
        extras JSON
    )
    """,
    # Per-user state: read NULL = no explicit mark, the inbox_marks watermark decides.
    """
    CREATE TABLE receipts (
        user_id BIGINT NOT NULL,
        event_id BIGINT NOT NULL,
        read BOOLEAN,
        seen_at TEXT,
        read_at TEXT,
        archived_at TEXT,
        clicked_at TEXT,
        action TEXT,
        PRIMARY KEY (user_id, event_id)
    )
    """,
    "CREATE INDEX idx_receipts_event ON receipts (event_id)",
    "CREATE TABLE inbox_marks (user_id BIGINT PRIMARY KEY, read_upto BIGINT NOT NULL)",
    "CREATE TABLE preferences (user_id BIGINT PRIMARY KEY, doc JSONB NOT NULL, updated_at TEXT NOT NULL)",
]

# Accounts: users, tokens (by hash), web sessions, ACL grants. The per-user tables of
# _M001 (receipts, inbox_marks, preferences, idempotency) keep no foreign key:
# removing a user deletes them explicitly, in its transaction (accounts.py).
_M002_ACCOUNTS = [
    """
    CREATE TABLE users (
        id BIGSERIAL PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL DEFAULT 'user',
        password_hash TEXT,
        tz TEXT DEFAULT 'UTC',
        created_at TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE tokens (
        id BIGSERIAL PRIMARY KEY,
        user_id BIGINT NOT NULL REFERENCES users (id),
        hash TEXT NOT NULL UNIQUE,
        prefix TEXT,
        label TEXT,
        scopes TEXT NOT NULL,
        topics TEXT,
        created_at TEXT NOT NULL,
        last_used_at TEXT,
        expires_at TEXT
    )
    """,
    "CREATE INDEX idx_tokens_user ON tokens (user_id)",
    """
    CREATE TABLE sessions (
        id BIGSERIAL PRIMARY KEY,
        user_id BIGINT NOT NULL REFERENCES users (id),
        hash TEXT NOT NULL UNIQUE,
        user_agent TEXT,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL
    )
    """,
    "CREATE INDEX idx_sessions_user ON sessions (user_id)",
    "CREATE INDEX idx_sessions_expiry ON sessions (expires_at)",
    """
    CREATE TABLE acl (
        id BIGSERIAL PRIMARY KEY,
        user_id BIGINT NOT NULL REFERENCES users (id),
        pattern TEXT NOT NULL,
        read BOOLEAN NOT NULL,
        write BOOLEAN NOT NULL,
        created_at TEXT,
        UNIQUE (user_id, pattern)
    )
    """,
]

# The outbox (the outbox role): channels, and one deliveries row per (event, user,
# channel), written in the event's transaction. A claimed row has claimed_by (its
# owner, "<node>/<process>") and lease_until, and its next_attempt_at is set to the
# lease's end, so that idx_deliveries_due finds expired leases as due rows.
_M003_OUTBOX = [
    """
    CREATE TABLE channels (
        id BIGSERIAL PRIMARY KEY,
        user_id BIGINT NOT NULL REFERENCES users (id),
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        config JSONB NOT NULL,
        enabled BOOLEAN NOT NULL DEFAULT TRUE,
        created_at TEXT NOT NULL,
        last_success_at TEXT,
        last_error TEXT,
        last_error_at TEXT,
        UNIQUE (user_id, name)
    )
    """,
    """
    CREATE TABLE deliveries (
        id BIGSERIAL PRIMARY KEY,
        event_id BIGINT NOT NULL,
        user_id BIGINT NOT NULL,
        channel_id BIGINT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        last_error TEXT,
        created_at TEXT NOT NULL,
        sent_at TEXT,
        digest_key TEXT,
        claimed_by TEXT,
        lease_until TEXT
    )
    """,
    "CREATE INDEX idx_deliveries_due ON deliveries (next_attempt_at, id) WHERE state = 'pending'",
    "CREATE INDEX idx_deliveries_state ON deliveries (state, id)",
    "CREATE INDEX idx_deliveries_event ON deliveries (event_id)",
    "CREATE INDEX idx_deliveries_channel ON deliveries (channel_id)",
    "CREATE INDEX idx_deliveries_digest ON deliveries (channel_id, digest_key) "
    "WHERE digest_key IS NOT NULL",
    "CREATE INDEX idx_deliveries_claimed ON deliveries (claimed_by) WHERE claimed_by IS NOT NULL",
    "CREATE INDEX idx_deliveries_recent ON deliveries (created_at) WHERE digest_key IS NULL",
]

_M004_CLUSTER = [
    # one row per running node, refreshed by its heartbeat: who is up, since when,
    # and how far its clock is from the server's (notifyd doctor)
    """
    CREATE TABLE nodes (
        name TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        version TEXT NOT NULL,
        started_at TIMESTAMPTZ NOT NULL,
        seen_at TIMESTAMPTZ NOT NULL,
        clock_offset DOUBLE PRECISION NOT NULL DEFAULT 0
    )
    """,
    # cluster-wide limits: a rate limiter's state per key (the theoretical arrival
    # time of GCRA, in server-clock seconds) and failed attempts per key (sign-in)
    "CREATE TABLE rate_limits (key TEXT PRIMARY KEY, tat DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE failures (key TEXT NOT NULL, at DOUBLE PRECISION NOT NULL)",
    "CREATE INDEX idx_failures_key ON failures (key, at)",
    "CREATE INDEX idx_failures_at ON failures (at)",
]

# A session signed in through single sign-on remembers the groups the provider named
# (a JSON list), so group_grants hold for as long as the session lasts.
_M005_SESSION_GROUPS = ["ALTER TABLE sessions ADD COLUMN group_names TEXT"]

# Inbound webhooks and attachments (see the SQLite engine's migration 11). In cluster
# mode an attachment's bytes live in the database, in attachment_chunks (1 MiB rows,
# so a file is streamed in pieces and any node can serve it).
_M006_INTEGRATIONS = [
    """
    CREATE TABLE hooks (
        id TEXT PRIMARY KEY,
        user_id BIGINT NOT NULL,
        name TEXT NOT NULL,
        topic TEXT NOT NULL,
        template TEXT NOT NULL,
        options JSONB NOT NULL DEFAULT '{}',
        secret TEXT NOT NULL,
        created_at TEXT NOT NULL,
        last_used_at TEXT,
        UNIQUE (user_id, name)
    )
    """,
    """
    CREATE TABLE attachments (
        id TEXT PRIMARY KEY,
        user_id BIGINT NOT NULL,
        name TEXT NOT NULL,
        type TEXT NOT NULL,
        size BIGINT NOT NULL,
        sha256 TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        topic TEXT,
        event_id BIGINT
    )
    """,
    "CREATE INDEX idx_attachments_user ON attachments (user_id, expires_at)",
    "CREATE INDEX idx_attachments_expires ON attachments (expires_at)",
    "CREATE INDEX idx_attachments_event ON attachments (event_id) WHERE event_id IS NOT NULL",
    """
    CREATE TABLE attachment_chunks (
        attachment_id TEXT NOT NULL,
        user_id BIGINT NOT NULL,
        seq INTEGER NOT NULL,
        data BYTEA NOT NULL,
        PRIMARY KEY (attachment_id, seq)
    )
    """,
    "ALTER TABLE events ADD COLUMN attachment JSON",
]

# Random keys of the installation, made once and the same for every node (the key
# that signs links to attached images in pushes).
_M007_SERVER_KEYS = [
    "CREATE TABLE server_keys (name TEXT PRIMARY KEY, value BYTEA NOT NULL, "
    "created_at TEXT NOT NULL)",
]

#: each migration: the statements it runs, in order
MIGRATIONS: list[list[str]] = [
    _M001_EVENTS, _M002_ACCOUNTS, _M003_OUTBOX, _M004_CLUSTER, _M005_SESSION_GROUPS,
    _M006_INTEGRATIONS, _M007_SERVER_KEYS,
]  # fmt: skip


def _version(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT version FROM notifyd_schema").fetchone()
    return 0 if row is None else int(row[0])


class SchemaTooNew(StoreUnavailable):
    """The database was migrated by a newer notifyd than this one: this binary
    must not write to it (a rolling upgrade upgrades every node before any old one
    starts again). A :class:`StoreUnavailable`, so that ``serve`` names the
    database and stops."""

    code = "schema_too_new"

    def __init__(self, found: int) -> None:
        self.found = found
        super().__init__(
            f"its schema is version {found}, newer than this notifyd knows "
            f"({len(MIGRATIONS)}): a newer notifyd migrated it; run that version "
            "on this node too (never downgrade a node of an upgraded cluster)"
        )


def migrate(conn: psycopg.Connection[Any]) -> int:
    """Bring the database up to date (blocking); returns the schema version.

    Safe when several nodes call it at once: all but one wait on the advisory
    lock, then find nothing left to do.

    Raises:
        SchemaTooNew: the database is at a version above ``len(MIGRATIONS)``;
            nothing was changed.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS notifyd_schema ("
            "one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one), version INTEGER NOT NULL)"
        )
        version = _version(conn)
        if version > len(MIGRATIONS):
            raise SchemaTooNew(version)  # rolls the transaction back: nothing written
        for step in MIGRATIONS[version:]:
            for statement in step:
                conn.execute(statement)
        if version < len(MIGRATIONS):
            conn.execute(
                "INSERT INTO notifyd_schema (one, version) VALUES (TRUE, %s) "
                "ON CONFLICT (one) DO UPDATE SET version = excluded.version",
                (len(MIGRATIONS),),
            )
    return len(MIGRATIONS)


def schema_version(conn: psycopg.Connection[Any]) -> int | None:
    """The version a database is at; None when notifyd never migrated it."""
    row = conn.execute("SELECT to_regclass('notifyd_schema')").fetchone()
    if row is None or row[0] is None:
        return None
    return _version(conn)
