"""The SQLite store below the API: merged publishes and the group-commit writer."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio

from notifyd.config import Config
from notifyd.core.acl import Visibility
from notifyd.core.errors import Conflict
from notifyd.core.housekeeping import prune_once
from notifyd.core.models import validate_events
from notifyd.core.services import Services
from notifyd.core.sqlite.schema import migrate
from notifyd.core.sqlite.store import SQLiteStore, _publish_many, _PublishRequest, connect


def _events(*titles: str) -> list:
    return [validate_events({"topic": "t", "title": t})[0][0] for t in titles]


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    c = connect(str(tmp_path / "s.db"), "OFF")
    migrate(c)
    return c


def test_merged_publishes_assign_ids_in_request_order_and_share_keys(
    conn: sqlite3.Connection,
) -> None:
    conn.execute("BEGIN")
    results = _publish_many(
        conn,
        [
            _PublishRequest(_events("a", "b"), 1, None, True, 1_800_000_000.0),
            _PublishRequest(_events("c"), 1, "k", False, 1_800_000_000.0),
            _PublishRequest(
                _events("c-retry"), 1, "k", False, 1_800_000_000.0
            ),  # same key, same call
            _PublishRequest(_events("delta"), 2, "k", False, 1_800_000_000.0),  # keys are per user
        ],
    )
    conn.execute("COMMIT")
    assert [e["id"] for e in results[0].events] == [1, 2]
    assert results[1].events[0]["id"] == 3 and not results[1].replayed
    assert results[2].replayed and results[2].events == results[1].events
    assert results[2].new_events == []
    assert results[3].events[0]["id"] == 4
    titles = [r[0] for r in conn.execute("SELECT title FROM events ORDER BY id")]
    assert titles == ["a", "b", "c", "delta"]
    # a later call finds the key in the table
    conn.execute("BEGIN")
    (again,) = _publish_many(conn, [_PublishRequest(_events("x"), 1, "k", False, 1_800_000_000.0)])
    conn.execute("COMMIT")
    assert again.replayed and again.events[0]["id"] == 3
    # the full-text index covers what was inserted in the merged call
    hits = [r[0] for r in conn.execute("SELECT rowid FROM events_fts WHERE events_fts MATCH 'c'")]
    assert hits == [3]


@pytest.mark.trio
async def test_a_failing_job_in_a_group_fails_alone(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "w.db")
    await store.start()
    try:
        results: dict[str, object] = {}

        async def publish(name: str) -> None:
            results[name] = await store.publish(_events(name), 1)

        async def bad_user() -> None:
            try:
                await store.create_user("dup", "user", None)
            except Conflict as exc:
                results["dup"] = exc

        await store.create_user("dup", "user", None)
        async with trio.open_nursery() as nursery:
            for n in range(20):
                nursery.start_soon(publish, f"e{n}")
            nursery.start_soon(bad_user)
        assert isinstance(results["dup"], Conflict)
        ids = sorted(r.events[0]["id"] for k, r in results.items() if k != "dup")  # type: ignore[attr-defined]
        assert ids == list(range(1, 21))
        assert await store.last_event_id() == 20
    finally:
        await store.close()


@pytest.mark.trio
async def test_retention_prunes_old_events_with_their_receipts_and_deliveries(
    tmp_path: Path,
) -> None:

    day = 86400.0
    now = [1_800_000_000.0 - 40 * day]
    store = SQLiteStore(tmp_path / "r.db", clock=lambda: now[0])
    await store.start()
    try:
        svc = Services.build(Config(data_dir=str(tmp_path), retention_days=30), store)
        admin = await store.create_user("admin", "admin", None)
        await store.create_channel(admin.id, "phone", "memory", {})
        old = (await store.publish(_events("old 1", "old 2"), admin.id, batch=True)).events
        now[0] += 20 * day
        mid = (await store.publish(_events("20 days old"), admin.id)).events
        now[0] += 20 * day
        new = (await store.publish(_events("today"), admin.id)).events
        ids = [e["id"] for e in old + mid + new]
        await store.set_state(admin.id, ids, "read", Visibility(everything=True))

        def counts() -> tuple[int, ...]:
            c = sqlite3.connect(tmp_path / "r.db")
            try:
                return tuple(
                    c.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                    for t in ("events", "receipts", "deliveries")
                )
            finally:
                c.close()

        assert counts() == (4, 4, 4)
        assert await prune_once(svc, now=now[0]) == 2
        assert counts() == (2, 2, 2)  # 30 days: the 20-day-old event stays
        assert await prune_once(svc, now=now[0]) == 0
    finally:
        await store.close()
