"""The account role (:class:`~notifyd.core.store.AccountStore`) on PostgreSQL: users,
tokens (stored by hash), web sessions, ACL grants, preferences.

:class:`PostgresAccountStore` is a mixin composed with
:class:`~notifyd.core.postgres.events.PostgresEventStore`, whose connection pool
and worker threads (``_run``) it uses. Values are stored as the SQLite engine
stores them (times as RFC 3339 text, a token's scopes comma-separated), and
lists come in the same order (names by code point, ``COLLATE "C"``, as SQLite
compares them).

Removing a user runs in one transaction that first takes an advisory lock
(:data:`REMOVAL_LOCK`): removals on different nodes run one after the other, so
two admins removing each other at once cannot leave the cluster without one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from ..acl import Grant
from ..errors import Conflict, NotFound
from ..store import AccountStore, AclEntry, Token, User, decode_groups, encode_groups
from ..timeutil import format_ts, now_rfc3339
from .events import Conn

T = TypeVar("T")

#: the advisory lock key of user removal ("users" in ASCII)
REMOVAL_LOCK = 0x7573657273

_USER_COLS = "id, name, role, tz, created_at, password_hash"
#: what a user owns, in the order it is deleted with them (children before
#: parents); tables of later migrations with a ``user_id`` follow (see delete_user)
_USER_TABLES = (
    "deliveries", "channels", "preferences", "sessions", "tokens", "acl", "receipts",
    "inbox_marks", "idempotency",
)  # fmt: skip
_TOKEN_SELECT = (
    "SELECT t.id, t.user_id, u.name, t.prefix, t.label, t.scopes, t.topics, t.created_at, "
    "t.last_used_at FROM tokens t JOIN users u ON u.id = t.user_id"
)
_ACL_SELECT = (
    "SELECT a.id, u.name, a.pattern, a.read, a.write FROM acl a JOIN users u ON u.id = a.user_id"
)


def _user(row: tuple[Any, ...]) -> User:
    return User(
        id=int(row[0]), name=row[1], role=row[2], tz=row[3] or "UTC", created_at=row[4],
        has_password=row[5] is not None,
    )  # fmt: skip


def _token(row: tuple[Any, ...]) -> Token:
    return Token(
        id=int(row[0]), user_id=int(row[1]), user=row[2], prefix=row[3], label=row[4],
        scopes=tuple(s for s in row[5].split(",") if s), topics=row[6], created_at=row[7],
        last_used_at=row[8],
    )  # fmt: skip


def _user_id(conn: Conn, name: str, field: str = "name", lock: str = "") -> tuple[int, str]:
    row = conn.execute(f"SELECT id, role FROM users WHERE name = %s {lock}", (name,)).fetchone()
    if row is None:
        raise NotFound(f"no user named {name!r}", field=field)
    return int(row[0]), str(row[1])


def _delete_user(conn: Conn, name: str) -> None:
    # the caller is in a transaction
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (REMOVAL_LOCK,))
    user_id, role = _user_id(conn, name, lock="FOR UPDATE")
    other_admin = conn.execute(
        "SELECT 1 FROM users WHERE role = 'admin' AND id != %s LIMIT 1", (user_id,)
    ).fetchone()
    if role == "admin" and other_admin is None:
        raise Conflict(
            f"{name!r} is the last admin; make another user an admin first", field="name"
        )
    present = {
        str(r[0])
        for r in conn.execute(
            "SELECT c.relname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "WHERE a.attname = 'user_id' AND NOT a.attisdropped AND c.relkind IN ('r', 'p') "
            "AND c.relnamespace = current_schema()::regnamespace"
        )
    }
    # Deliveries to the user's channels go first (they point at the channels),
    # then the channels and the rest, then tables of later migrations that hold
    # a user_id (nothing in them may outlive its user either); all in this
    # transaction.
    tables = present - {"users"}
    row = conn.execute(
        "SELECT to_regclass('deliveries') IS NOT NULL AND to_regclass('channels') IS NOT NULL"
    ).fetchone()
    if row is not None and row[0]:
        conn.execute(
            "DELETE FROM deliveries WHERE channel_id IN (SELECT id FROM channels WHERE user_id = %s)",
            (user_id,),
        )
    ordered = [t for t in _USER_TABLES if t in tables] + sorted(tables - set(_USER_TABLES))
    for table in ordered:
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE user_id = %s").format(sql.Identifier(table)),
            (user_id,),
        )
    conn.execute("DELETE FROM users WHERE id = %s", (user_id,))


class PostgresAccountStore(AccountStore):
    """The account role; compose with ``PostgresEventStore`` (first in the bases:
    it gives ``_run``)."""

    if TYPE_CHECKING:

        async def _run(self, fn: Callable[[Conn], T]) -> T: ...

    # -- users --

    async def create_user(self, name: str, role: str, password_hash: str | None) -> User:
        def fn(conn: Conn) -> User:
            try:
                row = conn.execute(
                    "INSERT INTO users (name, role, password_hash, tz, created_at) "
                    f"VALUES (%s, %s, %s, 'UTC', %s) RETURNING {_USER_COLS}",
                    (name, role, password_hash, now_rfc3339()),
                ).fetchone()
            except psycopg.errors.UniqueViolation:
                raise Conflict(f"a user named {name!r} exists already", field="name") from None
            assert row is not None
            return _user(row)

        return await self._run(fn)

    async def list_users(self) -> list[User]:
        return await self._run(
            lambda c: [
                _user(r)
                for r in c.execute(f'SELECT {_USER_COLS} FROM users ORDER BY name COLLATE "C"')
            ]
        )

    async def get_user(self, name: str) -> User | None:
        def fn(conn: Conn) -> User | None:
            row = conn.execute(
                f"SELECT {_USER_COLS} FROM users WHERE name = %s", (name,)
            ).fetchone()
            return None if row is None else _user(row)

        return await self._run(fn)

    async def get_user_by_id(self, user_id: int) -> User | None:
        def fn(conn: Conn) -> User | None:
            row = conn.execute(
                f"SELECT {_USER_COLS} FROM users WHERE id = %s", (user_id,)
            ).fetchone()
            return None if row is None else _user(row)

        return await self._run(fn)

    async def password_hash(self, name: str) -> tuple[int, str] | None:
        def fn(conn: Conn) -> tuple[int, str] | None:
            row = conn.execute(
                "SELECT id, password_hash FROM users WHERE name = %s AND password_hash IS NOT NULL",
                (name,),
            ).fetchone()
            return None if row is None else (int(row[0]), str(row[1]))

        return await self._run(fn)

    async def set_password(
        self, name: str, password_hash: str, keep_session: str | None = None
    ) -> None:
        def fn(conn: Conn) -> None:
            with conn.transaction():
                row = conn.execute(
                    "UPDATE users SET password_hash = %s WHERE name = %s RETURNING id",
                    (password_hash, name),
                ).fetchone()
                if row is None:
                    raise NotFound(f"no user named {name!r}", field="name")
                conn.execute(
                    "DELETE FROM sessions WHERE user_id = %s AND hash IS DISTINCT FROM %s",
                    (row[0], keep_session),
                )

        await self._run(fn)

    async def delete_user(self, name: str) -> None:
        def fn(conn: Conn) -> None:
            with conn.transaction():
                _delete_user(conn, name)

        await self._run(fn)

    # -- tokens --

    async def create_token(
        self,
        user_id: int,
        token_hash: str,
        prefix: str,
        scopes: tuple[str, ...],
        topics: str | None,
        label: str | None,
    ) -> Token:
        def fn(conn: Conn) -> Token:
            with conn.transaction():
                row = conn.execute(
                    "INSERT INTO tokens (user_id, hash, prefix, label, scopes, topics, created_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
                    (user_id, token_hash, prefix, label, ",".join(scopes), topics, now_rfc3339()),
                ).fetchone()
                assert row is not None
                token = conn.execute(f"{_TOKEN_SELECT} WHERE t.id = %s", (row[0],)).fetchone()
                assert token is not None
                return _token(token)

        return await self._run(fn)

    async def token_by_hash(self, token_hash: str) -> Token | None:
        def fn(conn: Conn) -> Token | None:
            row = conn.execute(f"{_TOKEN_SELECT} WHERE t.hash = %s", (token_hash,)).fetchone()
            return None if row is None else _token(row)

        return await self._run(fn)

    async def touch_tokens(self, uses: list[tuple[int, float]]) -> None:
        # the latest use of each token, in id order (so that nodes touching the
        # same tokens lock them in one order); a use never moves the time back
        latest: dict[int, float] = {}
        for token_id, ts in uses:
            latest[token_id] = max(ts, latest.get(token_id, ts))
        rows = [(format_ts(latest[i]), i) for i in sorted(latest)]
        if not rows:
            return

        def fn(conn: Conn) -> None:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(
                    "UPDATE tokens SET last_used_at = GREATEST(last_used_at, %s) WHERE id = %s",
                    rows,
                )

        await self._run(fn)

    async def list_tokens(self, user_id: int | None = None) -> list[Token]:
        def fn(conn: Conn) -> list[Token]:
            if user_id is None:
                rows = conn.execute(f"{_TOKEN_SELECT} ORDER BY t.id")
            else:
                rows = conn.execute(
                    f"{_TOKEN_SELECT} WHERE t.user_id = %s ORDER BY t.id", (user_id,)
                )
            return [_token(r) for r in rows]

        return await self._run(fn)

    async def revoke_token(self, token_id: int, user_id: int | None = None) -> int:
        def fn(conn: Conn) -> int:
            if user_id is None:
                row = conn.execute(
                    "DELETE FROM tokens WHERE id = %s RETURNING user_id", (token_id,)
                ).fetchone()
            else:
                row = conn.execute(
                    "DELETE FROM tokens WHERE id = %s AND user_id = %s RETURNING user_id",
                    (token_id, user_id),
                ).fetchone()
            if row is None:
                raise NotFound(f"no token with id {token_id}", field="id")
            return int(row[0])

        return await self._run(fn)

    # -- web sessions --

    async def create_session(
        self,
        user_id: int,
        secret_hash: str,
        user_agent: str | None,
        expires_at: float,
        groups: tuple[str, ...] = (),
    ) -> None:
        group_names = encode_groups(groups)
        await self._run(
            lambda c: c.execute(
                "INSERT INTO sessions (user_id, hash, user_agent, created_at, expires_at, "
                "group_names) VALUES (%s, %s, %s, %s, %s, %s)",
                (
                    user_id,
                    secret_hash,
                    user_agent,
                    now_rfc3339(),
                    format_ts(expires_at),
                    group_names,
                ),
            )  # fmt: skip
        )

    async def session_user(self, secret_hash: str, now: float) -> int | None:
        found = await self.session(secret_hash, now)
        return None if found is None else found[0]

    async def session(self, secret_hash: str, now: float) -> tuple[int, tuple[str, ...]] | None:
        def fn(conn: Conn) -> tuple[int, tuple[str, ...]] | None:
            row = conn.execute(
                "SELECT user_id, group_names FROM sessions WHERE hash = %s AND expires_at > %s",
                (secret_hash, format_ts(now)),
            ).fetchone()
            return None if row is None else (int(row[0]), decode_groups(row[1]))

        return await self._run(fn)

    async def delete_session(self, secret_hash: str) -> None:
        await self._run(lambda c: c.execute("DELETE FROM sessions WHERE hash = %s", (secret_hash,)))

    async def prune_sessions(self, now: float) -> int:
        return await self._run(
            lambda c: (
                c.execute("DELETE FROM sessions WHERE expires_at <= %s", (format_ts(now),)).rowcount
            )
        )

    # -- ACL grants --

    async def grants(self, user_id: int) -> tuple[Grant, ...]:
        def fn(conn: Conn) -> tuple[Grant, ...]:
            rows = conn.execute(
                "SELECT pattern, read, write FROM acl WHERE user_id = %s ORDER BY id", (user_id,)
            )
            return tuple(Grant(r[0], bool(r[1]), bool(r[2])) for r in rows)

        return await self._run(fn)

    async def grant(self, user: str, pattern: str, read: bool, write: bool) -> AclEntry:
        def fn(conn: Conn) -> AclEntry:
            with conn.transaction():
                # FOR KEY SHARE: a removal of the user waits for this grant
                user_id, _ = _user_id(conn, user, field="user", lock="FOR KEY SHARE")
                row = conn.execute(
                    "INSERT INTO acl (user_id, pattern, read, write, created_at) "
                    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (user_id, pattern) "
                    "DO UPDATE SET read = excluded.read, write = excluded.write RETURNING id",
                    (user_id, pattern, read, write, now_rfc3339()),
                ).fetchone()
                assert row is not None
                return AclEntry(id=int(row[0]), user=user, pattern=pattern, read=read, write=write)

        return await self._run(fn)

    async def list_acl(self, user: str | None = None) -> list[AclEntry]:
        def fn(conn: Conn) -> list[AclEntry]:
            rows = (
                conn.execute(_ACL_SELECT + " WHERE u.name = %s ORDER BY a.id", (user,))
                if user is not None
                else conn.execute(_ACL_SELECT + ' ORDER BY u.name COLLATE "C", a.id')
            )
            return [AclEntry(int(r[0]), r[1], r[2], bool(r[3]), bool(r[4])) for r in rows]

        return await self._run(fn)

    async def revoke_acl(self, user: str, pattern: str) -> None:
        def fn(conn: Conn) -> None:
            cur = conn.execute(
                "DELETE FROM acl WHERE pattern = %s "
                "AND user_id = (SELECT id FROM users WHERE name = %s)",
                (pattern, user),
            )
            if cur.rowcount == 0:
                raise NotFound(f"user {user!r} has no grant for {pattern!r}", field="pattern")

        await self._run(fn)

    # -- preferences --

    async def get_preferences(self, user_id: int) -> dict[str, Any] | None:
        def fn(conn: Conn) -> dict[str, Any] | None:
            row = conn.execute(
                "SELECT doc FROM preferences WHERE user_id = %s", (user_id,)
            ).fetchone()
            return None if row is None else dict(row[0])

        return await self._run(fn)

    async def set_preferences(self, user_id: int, doc: dict[str, Any]) -> None:
        await self._run(
            lambda c: c.execute(
                "INSERT INTO preferences (user_id, doc, updated_at) VALUES (%s, %s, %s) "
                "ON CONFLICT (user_id) DO UPDATE SET doc = excluded.doc, "
                "updated_at = excluded.updated_at",
                (user_id, Jsonb(doc), now_rfc3339()),
            )
        )


__all__ = ["PostgresAccountStore"]
