"""Schema migrations, applied in order, each in its own transaction.

``PRAGMA user_version`` records how many have run. Never edit a migration that has
shipped: add a new one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # sqlite_utils imports click; keep it off the core's import path
    import sqlite_utils


def _m001_initial(db: sqlite_utils.Database) -> None:
    db.execute(
        """
        CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            topic TEXT NOT NULL,
            title TEXT NOT NULL DEFAULT '',
            body TEXT NOT NULL DEFAULT '',
            format TEXT NOT NULL DEFAULT 'text',
            priority INTEGER NOT NULL DEFAULT 3,
            category TEXT NOT NULL DEFAULT 'general',
            tags TEXT,
            click TEXT,
            icon TEXT,
            image TEXT,
            actions TEXT,
            sensitive INTEGER NOT NULL DEFAULT 0,
            collapse_key TEXT,
            deliver_at TEXT,
            expires_at TEXT,
            created_at TEXT NOT NULL,
            superseded_by INTEGER,
            publisher_id INTEGER
        )
        """
    )
    events = db.table("events")
    events.create_index(["topic", "id"])
    events.create_index(["category", "id"])
    events.create_index(["created_at"])
    db.execute(
        "CREATE INDEX idx_events_collapse ON events(topic, collapse_key) "
        "WHERE collapse_key IS NOT NULL"
    )
    db.execute("CREATE INDEX idx_events_expires ON events(expires_at) WHERE expires_at IS NOT NULL")
    events.enable_fts(["title", "body"], fts_version="FTS5", create_triggers=True)
    # sqlite-utils' update trigger fires on every column; marking an event superseded
    # must not re-index its text.
    db.execute('DROP TRIGGER "events_au"')
    db.execute(
        """
        CREATE TRIGGER events_au AFTER UPDATE OF title, body ON events BEGIN
          INSERT INTO events_fts (events_fts, rowid, title, body)
            VALUES ('delete', old.rowid, old.title, old.body);
          INSERT INTO events_fts (rowid, title, body) VALUES (new.rowid, new.title, new.body);
        END
        """
    )

    db.table("scheduled").create(
        {
            "id": int,
            "deliver_at": str,
            "publisher_id": int,
            "payload": str,
            "created_at": str,
        },
        pk="id",
    )
    db.table("scheduled").create_index(["deliver_at"])

    db.table("users").create(
        {
            "id": int,
            "name": str,
            "role": str,
            "password_hash": str,
            "tz": str,
            "created_at": str,
        },
        pk="id",
        not_null={"name", "role", "created_at"},
        defaults={"role": "user", "tz": "UTC"},
    )
    db.table("users").create_index(["name"], unique=True)

    db.table("tokens").create(
        {
            "id": int,
            "user_id": int,
            "hash": str,
            "prefix": str,
            "label": str,
            "scopes": str,
            "topics": str,
            "created_at": str,
            "last_used_at": str,
            "expires_at": str,
        },
        pk="id",
        not_null={"user_id", "hash", "scopes", "created_at"},
        foreign_keys=[("user_id", "users", "id")],
    )
    db.table("tokens").create_index(["hash"], unique=True)
    db.table("tokens").create_index(["user_id"])

    db.table("acl").create(
        {
            "id": int,
            "user_id": int,
            "pattern": str,
            "read": int,
            "write": int,
            "created_at": str,
        },
        pk="id",
        not_null={"user_id", "pattern", "read", "write"},
        foreign_keys=[("user_id", "users", "id")],
    )
    db.table("acl").create_index(["user_id", "pattern"], unique=True)

    # Per-user read state. `read` NULL means "no explicit mark": the user's
    # inbox_marks.read_upto watermark decides. 1/0 are explicit read/unread.
    db.execute(
        """
        CREATE TABLE receipts (
            user_id INTEGER NOT NULL,
            event_id INTEGER NOT NULL,
            read INTEGER,
            seen_at TEXT,
            read_at TEXT,
            archived_at TEXT,
            clicked_at TEXT,
            action TEXT,
            PRIMARY KEY (user_id, event_id)
        ) WITHOUT ROWID
        """
    )
    db.execute("CREATE INDEX idx_receipts_event ON receipts(event_id)")
    db.execute("CREATE TABLE inbox_marks (user_id INTEGER PRIMARY KEY, read_upto INTEGER NOT NULL)")
    db.execute(
        """
        CREATE TABLE idempotency (
            user_id INTEGER NOT NULL,
            key TEXT NOT NULL,
            event_ids TEXT NOT NULL,
            batch INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (user_id, key)
        ) WITHOUT ROWID
        """
    )
    db.execute("CREATE INDEX idx_idempotency_created ON idempotency(created_at)")


def _m002_bulk_fts(db: sqlite_utils.Database) -> None:
    # Indexing new events with one INSERT … SELECT per transaction (in
    # store._insert_events) costs a fifth of what the per-row trigger did.
    db.execute('DROP TRIGGER IF EXISTS "events_ai"')


def _m003_delivery(db: sqlite_utils.Database) -> None:
    db.execute(
        """
        CREATE TABLE channels (
            id INTEGER PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users(id),
            name TEXT NOT NULL,
            kind TEXT NOT NULL,
            config TEXT NOT NULL,
            enabled INTEGER NOT NULL DEFAULT 1,
            created_at TEXT NOT NULL,
            last_success_at TEXT,
            last_error TEXT,
            last_error_at TEXT,
            UNIQUE (user_id, name)
        )
        """
    )
    # The outbox: one row per (event, user, channel), written in the event's
    # transaction. state: pending -> sent | pending (retry) | dead (m005: no more
    # 'sending'; m009: what is in flight is claimed with a lease).
    db.execute(
        """
        CREATE TABLE deliveries (
            id INTEGER PRIMARY KEY,
            event_id INTEGER NOT NULL,
            user_id INTEGER NOT NULL,
            channel_id INTEGER NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT NOT NULL,
            last_error TEXT,
            created_at TEXT NOT NULL,
            sent_at TEXT
        )
        """
    )
    db.execute(
        "CREATE INDEX idx_deliveries_due ON deliveries(next_attempt_at) WHERE state = 'pending'"
    )
    db.execute("CREATE INDEX idx_deliveries_state ON deliveries(state, id)")
    db.execute("CREATE INDEX idx_deliveries_event ON deliveries(event_id)")
    db.execute("CREATE INDEX idx_deliveries_channel ON deliveries(channel_id)")


def _m004_preferences(db: sqlite_utils.Database) -> None:
    db.execute(
        "CREATE TABLE preferences (user_id INTEGER PRIMARY KEY, doc TEXT NOT NULL, updated_at TEXT NOT NULL)"
    )
    # Held deliveries (quiet hours, digest windows, rate limits) that share a key
    # go out together as one notification.
    db.execute("ALTER TABLE deliveries ADD COLUMN digest_key TEXT")
    db.execute(
        "CREATE INDEX idx_deliveries_digest ON deliveries(channel_id, digest_key) "
        "WHERE digest_key IS NOT NULL AND state = 'pending'"
    )


def _m005_inflight_in_memory(db: sqlite_utils.Database) -> None:
    # The outbox keeps what it is sending in memory (a claim is no longer a write);
    # rows an older version left 'sending' are due again.
    db.execute("UPDATE deliveries SET state = 'pending' WHERE state = 'sending'")


def _m006_sessions(db: sqlite_utils.Database) -> None:
    # Web sign-in sessions: like tokens, only the SHA-256 of the secret is stored.
    db.execute(
        """
        CREATE TABLE sessions (
            id INTEGER PRIMARY KEY,
            user_id INTEGER NOT NULL,
            hash TEXT NOT NULL UNIQUE,
            user_agent TEXT,
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX idx_sessions_user ON sessions(user_id)")
    db.execute("CREATE INDEX idx_sessions_expiry ON sessions(expires_at)")


def _m007_event_extras(db: sqlite_utils.Database) -> None:
    # What a compatibility layer keeps with an event (Gotify: the publishing
    # application token, its `extras` object as sent), outside the event object.
    # Written in the event's transaction, deleted with the event.
    db.execute(
        """
        CREATE TABLE event_extras (
            event_id INTEGER PRIMARY KEY,
            token_id INTEGER,
            extras TEXT
        )
        """
    )


def _m008_bulk_fts_delete(db: sqlite_utils.Database) -> None:
    # Deleting events (retention, expiry) updates the full-text index with one
    # statement per batch (maintenance.delete_events), like inserting does since
    # m002: the per-row trigger made pruning a million events three times slower.
    db.execute('DROP TRIGGER IF EXISTS "events_ad"')


def _m009_claims(db: sqlite_utils.Database) -> None:
    # Explicit claims with leases (one interface for every engine: a PostgreSQL
    # cluster has several senders). A claim sets claimed_by (the owner,
    # "<node>/<process>") and lease_until, and moves next_attempt_at to the lease's
    # end: idx_deliveries_due then finds expired leases as due rows with no extra
    # condition, and a claimed row is never due twice while its lease runs.
    # Outcomes apply only where claimed_by is still the sender's.
    # Finished rows (and rows that died with their channel) drop their claim, so the
    # partial index holds only what is in flight.
    db.execute("ALTER TABLE deliveries ADD COLUMN claimed_by TEXT")
    db.execute("ALTER TABLE deliveries ADD COLUMN lease_until TEXT")
    db.execute(
        "CREATE INDEX idx_deliveries_claimed ON deliveries(claimed_by) WHERE claimed_by IS NOT NULL"
    )


def _m010_session_groups(db: sqlite_utils.Database) -> None:
    # A session signed in through single sign-on remembers the groups the provider
    # named (a JSON list), so group_grants hold for as long as the session lasts.
    db.execute("ALTER TABLE sessions ADD COLUMN group_names TEXT")


def _m011_integrations(db: sqlite_utils.Database) -> None:
    # Inbound webhooks (core/hooks.py): the secret is kept as issued, because
    # GitHub's and Gitea's HMAC signatures can only be checked with the secret
    # itself; the API never returns it after creation.
    db.execute(
        """
        CREATE TABLE hooks (
            id TEXT PRIMARY KEY,
            user_id INTEGER NOT NULL,
            name TEXT NOT NULL,
            topic TEXT NOT NULL,
            template TEXT NOT NULL,
            options TEXT NOT NULL DEFAULT '{}',
            secret TEXT NOT NULL,
            created_at TEXT NOT NULL,
            last_used_at TEXT,
            UNIQUE (user_id, name)
        )
        """
    )
    # Attachments: the metadata here, the bytes in <data_dir>/attachments/<id>.
    # topic is set when an event takes the file (who may read it), event_id once
    # that event is stored; expired and orphaned files are pruned.
    db.execute(
        """
        CREATE TABLE attachments (
            id TEXT PRIMARY KEY,
            user_id INTEGER NOT NULL,
            name TEXT NOT NULL,
            type TEXT NOT NULL,
            size INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            topic TEXT,
            event_id INTEGER
        )
        """
    )
    db.execute("CREATE INDEX idx_attachments_user ON attachments(user_id, expires_at)")
    db.execute("CREATE INDEX idx_attachments_expires ON attachments(expires_at)")
    db.execute(
        "CREATE INDEX idx_attachments_event ON attachments(event_id) WHERE event_id IS NOT NULL"
    )
    # the event's attachment object (JSON: id, name, type, size, expires_at; or an
    # external url and name), part of the event as every door shows it
    db.execute("ALTER TABLE events ADD COLUMN attachment TEXT")


def _m012_server_keys(db: sqlite_utils.Database) -> None:
    # Random keys of this installation, made once (e.g. the one that signs the links
    # to attached images that pushes carry: phones fetch them without credentials).
    db.execute(
        "CREATE TABLE server_keys (name TEXT PRIMARY KEY, value BLOB NOT NULL, "
        "created_at TEXT NOT NULL)"
    )


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _m001_initial,
    _m002_bulk_fts,
    _m003_delivery,
    _m004_preferences,
    _m005_inflight_in_memory,
    _m006_sessions,
    _m007_event_extras,
    _m008_bulk_fts_delete,
    _m009_claims,
    _m010_session_groups,
    _m011_integrations,
    _m012_server_keys,
]


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the database up to date; returns the schema version."""
    import sqlite_utils

    db = sqlite_utils.Database(conn)
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            step(db)
            conn.execute(f"PRAGMA user_version = {number}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    return len(MIGRATIONS)
