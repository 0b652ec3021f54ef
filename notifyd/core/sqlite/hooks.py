"""Inbound webhooks on SQLite (the :class:`~notifyd.core.store.HookStore` role)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from ..errors import Conflict
from ..store import Hook, HookStore

T = TypeVar("T")

_SELECT = (
    "SELECT h.id, h.user_id, h.name, h.topic, h.template, h.options, h.secret, h.created_at, "
    "h.last_used_at, u.name FROM hooks h JOIN users u ON u.id = h.user_id"
)


def _hook(row: tuple[Any, ...]) -> Hook:
    return Hook(
        id=row[0], user_id=row[1], name=row[2], topic=row[3], template=row[4],
        options=orjson.loads(row[5]), secret=row[6], created_at=row[7], last_used_at=row[8],
        user_name=row[9],
    )  # fmt: skip


class SQLiteHookStore(HookStore):
    """Hook methods; expects ``write``/``_read`` from the store."""

    if TYPE_CHECKING:  # provided by SQLiteStore

        async def write(
            self,
            fn: Callable[[sqlite3.Connection], T],
            on_commit: Callable[[T], None] | None = None,
        ) -> T: ...

        async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    async def create_hook(self, hook: Hook) -> Hook:
        def fn(conn: sqlite3.Connection) -> Hook:
            try:
                conn.execute(
                    "INSERT INTO hooks (id, user_id, name, topic, template, options, secret, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (hook.id, hook.user_id, hook.name, hook.topic, hook.template,
                     orjson.dumps(hook.options).decode(), hook.secret, hook.created_at),
                )  # fmt: skip
            except sqlite3.IntegrityError:
                raise Conflict(
                    f"you have a hook named {hook.name!r} already", field="name"
                ) from None
            return _hook(conn.execute(f"{_SELECT} WHERE h.id = ?", (hook.id,)).fetchone())

        return await self.write(fn)

    async def get_hook(self, hook_id: str) -> Hook | None:
        def fn(conn: sqlite3.Connection) -> Hook | None:
            row = conn.execute(f"{_SELECT} WHERE h.id = ?", (hook_id,)).fetchone()
            return None if row is None else _hook(row)

        return await self._read(fn)

    async def list_hooks(self, user_id: int | None = None) -> list[Hook]:
        def fn(conn: sqlite3.Connection) -> list[Hook]:
            if user_id is None:
                rows = conn.execute(f"{_SELECT} ORDER BY u.name, h.name").fetchall()
            else:
                rows = conn.execute(
                    f"{_SELECT} WHERE h.user_id = ? ORDER BY h.name", (user_id,)
                ).fetchall()
            return [_hook(r) for r in rows]

        return await self._read(fn)

    async def delete_hook(self, hook_id: str, user_id: int | None = None) -> int:
        def fn(conn: sqlite3.Connection) -> int:
            if user_id is None:
                cur = conn.execute("DELETE FROM hooks WHERE id = ?", (hook_id,))
            else:
                cur = conn.execute(
                    "DELETE FROM hooks WHERE id = ? AND user_id = ?", (hook_id, user_id)
                )
            return cur.rowcount

        return await self.write(fn)

    async def touch_hook(self, hook_id: str, at: str) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE hooks SET last_used_at = ? WHERE id = ? "
                "AND (last_used_at IS NULL OR last_used_at < ?)",
                (at, hook_id, at),
            )

        await self.write(fn)
