"""Channels and the outbox in SQLite (mixed into :class:`SQLiteStore`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from ..channels import ChannelRecord
from ..errors import Conflict, NotFound
from ..fanout import ChannelTarget, plan_deliveries
from ..prefs import Preferences
from ..store import Claim, DueDelivery, Outcome
from ..timeutil import format_ts, now_rfc3339, parse_rfc3339
from .queries import SELECT_EVENT, event_from_row

T = TypeVar("T")

_CHANNEL_SELECT = (
    "SELECT c.id, c.user_id, u.name, c.name, c.kind, c.config, c.enabled, c.created_at, "
    "c.last_success_at, c.last_error, c.last_error_at FROM channels c JOIN users u ON u.id = c.user_id"
)


def _channel(row: tuple[Any, ...]) -> ChannelRecord:
    return ChannelRecord(
        id=row[0], user_id=row[1], user=row[2], name=row[3], kind=row[4],
        config=orjson.loads(row[5]), enabled=bool(row[6]), created_at=row[7],
        last_success_at=row[8], last_error=row[9], last_error_at=row[10],
    )  # fmt: skip


def load_preferences(conn: sqlite3.Connection, user_ids: Any) -> dict[int, Preferences]:
    ids = list(user_ids)
    if not ids:
        return {}
    rows = conn.execute(
        f"SELECT user_id, doc FROM preferences WHERE user_id IN ({','.join('?' * len(ids))})", ids
    )
    out = {}
    for user_id, doc in rows:
        try:
            out[user_id] = Preferences.from_json(orjson.loads(doc))
        except ValueError:
            continue  # validated when stored; a bad document must not block publishing
    return out


def enqueue_deliveries(conn: sqlite3.Connection, events: list[dict[str, Any]], now: float) -> int:
    """Write one outbox row per (event, channel) whose user may read the event's
    topic and whose preferences want it there — in the caller's transaction, so an
    event and its deliveries commit together. Held rows (quiet hours, digests, rate
    limits) get a later ``next_attempt_at`` and a shared ``digest_key``."""
    chans = conn.execute(
        "SELECT c.id, c.user_id, u.role, c.name FROM channels c JOIN users u ON u.id = c.user_id "
        "WHERE c.enabled = 1"
    ).fetchall()
    if not chans or not events:
        return 0
    grants: dict[int, list[str]] = {}
    for user_id, pattern in conn.execute("SELECT user_id, pattern FROM acl WHERE read = 1"):
        grants.setdefault(user_id, []).append(pattern)
    prefs = load_preferences(conn, {c[1] for c in chans})
    recent: dict[int, int] = {}
    if any(p.rate_limit_per_minute for p in prefs.values()):
        for channel_id, n in conn.execute(
            "SELECT channel_id, count(*) FROM deliveries WHERE created_at > ? AND digest_key IS NULL "
            "GROUP BY channel_id",
            (format_ts(now - 60),),
        ):
            recent[channel_id] = n
    rows = plan_deliveries(events, [ChannelTarget(*c) for c in chans], grants, prefs, recent, now)
    conn.executemany(
        "INSERT INTO deliveries (event_id, user_id, channel_id, next_attempt_at, created_at, digest_key) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )
    return len(rows)


_IN_JSON = "IN (SELECT value FROM json_each(?))"


def record_outcomes(conn: sqlite3.Connection, outcomes: list[Outcome], owner: str) -> int:
    """Apply send outcomes to the rows ``owner`` still holds, releasing them: the
    ``sent`` ones with two prepared statements, failures one by one. Returns how
    many rows were updated."""
    ids = [i for o in outcomes for i in o.ids]
    if not ids:
        return 0
    held = {
        r[0]
        for r in conn.execute(
            f"SELECT id FROM deliveries WHERE claimed_by = ? AND id {_IN_JSON}",
            (owner, orjson.dumps(ids).decode()),
        )
    }
    mine: list[Outcome] = []
    for o in outcomes:
        kept = [i for i in o.ids if i in held]
        if kept:
            mine.append(o if len(kept) == len(o.ids) else replace(o, ids=kept))
    sent = [o for o in mine if o.error is None]
    conn.executemany(
        "UPDATE deliveries SET state = 'sent', attempts = attempts + 1, sent_at = ?, last_error = NULL, "
        "claimed_by = NULL, lease_until = NULL WHERE id = ?",
        [(format_ts(o.at), i) for o in sent for i in o.ids],
    )
    last_success: dict[int, float] = {}
    for o in sent:
        last_success[o.channel_id] = max(o.at, last_success.get(o.channel_id, 0.0))
    conn.executemany(
        "UPDATE channels SET last_success_at = ? WHERE id = ?",
        [(format_ts(at), channel_id) for channel_id, at in last_success.items()],
    )
    for o in mine:
        if o.error is not None:
            _record_failure(conn, o, owner)
    return sum(len(o.ids) for o in mine)


def _record_failure(conn: sqlite3.Connection, o: Outcome, owner: str) -> None:
    at = format_ts(o.at)
    ids = orjson.dumps(o.ids).decode()
    if o.retry_at is not None:
        conn.execute(
            "UPDATE deliveries SET state = 'pending', attempts = attempts + 1, next_attempt_at = ?, "
            f"last_error = ?, claimed_by = NULL, lease_until = NULL WHERE claimed_by = ? AND id {_IN_JSON}",
            (format_ts(o.retry_at), o.error, owner, ids),
        )
    else:
        conn.execute(
            "UPDATE deliveries SET state = 'dead', attempts = attempts + 1, last_error = ?, "
            f"claimed_by = NULL, lease_until = NULL WHERE claimed_by = ? AND id {_IN_JSON}",
            (o.error, owner, ids),
        )
    conn.execute(
        "UPDATE channels SET last_error = ?, last_error_at = ? WHERE id = ?",
        (o.error, at, o.channel_id),
    )
    if o.remove_channel:
        conn.execute("DELETE FROM channels WHERE id = ?", (o.channel_id,))
        _dead_with_channel(conn, o.channel_id, "channel removed: target gone")


def _dead_with_channel(conn: sqlite3.Connection, channel_id: int, why: str) -> None:
    """The pending rows of a channel that is gone are dead (and no longer claimed:
    whoever sends one of them now cannot change that)."""
    conn.execute(
        "UPDATE deliveries SET state = 'dead', last_error = ?, claimed_by = NULL, lease_until = NULL "
        "WHERE channel_id = ? AND state = 'pending'",
        (why, channel_id),
    )


def claim_rows(
    conn: sqlite3.Connection, now: float, limit: int, owner: str, lease_seconds: float
) -> list[Claim]:
    """Claim due rows for ``owner`` (in the writer's transaction): see
    :meth:`~notifyd.core.store.OutboxStore.claim_delivery_rows`."""
    due_at = format_ts(now)
    rows = conn.execute(
        # INDEXED BY: without statistics SQLite prefers idx_deliveries_state and
        # sorts every pending row, which grows with the backlog. A claimed row's
        # next_attempt_at is its lease's end, so this finds expired leases too.
        "SELECT id, attempts, channel_id, event_id, digest_key FROM deliveries "
        "INDEXED BY idx_deliveries_due "
        "WHERE state = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?",
        (due_at, limit),
    ).fetchall()
    claims: list[Claim] = []
    taken: set[int] = set()
    for delivery_id, attempts, channel_id, event_id, digest_key in rows:
        if delivery_id in taken:
            continue
        members: list[tuple[int, int]] = [(delivery_id, event_id)]
        if digest_key is not None:
            members = [
                (m[0], m[1])
                for m in conn.execute(
                    "SELECT id, event_id FROM deliveries WHERE channel_id = ? AND digest_key = ? "
                    "AND state = 'pending' AND next_attempt_at <= ? ORDER BY event_id",
                    (channel_id, digest_key, due_at),
                )
                if m[0] not in taken
            ] or members
        taken.update(m[0] for m in members)
        claims.append(Claim([m[0] for m in members], attempts + 1, channel_id,
                            [m[1] for m in members]))  # fmt: skip
    if taken:
        until = format_ts(now + lease_seconds)
        conn.execute(
            "UPDATE deliveries SET claimed_by = ?, lease_until = ?, next_attempt_at = ? "
            f"WHERE id {_IN_JSON}",
            (owner, until, until, orjson.dumps(sorted(taken)).decode()),
        )
    return claims


class DeliveryStore:
    """Channel and outbox methods; expects ``write``/``_read`` from the store."""

    if TYPE_CHECKING:  # provided by SQLiteStore
        clock: Callable[[], float]

        async def write(
            self,
            fn: Callable[[sqlite3.Connection], T],
            on_commit: Callable[[T], None] | None = None,
        ) -> T: ...

        async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    # -- channels ----------------------------------------------------------

    async def create_channel(
        self, user_id: int, name: str, kind: str, config: dict[str, Any]
    ) -> ChannelRecord:
        def fn(conn: sqlite3.Connection) -> ChannelRecord:
            try:
                cur = conn.execute(
                    "INSERT INTO channels (user_id, name, kind, config, created_at) VALUES (?, ?, ?, ?, ?)",
                    (user_id, name, kind, orjson.dumps(config).decode(), now_rfc3339()),
                )
            except sqlite3.IntegrityError:
                raise Conflict(f"you have a channel named {name!r} already", field="name") from None
            return _channel(
                conn.execute(f"{_CHANNEL_SELECT} WHERE c.id = ?", (cur.lastrowid,)).fetchone()
            )

        return await self.write(fn)

    async def list_channels(
        self, user_id: int | None = None, kind: str | None = None
    ) -> list[ChannelRecord]:
        def fn(conn: sqlite3.Connection) -> list[ChannelRecord]:
            where: list[str] = ["1"]
            params: list[object] = []
            if user_id is not None:
                where.append("c.user_id = ?")
                params.append(user_id)
            if kind is not None:
                where.append("c.kind = ?")
                params.append(kind)
            sql = f"{_CHANNEL_SELECT} WHERE {' AND '.join(where)} ORDER BY u.name, c.name"
            return [_channel(r) for r in conn.execute(sql, params)]

        return await self._read(fn)

    async def get_channel(self, user_id: int, name: str) -> ChannelRecord | None:
        def fn(conn: sqlite3.Connection) -> ChannelRecord | None:
            row = conn.execute(
                f"{_CHANNEL_SELECT} WHERE c.user_id = ? AND c.name = ?", (user_id, name)
            ).fetchone()
            return None if row is None else _channel(row)

        return await self._read(fn)

    async def delete_channel(self, channel_id: int) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            if conn.execute("DELETE FROM channels WHERE id = ?", (channel_id,)).rowcount == 0:
                raise NotFound("no such channel", field="name")
            _dead_with_channel(conn, channel_id, "channel removed")

        await self.write(fn)

    # -- outbox ---------------------------------------------------------------

    async def claim_delivery_rows(
        self, now: float, limit: int, owner: str, lease_seconds: float
    ) -> list[Claim]:
        return await self.write(lambda conn: claim_rows(conn, now, limit, owner, lease_seconds))

    async def load_claims(self, claims: list[Claim]) -> list[DueDelivery]:
        if not claims:
            return []

        def fn(conn: sqlite3.Connection) -> list[DueDelivery]:
            channels: dict[int, ChannelRecord | None] = {}
            out: list[DueDelivery] = []
            for claim in claims:
                if claim.channel_id not in channels:
                    row = conn.execute(
                        f"{_CHANNEL_SELECT} WHERE c.id = ?", (claim.channel_id,)
                    ).fetchone()
                    channels[claim.channel_id] = None if row is None else _channel(row)
                events = [
                    event_from_row(r)
                    for r in conn.execute(
                        f"SELECT {SELECT_EVENT} FROM events e WHERE e.id {_IN_JSON} ORDER BY e.id",
                        (orjson.dumps(claim.event_ids).decode(),),
                    )
                ]
                out.append(DueDelivery(list(claim.ids), claim.attempt, claim.channel_id,
                                       channels[claim.channel_id], events))  # fmt: skip
            return out

        return await self._read(fn)

    async def next_due(self) -> float | None:
        def fn(conn: sqlite3.Connection) -> str | None:
            rows = conn.execute(
                "SELECT next_attempt_at FROM deliveries INDEXED BY idx_deliveries_due "
                "WHERE state = 'pending' ORDER BY next_attempt_at LIMIT 1"
            ).fetchall()  # all of it: an unfinished statement would keep its snapshot
            return rows[0][0] if rows else None

        when = await self._read(fn)
        return None if when is None else parse_rfc3339(when)

    async def finish_deliveries(self, outcomes: list[Outcome], owner: str) -> int:
        return await self.write(lambda conn: record_outcomes(conn, outcomes, owner))

    async def release_claims(self, node: str) -> int:
        prefix = node + "/"
        now = format_ts(self.clock())  # here: the clock may need the trio thread

        def fn(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "UPDATE deliveries SET next_attempt_at = min(next_attempt_at, ?), claimed_by = NULL, "
                "lease_until = NULL WHERE claimed_by IS NOT NULL AND substr(claimed_by, 1, ?) = ?",
                (now, len(prefix), prefix),
            ).rowcount

        return await self.write(fn)

    async def list_deliveries(
        self, user_id: int | None, state: str | None, limit: int
    ) -> list[dict[str, Any]]:
        def fn(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            where: list[str] = ["1"]
            params: list[object] = []
            if user_id is not None:
                where.append("d.user_id = ?")
                params.append(user_id)
            if state is not None:
                where.append("d.state = ?")
                params.append(state)
            rows = conn.execute(
                "SELECT d.id, d.event_id, u.name, c.name, c.kind, d.state, d.attempts, d.next_attempt_at, "
                "d.last_error, d.created_at, d.sent_at FROM deliveries d JOIN users u ON u.id = d.user_id "
                f"LEFT JOIN channels c ON c.id = d.channel_id WHERE {' AND '.join(where)} "
                "ORDER BY d.id DESC LIMIT ?",
                [*params, limit],
            )
            keys = ("id", "event_id", "user", "channel", "kind", "state", "attempts",
                    "next_attempt_at", "last_error", "created_at", "sent_at")  # fmt: skip
            return [dict(zip(keys, r, strict=True)) for r in rows]

        return await self._read(fn)

    async def retry_delivery(self, delivery_id: int, user_id: int | None, now: float) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            # a row under an unexpired lease stays with its owner (not sent twice)
            sql = (
                "UPDATE deliveries SET state = 'pending', next_attempt_at = CASE WHEN "
                "claimed_by IS NOT NULL AND lease_until > ?1 THEN next_attempt_at ELSE ?1 END "
                "WHERE id = ?2"
            )
            params: list[Any] = [format_ts(now), delivery_id]
            if user_id is not None:
                sql += " AND user_id = ?3"
                params.append(user_id)
            sql += " AND channel_id IN (SELECT id FROM channels)"
            if conn.execute(sql, params).rowcount == 0:
                raise NotFound(f"no retryable delivery {delivery_id}", field="id")

        await self.write(fn)

    async def delivery_stats(self, user_id: int | None) -> dict[str, Any]:
        def fn(conn: sqlite3.Connection) -> dict[str, Any]:
            where, params = "", []
            if user_id is not None:
                where, params = "WHERE d.user_id = ?", [user_id]
            by_channel: dict[str, dict[str, float | None]] = {}
            for kind, state, n in conn.execute(
                "SELECT coalesce(c.kind, '(removed)'), d.state, count(*) FROM deliveries d "
                f"LEFT JOIN channels c ON c.id = d.channel_id {where} GROUP BY 1, 2",
                params,
            ):
                by_channel.setdefault(kind, {})[state] = n
            by_category: dict[str, dict[str, float | None]] = {}
            for category, state, n in conn.execute(
                f"SELECT e.category, d.state, count(*) FROM deliveries d JOIN events e ON e.id = d.event_id {where} GROUP BY 1, 2",
                params,
            ):
                by_category.setdefault(category, {})[state] = n
            # Of what was delivered, how much was read and clicked (interaction tracking).
            engaged = (
                "count(*), sum(CASE WHEN r.read = 1 OR (r.read IS NULL AND d.event_id <= "
                "coalesce(m.read_upto, 0)) THEN 1 ELSE 0 END), "
                "sum(CASE WHEN r.clicked_at IS NOT NULL THEN 1 ELSE 0 END) FROM deliveries d "
                "LEFT JOIN channels c ON c.id = d.channel_id JOIN events e ON e.id = d.event_id "
                "LEFT JOIN receipts r ON r.user_id = d.user_id AND r.event_id = d.event_id "
                "LEFT JOIN inbox_marks m ON m.user_id = d.user_id "
                f"WHERE d.state = 'sent' {'AND d.user_id = ?' if user_id is not None else ''} GROUP BY 1"
            )
            for table, key in (
                (by_channel, "coalesce(c.kind, '(removed)')"),
                (by_category, "e.category"),
            ):
                for name, sent, read, clicked in conn.execute(f"SELECT {key}, {engaged}", params):
                    row = table.setdefault(name, {})
                    row.update(
                        read=read,
                        clicked=clicked,
                        read_rate=round(read / sent, 4) if sent else None,
                    )
            return {"by_channel": by_channel, "by_category": by_category}

        return await self._read(fn)

    # -- preferences ------------------------------------------------------------

    async def get_preferences(self, user_id: int) -> dict[str, Any] | None:
        def fn(conn: sqlite3.Connection) -> dict[str, Any] | None:
            row = conn.execute(
                "SELECT doc FROM preferences WHERE user_id = ?", (user_id,)
            ).fetchone()
            return None if row is None else orjson.loads(row[0])

        return await self._read(fn)

    async def set_preferences(self, user_id: int, doc: dict[str, Any]) -> None:
        await self.write(
            lambda c: c.execute(
                "INSERT INTO preferences (user_id, doc, updated_at) VALUES (?, ?, ?) ON CONFLICT (user_id) "
                "DO UPDATE SET doc = excluded.doc, updated_at = excluded.updated_at",
                (user_id, orjson.dumps(doc).decode(), now_rfc3339()),
            )
        )
