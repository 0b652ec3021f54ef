"""Attachments on PostgreSQL (the :class:`~notifyd.core.store.AttachmentStore` role).

In cluster mode the bytes live in the database, in ``attachment_chunks`` (rows of
:data:`CHUNK` bytes), so that any node serves any file and a backup of the
database holds them. A file is copied in with its metadata and the quota check in
one transaction, under a per-user advisory lock, so two uploads of one user on two
nodes cannot both pass the quota.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg

from ..errors import Conflict, NotFound, QuotaExceeded
from ..store import Attachment, AttachmentStore
from ..timeutil import format_ts, parse_rfc3339
from .events import Conn

T = TypeVar("T")

#: bytes per attachment_chunks row
CHUNK = 1024 * 1024
#: advisory lock class of a user's attachments ("natt"); the user id is the second key
QUOTA_LOCK = 0x6E617474
BIND_GRACE = 3600.0
_COLUMNS = "id, user_id, name, type, size, sha256, created_at, expires_at, topic, event_id"


def _attachment(row: tuple[Any, ...]) -> Attachment:
    return Attachment(
        id=row[0], user_id=int(row[1]), name=row[2], type=row[3], size=int(row[4]),
        sha256=row[5], created_at=row[6], expires_at=row[7], topic=row[8],
        event_id=None if row[9] is None else int(row[9]),
    )  # fmt: skip


class PostgresAttachmentStore(AttachmentStore):
    """Attachment methods (a mixin composed with ``PostgresEventStore``, which gives
    ``_run`` and ``clock``)."""

    if TYPE_CHECKING:
        clock: Callable[[], float]

        async def _run(self, fn: Callable[[Conn], T]) -> T: ...

    async def save_attachment(self, meta: Attachment, source: Path, quota_bytes: int) -> Attachment:
        def fn(conn: Conn) -> Attachment:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (QUOTA_LOCK, meta.user_id))
                if quota_bytes > 0:
                    row = conn.execute(
                        "SELECT coalesce(sum(size), 0) FROM attachments "
                        "WHERE user_id = %s AND expires_at > %s",
                        (meta.user_id, meta.created_at),
                    ).fetchone()
                    used = int(row[0]) if row else 0
                    if used + meta.size > quota_bytes:
                        raise QuotaExceeded(f"over the quota of {quota_bytes} bytes")
                conn.execute(
                    f"INSERT INTO attachments ({_COLUMNS}) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (meta.id, meta.user_id, meta.name, meta.type, meta.size, meta.sha256,
                     meta.created_at, meta.expires_at, meta.topic, meta.event_id),
                )  # fmt: skip
                with open(source, "rb") as f:
                    seq = 0
                    while True:
                        data = f.read(CHUNK)
                        if not data:
                            break
                        conn.execute(
                            "INSERT INTO attachment_chunks (attachment_id, user_id, seq, data) "
                            "VALUES (%s, %s, %s, %s)",
                            (meta.id, meta.user_id, seq, data),
                        )
                        seq += 1
            return meta

        return await self._run(fn)

    async def get_attachment(self, attachment_id: str) -> Attachment | None:
        def fn(conn: Conn) -> Attachment | None:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM attachments WHERE id = %s", (attachment_id,)
            ).fetchone()
            return None if row is None else _attachment(row)

        return await self._run(fn)

    async def read_attachment(self, attachment_id: str, offset: int, length: int) -> bytes:
        def fn(conn: Conn) -> bytes:
            found = conn.execute("SELECT 1 FROM attachments WHERE id = %s", (attachment_id,))
            if found.fetchone() is None:
                raise NotFound("the attachment is gone", field="id")
            if length <= 0:
                return b""
            first, last = offset // CHUNK, (offset + length - 1) // CHUNK
            rows = conn.execute(
                "SELECT substring(data FROM (CASE WHEN seq = %s THEN %s ELSE 1 END) FOR %s) "
                "FROM attachment_chunks WHERE attachment_id = %s AND seq BETWEEN %s AND %s "
                "ORDER BY seq",
                (first, offset - first * CHUNK + 1, length, attachment_id, first, last),
            ).fetchall()
            parts = [bytes(r[0]) for r in rows]
            return b"".join(parts)[:length]

        return await self._run(fn)

    async def bind_attachment(self, attachment_id: str, user_id: int, topic: str) -> Attachment:
        now = format_ts(self.clock())

        def fn(conn: Conn) -> Attachment:
            with conn.transaction():
                row = conn.execute(
                    f"SELECT {_COLUMNS} FROM attachments WHERE id = %s FOR UPDATE",
                    (attachment_id,),
                ).fetchone()
                if row is None or int(row[1]) != user_id or row[7] <= now:
                    raise NotFound(
                        f"no attachment {attachment_id} of yours (uploads expire)", field="id"
                    )
                if row[8] is not None and row[8] != topic:  # same topic: a retry
                    raise Conflict(
                        f"attachment {attachment_id} belongs to another event", field="id"
                    )
                conn.execute(
                    "UPDATE attachments SET topic = %s WHERE id = %s", (topic, attachment_id)
                )
            return _attachment((*row[:8], topic, row[9] if row[8] == topic else None))

        return await self._run(fn)

    async def set_attachment_event(self, attachment_id: str, event_id: int) -> None:
        def fn(conn: Conn) -> None:
            conn.execute(
                "UPDATE attachments SET event_id = %s WHERE id = %s", (event_id, attachment_id)
            )

        await self._run(fn)

    async def server_key(self, name: str) -> bytes:
        fresh, made = secrets.token_bytes(32), format_ts(self.clock())  # clock: on the loop

        def fn(conn: Conn) -> bytes:
            with conn.transaction():
                conn.execute(
                    "INSERT INTO server_keys (name, value, created_at) VALUES (%s, %s, %s) "
                    "ON CONFLICT (name) DO NOTHING",
                    (name, fresh, made),
                )
                row = conn.execute(
                    "SELECT value FROM server_keys WHERE name = %s", (name,)
                ).fetchone()
            assert row is not None
            return bytes(row[0])

        return await self._run(fn)

    async def attachment_usage(self, user_id: int, now: str) -> int:
        def fn(conn: Conn) -> int:
            row = conn.execute(
                "SELECT coalesce(sum(size), 0) FROM attachments WHERE user_id = %s "
                "AND expires_at > %s",
                (user_id, now),
            ).fetchone()
            return int(row[0]) if row else 0

        return await self._run(fn)

    async def prune_attachments(self, now: str, limit: int) -> int:
        grace = format_ts(parse_rfc3339(now) - BIND_GRACE)

        def fn(conn: Conn) -> int:
            with conn.transaction():
                ids = [
                    r[0]
                    for r in conn.execute(
                        "SELECT a.id FROM attachments a WHERE a.expires_at <= %s "
                        "OR (a.event_id > 0 AND NOT EXISTS (SELECT 1 FROM events e "
                        "WHERE e.id = a.event_id)) "
                        "OR (a.topic IS NOT NULL AND a.event_id IS NULL AND a.created_at < %s) "
                        "LIMIT %s FOR UPDATE SKIP LOCKED",
                        (now, grace, limit),
                    )
                ]
                if ids:
                    conn.execute(
                        "DELETE FROM attachment_chunks WHERE attachment_id = ANY(%s)", (ids,)
                    )
                    conn.execute("DELETE FROM attachments WHERE id = ANY(%s)", (ids,))
                if len(ids) < limit:
                    # chunks whose row went another way (a user's removal sweeps both)
                    conn.execute(
                        "DELETE FROM attachment_chunks c WHERE NOT EXISTS "
                        "(SELECT 1 FROM attachments a WHERE a.id = c.attachment_id) "
                        "AND c.attachment_id IN (SELECT DISTINCT attachment_id FROM "
                        "attachment_chunks c2 WHERE NOT EXISTS (SELECT 1 FROM attachments a2 "
                        "WHERE a2.id = c2.attachment_id) LIMIT %s)",
                        (limit,),
                    )
                return len(ids)

        try:
            return await self._run(fn)
        except psycopg.errors.LockNotAvailable:
            return 0
