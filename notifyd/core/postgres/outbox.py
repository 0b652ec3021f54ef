"""The outbox role (:class:`~notifyd.core.store.OutboxStore`) on PostgreSQL:
channels, claims with leases, outcomes, listings and stats.

:class:`PostgresOutboxStore` is a mixin composed with ``PostgresEventStore``,
whose connection pool and worker threads (``_run``) and ``clock`` it uses. The
outbox rows themselves are written by publish, in the event's transaction
(:func:`notifyd.core.postgres.events.enqueue_deliveries`).

Claims (any node's worker may claim): one transaction selects the due rows with
``FOR UPDATE SKIP LOCKED`` (a row another claimer is taking at that moment is
skipped, not waited for), then stamps them with the owner, ``lease_until`` and a
``next_attempt_at`` at the lease's end. A claimer whose statement started before
that commit re-checks the row's newest version (READ COMMITTED) and finds it no
longer due, so two claimers never get the same row; when the lease ends the row
is due again and any node may claim it (its sender is presumed dead). Outcomes
are applied only to rows whose ``claimed_by`` is still the owner, under row locks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg.types.json import Jsonb

from ..channels import ChannelRecord
from ..errors import Conflict, NotFound
from ..store import Claim, DueDelivery, OutboxStore, Outcome
from ..timeutil import format_ts, now_rfc3339, parse_rfc3339
from .events import SELECT_EVENT, Conn, event_from_row

T = TypeVar("T")

_CHANNEL_SELECT = (
    "SELECT c.id, c.user_id, u.name, c.name, c.kind, c.config, c.enabled, c.created_at, "
    "c.last_success_at, c.last_error, c.last_error_at FROM channels c JOIN users u ON u.id = c.user_id"
)


def _channel(row: tuple[Any, ...]) -> ChannelRecord:
    return ChannelRecord(
        id=int(row[0]), user_id=int(row[1]), user=row[2], name=row[3], kind=row[4],
        config=row[5], enabled=bool(row[6]), created_at=row[7],
        last_success_at=row[8], last_error=row[9], last_error_at=row[10],
    )  # fmt: skip


def claim_rows(conn: Conn, now: float, limit: int, owner: str, lease_seconds: float) -> list[Claim]:
    """Claim due rows for ``owner`` (see
    :meth:`~notifyd.core.store.OutboxStore.claim_delivery_rows`)."""
    due_at = format_ts(now)
    with conn.transaction():
        rows = conn.execute(
            # a claimed row's next_attempt_at is its lease's end: expired leases are due
            "SELECT id, attempts, channel_id, event_id, digest_key FROM deliveries "
            "WHERE state = 'pending' AND next_attempt_at <= %s ORDER BY next_attempt_at, id "
            "LIMIT %s FOR UPDATE SKIP LOCKED",
            (due_at, limit),
        ).fetchall()
        claims: list[Claim] = []
        taken: set[int] = set()
        for delivery_id, attempts, channel_id, event_id, digest_key in rows:
            if delivery_id in taken:
                continue
            members: list[tuple[int, int]] = [(int(delivery_id), int(event_id))]
            if digest_key is not None:
                members = [
                    (int(m[0]), int(m[1]))
                    for m in conn.execute(
                        "SELECT id, event_id FROM deliveries WHERE channel_id = %s "
                        "AND digest_key = %s AND state = 'pending' AND next_attempt_at <= %s "
                        "ORDER BY event_id, id FOR UPDATE SKIP LOCKED",
                        (channel_id, digest_key, due_at),
                    )
                    if m[0] not in taken
                ] or members
            taken.update(m[0] for m in members)
            claims.append(Claim([m[0] for m in members], int(attempts) + 1, int(channel_id),
                                [m[1] for m in members]))  # fmt: skip
        if taken:
            until = format_ts(now + lease_seconds)
            conn.execute(
                "UPDATE deliveries SET claimed_by = %s, lease_until = %s, next_attempt_at = %s "
                "WHERE id = ANY(%s)",
                (owner, until, until, sorted(taken)),
            )
    return claims


def record_outcomes(conn: Conn, outcomes: list[Outcome], owner: str) -> int:
    """Apply send outcomes to the rows ``owner`` still holds (locked first),
    releasing them; returns how many rows were updated."""
    ids = [i for o in outcomes for i in o.ids]
    if not ids:
        return 0
    with conn.transaction():
        held = {
            int(r[0])
            for r in conn.execute(
                "SELECT id FROM deliveries WHERE claimed_by = %s AND id = ANY(%s) "
                "ORDER BY id FOR UPDATE",
                (owner, sorted(set(ids))),
            )
        }
        mine: list[Outcome] = []
        for o in outcomes:
            kept = [i for i in o.ids if i in held]
            if kept:
                mine.append(o if len(kept) == len(o.ids) else replace(o, ids=kept))
        sent = [(format_ts(o.at), i) for o in mine if o.error is None for i in o.ids]
        if sent:
            with conn.cursor() as cur:
                cur.executemany(
                    "UPDATE deliveries SET state = 'sent', attempts = attempts + 1, sent_at = %s, "
                    "last_error = NULL, claimed_by = NULL, lease_until = NULL WHERE id = %s",
                    sent,
                )
        last_success: dict[int, float] = {}
        for o in mine:
            if o.error is None:
                last_success[o.channel_id] = max(o.at, last_success.get(o.channel_id, 0.0))
        for channel_id, at in sorted(last_success.items()):
            conn.execute(
                "UPDATE channels SET last_success_at = %s WHERE id = %s",
                (format_ts(at), channel_id),
            )
        for o in mine:
            if o.error is not None:
                _record_failure(conn, o, owner)
    return sum(len(o.ids) for o in mine)


def _record_failure(conn: Conn, o: Outcome, owner: str) -> None:
    if o.retry_at is not None:
        conn.execute(
            "UPDATE deliveries SET state = 'pending', attempts = attempts + 1, next_attempt_at = %s, "
            "last_error = %s, claimed_by = NULL, lease_until = NULL "
            "WHERE claimed_by = %s AND id = ANY(%s)",
            (format_ts(o.retry_at), o.error, owner, o.ids),
        )
    else:
        conn.execute(
            "UPDATE deliveries SET state = 'dead', attempts = attempts + 1, last_error = %s, "
            "claimed_by = NULL, lease_until = NULL WHERE claimed_by = %s AND id = ANY(%s)",
            (o.error, owner, o.ids),
        )
    conn.execute(
        "UPDATE channels SET last_error = %s, last_error_at = %s WHERE id = %s",
        (o.error, format_ts(o.at), o.channel_id),
    )
    if o.remove_channel:
        conn.execute("DELETE FROM channels WHERE id = %s", (o.channel_id,))
        _dead_with_channel(conn, o.channel_id, "channel removed: target gone")


def _dead_with_channel(conn: Conn, channel_id: int, why: str) -> None:
    """The pending rows of a channel that is gone are dead (and no longer claimed:
    whoever sends one of them now cannot change that)."""
    conn.execute(
        "UPDATE deliveries SET state = 'dead', last_error = %s, claimed_by = NULL, "
        "lease_until = NULL WHERE channel_id = %s AND state = 'pending'",
        (why, channel_id),
    )


class PostgresOutboxStore(OutboxStore):
    """Channel and outbox methods (a mixin composed with ``PostgresEventStore``,
    which gives ``_run`` and ``clock``)."""

    if TYPE_CHECKING:
        clock: Callable[[], float]

        async def _run(self, fn: Callable[[Conn], T]) -> T: ...

    # -- channels ----------------------------------------------------------

    async def create_channel(
        self, user_id: int, name: str, kind: str, config: dict[str, Any]
    ) -> ChannelRecord:
        def fn(conn: Conn) -> ChannelRecord:
            try:
                with conn.transaction():
                    row = conn.execute(
                        "INSERT INTO channels (user_id, name, kind, config, created_at) "
                        "VALUES (%s, %s, %s, %s, %s) RETURNING id",
                        (user_id, name, kind, Jsonb(config), now_rfc3339()),
                    ).fetchone()
            except psycopg.errors.UniqueViolation:
                raise Conflict(f"you have a channel named {name!r} already", field="name") from None
            assert row is not None
            found = conn.execute(f"{_CHANNEL_SELECT} WHERE c.id = %s", (row[0],)).fetchone()
            assert found is not None
            return _channel(found)

        return await self._run(fn)

    async def list_channels(
        self, user_id: int | None = None, kind: str | None = None
    ) -> list[ChannelRecord]:
        where: list[str] = ["TRUE"]
        params: list[object] = []
        if user_id is not None:
            where.append("c.user_id = %s")
            params.append(user_id)
        if kind is not None:
            where.append("c.kind = %s")
            params.append(kind)
        sql = (
            f"{_CHANNEL_SELECT} WHERE {' AND '.join(where)} "
            'ORDER BY u.name COLLATE "C", c.name COLLATE "C"'
        )
        return await self._run(lambda conn: [_channel(r) for r in conn.execute(sql, params)])

    async def get_channel(self, user_id: int, name: str) -> ChannelRecord | None:
        def fn(conn: Conn) -> ChannelRecord | None:
            row = conn.execute(
                f"{_CHANNEL_SELECT} WHERE c.user_id = %s AND c.name = %s", (user_id, name)
            ).fetchone()
            return None if row is None else _channel(row)

        return await self._run(fn)

    async def delete_channel(self, channel_id: int) -> None:
        def fn(conn: Conn) -> None:
            with conn.transaction():
                if conn.execute("DELETE FROM channels WHERE id = %s", (channel_id,)).rowcount == 0:
                    raise NotFound("no such channel", field="name")
                _dead_with_channel(conn, channel_id, "channel removed")

        await self._run(fn)

    # -- outbox ---------------------------------------------------------------

    async def claim_delivery_rows(
        self, now: float, limit: int, owner: str, lease_seconds: float
    ) -> list[Claim]:
        return await self._run(lambda conn: claim_rows(conn, now, limit, owner, lease_seconds))

    async def load_claims(self, claims: list[Claim]) -> list[DueDelivery]:
        if not claims:
            return []

        def fn(conn: Conn) -> list[DueDelivery]:
            channel_ids = sorted({c.channel_id for c in claims})
            channels: dict[int, ChannelRecord] = {
                int(r[0]): _channel(r)
                for r in conn.execute(f"{_CHANNEL_SELECT} WHERE c.id = ANY(%s)", (channel_ids,))
            }
            event_ids = sorted({i for c in claims for i in c.event_ids})
            events = {
                int(r[0]): event_from_row(r)
                for r in conn.execute(
                    f"SELECT {SELECT_EVENT} FROM events e WHERE e.id = ANY(%s)", (event_ids,)
                )
            }
            return [
                DueDelivery(
                    list(c.ids),
                    c.attempt,
                    c.channel_id,
                    channels.get(c.channel_id),
                    [events[i] for i in sorted(set(c.event_ids)) if i in events],
                )
                for c in claims
            ]

        return await self._run(fn)

    async def next_due(self) -> float | None:
        def fn(conn: Conn) -> str | None:
            row = conn.execute(
                "SELECT next_attempt_at FROM deliveries WHERE state = 'pending' "
                "ORDER BY next_attempt_at LIMIT 1"
            ).fetchone()
            return None if row is None else str(row[0])

        when = await self._run(fn)
        return None if when is None else parse_rfc3339(when)

    async def finish_deliveries(self, outcomes: list[Outcome], owner: str) -> int:
        return await self._run(lambda conn: record_outcomes(conn, outcomes, owner))

    async def release_claims(self, node: str) -> int:
        prefix = node + "/"
        now = format_ts(self.clock())

        def fn(conn: Conn) -> int:
            return conn.execute(
                "UPDATE deliveries SET next_attempt_at = LEAST(next_attempt_at, %s), "
                "claimed_by = NULL, lease_until = NULL "
                "WHERE claimed_by IS NOT NULL AND left(claimed_by, %s) = %s",
                (now, len(prefix), prefix),
            ).rowcount

        return await self._run(fn)

    async def list_deliveries(
        self, user_id: int | None, state: str | None, limit: int
    ) -> list[dict[str, Any]]:
        where: list[str] = ["TRUE"]
        params: list[object] = []
        if user_id is not None:
            where.append("d.user_id = %s")
            params.append(user_id)
        if state is not None:
            where.append("d.state = %s")
            params.append(state)
        sql = (
            "SELECT d.id, d.event_id, u.name, c.name, c.kind, d.state, d.attempts, "
            "d.next_attempt_at, d.last_error, d.created_at, d.sent_at FROM deliveries d "
            "JOIN users u ON u.id = d.user_id LEFT JOIN channels c ON c.id = d.channel_id "
            f"WHERE {' AND '.join(where)} ORDER BY d.id DESC LIMIT %s"
        )
        keys = ("id", "event_id", "user", "channel", "kind", "state", "attempts",
                "next_attempt_at", "last_error", "created_at", "sent_at")  # fmt: skip
        return await self._run(
            lambda conn: [
                dict(zip(keys, r, strict=True)) for r in conn.execute(sql, [*params, limit])
            ]
        )

    async def retry_delivery(self, delivery_id: int, user_id: int | None, now: float) -> None:
        def fn(conn: Conn) -> None:
            # a row under an unexpired lease stays with its owner (not sent twice)
            stamp = format_ts(now)
            sql = (
                "UPDATE deliveries SET state = 'pending', next_attempt_at = CASE WHEN "
                "claimed_by IS NOT NULL AND lease_until > %s THEN next_attempt_at ELSE %s END "
                "WHERE id = %s"
            )
            params: list[Any] = [stamp, stamp, delivery_id]
            if user_id is not None:
                sql += " AND user_id = %s"
                params.append(user_id)
            sql += " AND channel_id IN (SELECT id FROM channels)"
            if conn.execute(sql, params).rowcount == 0:
                raise NotFound(f"no retryable delivery {delivery_id}", field="id")

        await self._run(fn)

    async def delivery_stats(self, user_id: int | None) -> dict[str, Any]:
        def fn(conn: Conn) -> dict[str, Any]:
            where, params = "", []
            if user_id is not None:
                where, params = "WHERE d.user_id = %s", [user_id]
            by_channel: dict[str, dict[str, float | None]] = {}
            for kind, state, n in conn.execute(
                "SELECT coalesce(c.kind, '(removed)'), d.state, count(*) FROM deliveries d "
                f"LEFT JOIN channels c ON c.id = d.channel_id {where} GROUP BY 1, 2",
                params,
            ):
                by_channel.setdefault(kind, {})[state] = int(n)
            by_category: dict[str, dict[str, float | None]] = {}
            for category, state, n in conn.execute(
                "SELECT e.category, d.state, count(*) FROM deliveries d "
                f"JOIN events e ON e.id = d.event_id {where} GROUP BY 1, 2",
                params,
            ):
                by_category.setdefault(category, {})[state] = int(n)
            # Of what was delivered, how much was read and clicked (interaction tracking).
            engaged = (
                "count(*), sum(CASE WHEN r.read IS TRUE OR (r.read IS NULL AND d.event_id <= "
                "coalesce(m.read_upto, 0)) THEN 1 ELSE 0 END), "
                "sum(CASE WHEN r.clicked_at IS NOT NULL THEN 1 ELSE 0 END) FROM deliveries d "
                "LEFT JOIN channels c ON c.id = d.channel_id JOIN events e ON e.id = d.event_id "
                "LEFT JOIN receipts r ON r.user_id = d.user_id AND r.event_id = d.event_id "
                "LEFT JOIN inbox_marks m ON m.user_id = d.user_id "
                f"WHERE d.state = 'sent' {'AND d.user_id = %s' if user_id is not None else ''} "
                "GROUP BY 1"
            )
            for table, key in (
                (by_channel, "coalesce(c.kind, '(removed)')"),
                (by_category, "e.category"),
            ):
                for name, sent, read, clicked in conn.execute(f"SELECT {key}, {engaged}", params):
                    row = table.setdefault(name, {})
                    row.update(
                        read=int(read),
                        clicked=int(clicked),
                        read_rate=round(int(read) / int(sent), 4) if sent else None,
                    )
            return {"by_channel": by_channel, "by_category": by_category}

        return await self._run(fn)


__all__ = ["PostgresOutboxStore"]
