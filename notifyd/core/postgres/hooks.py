"""Inbound webhooks on PostgreSQL (the :class:`~notifyd.core.store.HookStore` role)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg.types.json import Jsonb

from ..errors import Conflict
from ..store import Hook, HookStore
from .events import Conn

T = TypeVar("T")

_SELECT = (
    "SELECT h.id, h.user_id, h.name, h.topic, h.template, h.options, h.secret, h.created_at, "
    "h.last_used_at, u.name FROM hooks h JOIN users u ON u.id = h.user_id"
)


def _hook(row: tuple[Any, ...]) -> Hook:
    return Hook(
        id=row[0], user_id=row[1], name=row[2], topic=row[3], template=row[4],
        options=dict(row[5]), secret=row[6], created_at=row[7], last_used_at=row[8],
        user_name=row[9],
    )  # fmt: skip


class PostgresHookStore(HookStore):
    """Hook methods (a mixin composed with ``PostgresEventStore``, which gives ``_run``)."""

    if TYPE_CHECKING:

        async def _run(self, fn: Callable[[Conn], T]) -> T: ...

    async def create_hook(self, hook: Hook) -> Hook:
        def fn(conn: Conn) -> Hook:
            try:
                with conn.transaction():
                    conn.execute(
                        "INSERT INTO hooks (id, user_id, name, topic, template, options, secret, "
                        "created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                        (hook.id, hook.user_id, hook.name, hook.topic, hook.template,
                         Jsonb(hook.options), hook.secret, hook.created_at),
                    )  # fmt: skip
            except psycopg.errors.UniqueViolation:
                raise Conflict(
                    f"you have a hook named {hook.name!r} already", field="name"
                ) from None
            row = conn.execute(f"{_SELECT} WHERE h.id = %s", (hook.id,)).fetchone()
            assert row is not None
            return _hook(row)

        return await self._run(fn)

    async def get_hook(self, hook_id: str) -> Hook | None:
        def fn(conn: Conn) -> Hook | None:
            row = conn.execute(f"{_SELECT} WHERE h.id = %s", (hook_id,)).fetchone()
            return None if row is None else _hook(row)

        return await self._run(fn)

    async def list_hooks(self, user_id: int | None = None) -> list[Hook]:
        def fn(conn: Conn) -> list[Hook]:
            if user_id is None:
                rows = conn.execute(f"{_SELECT} ORDER BY u.name, h.name").fetchall()
            else:
                rows = conn.execute(
                    f"{_SELECT} WHERE h.user_id = %s ORDER BY h.name", (user_id,)
                ).fetchall()
            return [_hook(r) for r in rows]

        return await self._run(fn)

    async def delete_hook(self, hook_id: str, user_id: int | None = None) -> int:
        def fn(conn: Conn) -> int:
            with conn.transaction():
                if user_id is None:
                    cur = conn.execute("DELETE FROM hooks WHERE id = %s", (hook_id,))
                else:
                    cur = conn.execute(
                        "DELETE FROM hooks WHERE id = %s AND user_id = %s", (hook_id, user_id)
                    )
                return cur.rowcount

        return await self._run(fn)

    async def touch_hook(self, hook_id: str, at: str) -> None:
        def fn(conn: Conn) -> None:
            with conn.transaction():
                conn.execute(
                    "UPDATE hooks SET last_used_at = %s WHERE id = %s "
                    "AND (last_used_at IS NULL OR last_used_at < %s)",
                    (at, hook_id, at),
                )

        await self._run(fn)
