"""Attachments on SQLite (the :class:`~notifyd.core.store.AttachmentStore` role).

The metadata is a row of ``attachments``; the bytes are a file
``<directory of the database>/attachments/<id>`` (``<data_dir>/attachments`` by
default). A file is moved there (and the directory synced) before its row is
written, so a crash leaves at worst a file without a row, which
:meth:`prune_attachments` removes; the writer thread only ever writes the small row.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from ..errors import Conflict, NotFound, QuotaExceeded
from ..store import Attachment, AttachmentStore
from ..timeutil import format_ts, parse_rfc3339

T = TypeVar("T")

_COLUMNS = "id, user_id, name, type, size, sha256, created_at, expires_at, topic, event_id"
#: a file bound to an event that was never stored is removed after this long
BIND_GRACE = 3600.0


def _attachment(row: tuple[Any, ...]) -> Attachment:
    return Attachment(
        id=row[0], user_id=row[1], name=row[2], type=row[3], size=row[4], sha256=row[5],
        created_at=row[6], expires_at=row[7], topic=row[8], event_id=row[9],
    )  # fmt: skip


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _place(source: Path, dest: Path) -> None:
    """Move ``source`` to ``dest`` durably (a copy when they are on different disks)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(source, dest)
    except OSError:
        tmp = dest.with_name(dest.name + ".part")
        with open(source, "rb") as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, 1024 * 1024)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    _sync_dir(dest.parent)


class SQLiteAttachmentStore(AttachmentStore):
    """Attachment methods; expects ``write``/``_read``/``path``/``clock`` from the store."""

    if TYPE_CHECKING:  # provided by SQLiteStore
        path: str
        clock: Callable[[], float]

        async def write(
            self,
            fn: Callable[[sqlite3.Connection], T],
            on_commit: Callable[[T], None] | None = None,
        ) -> T: ...

        async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    @property
    def attachment_dir(self) -> Path:
        return Path(self.path).parent / "attachments"

    def _saving(self) -> set[str]:
        """Ids whose file is in place but whose row is not committed yet."""
        saving: set[str] | None = self.__dict__.get("_attachments_saving")
        if saving is None:
            saving = self.__dict__["_attachments_saving"] = set()
        return saving

    async def save_attachment(self, meta: Attachment, source: Path, quota_bytes: int) -> Attachment:
        dest = self.attachment_dir / meta.id
        saving = self._saving()
        saving.add(meta.id)
        try:
            await trio.to_thread.run_sync(_place, source, dest)

            def fn(conn: sqlite3.Connection) -> None:
                if quota_bytes > 0:
                    (used,) = conn.execute(
                        "SELECT coalesce(sum(size), 0) FROM attachments "
                        "WHERE user_id = ? AND expires_at > ?",
                        (meta.user_id, meta.created_at),
                    ).fetchone()
                    if used + meta.size > quota_bytes:
                        raise QuotaExceeded(f"over the quota of {quota_bytes} bytes")
                conn.execute(
                    f"INSERT INTO attachments ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (meta.id, meta.user_id, meta.name, meta.type, meta.size, meta.sha256,
                     meta.created_at, meta.expires_at, meta.topic, meta.event_id),
                )  # fmt: skip

            try:
                await self.write(fn)
            except BaseException:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(lambda: dest.unlink(missing_ok=True))
                raise
        finally:
            saving.discard(meta.id)
        return meta

    async def get_attachment(self, attachment_id: str) -> Attachment | None:
        def fn(conn: sqlite3.Connection) -> Attachment | None:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM attachments WHERE id = ?", (attachment_id,)
            ).fetchone()
            return None if row is None else _attachment(row)

        return await self._read(fn)

    async def read_attachment(self, attachment_id: str, offset: int, length: int) -> bytes:
        path = self.attachment_dir / attachment_id

        def fn() -> bytes:
            try:
                with open(path, "rb") as f:
                    f.seek(offset)
                    return f.read(length)
            except FileNotFoundError:
                raise NotFound("the attachment is gone", field="id") from None

        if "/" in attachment_id or attachment_id in ("", ".", ".."):
            raise NotFound("the attachment is gone", field="id")
        return await trio.to_thread.run_sync(fn)

    async def bind_attachment(self, attachment_id: str, user_id: int, topic: str) -> Attachment:
        now = format_ts(self.clock())

        def fn(conn: sqlite3.Connection) -> Attachment:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM attachments WHERE id = ?", (attachment_id,)
            ).fetchone()
            if row is None or row[1] != user_id or row[7] <= now:
                raise NotFound(
                    f"no attachment {attachment_id} of yours (uploads expire)", field="id"
                )
            if row[8] is not None and row[8] != topic:  # same topic: a retry
                raise Conflict(f"attachment {attachment_id} belongs to another event", field="id")
            conn.execute("UPDATE attachments SET topic = ? WHERE id = ?", (topic, attachment_id))
            return _attachment((*row[:8], topic, row[9] if row[8] == topic else None))

        return await self.write(fn)

    async def set_attachment_event(self, attachment_id: str, event_id: int) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE attachments SET event_id = ? WHERE id = ?", (event_id, attachment_id)
            )

        await self.write(fn)

    async def server_key(self, name: str) -> bytes:
        def read(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute("SELECT value FROM server_keys WHERE name = ?", (name,)).fetchone()
            return None if row is None else bytes(row[0])

        # read first: the delivery worker reads the key the daemon made at its start
        known = await self._read(read)
        if known is not None:
            return known
        fresh, made = secrets.token_bytes(32), format_ts(self.clock())  # clock: on the loop

        def fn(conn: sqlite3.Connection) -> bytes:
            conn.execute(
                "INSERT OR IGNORE INTO server_keys (name, value, created_at) VALUES (?, ?, ?)",
                (name, fresh, made),
            )
            (value,) = conn.execute(
                "SELECT value FROM server_keys WHERE name = ?", (name,)
            ).fetchone()
            return bytes(value)

        return await self.write(fn)

    async def attachment_usage(self, user_id: int, now: str) -> int:
        def fn(conn: sqlite3.Connection) -> int:
            (used,) = conn.execute(
                "SELECT coalesce(sum(size), 0) FROM attachments WHERE user_id = ? "
                "AND expires_at > ?",
                (user_id, now),
            ).fetchone()
            return int(used)

        return await self._read(fn)

    async def prune_attachments(self, now: str, limit: int) -> int:
        grace = format_ts(parse_rfc3339(now) - BIND_GRACE)

        def fn(conn: sqlite3.Connection) -> list[str]:
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT a.id FROM attachments a WHERE a.expires_at <= ? "
                    "OR (a.event_id > 0 AND NOT EXISTS (SELECT 1 FROM events e "
                    "WHERE e.id = a.event_id)) "
                    "OR (a.topic IS NOT NULL AND a.event_id IS NULL AND a.created_at < ?) "
                    "LIMIT ?",
                    (now, grace, limit),
                )
            ]
            conn.executemany("DELETE FROM attachments WHERE id = ?", [(i,) for i in ids])
            return ids

        gone = await self.write(fn)
        directory = self.attachment_dir

        def unlink(names: list[str]) -> None:
            for name in names:
                (directory / name).unlink(missing_ok=True)

        if gone:
            await trio.to_thread.run_sync(unlink, gone)
        if len(gone) < limit:
            await self._prune_orphans(limit - len(gone))
        return len(gone)

    async def _prune_orphans(self, limit: int) -> int:
        """Files without a row (a crash between the move and the insert, or rows
        removed with their user); never one being saved right now."""
        directory = self.attachment_dir

        def listing() -> list[str]:
            try:
                return [e.name for e in os.scandir(directory) if e.is_file()]
            except FileNotFoundError:
                return []

        names = await trio.to_thread.run_sync(listing)
        if not names:
            return 0
        # taken after the listing: a listed file whose id is not being saved now
        # already has its row committed (the id leaves the set only after that)
        saving = set(self._saving())

        def known(conn: sqlite3.Connection) -> set[str]:
            found: set[str] = set()
            for start in range(0, len(names), 500):
                part = names[start : start + 500]
                marks = ", ".join("?" * len(part))
                found.update(
                    r[0]
                    for r in conn.execute(f"SELECT id FROM attachments WHERE id IN ({marks})", part)
                )
            return found

        have = await self._read(known)
        orphans = [n for n in names if n not in have and n not in saving][:limit]

        def unlink() -> None:
            for name in orphans:
                (directory / name).unlink(missing_ok=True)

        if orphans:
            await trio.to_thread.run_sync(unlink)
        return len(orphans)
