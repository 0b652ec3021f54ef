"""The operations role on PostgreSQL (notifyd/core/postgres/operations.py), on a real
server (the ``pg_database`` fixture; tests/pg.py).

The store under test composes the mixin with the engine's other roles locally
(``_Store``) until ``PostgresStore`` itself includes it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import trio

from notifyd.core.acl import Visibility
from notifyd.core.config import Config
from notifyd.core.errors import NotifydError
from notifyd.core.models import EventIn
from notifyd.core.postgres.operations import (
    VACUUM_LOCK,
    BackupUnsupported,
)
from notifyd.core.postgres.schema import MIGRATIONS
from notifyd.core.postgres.store import PostgresStore
from notifyd.core.storage import open_store
from notifyd.core.store import Event, HistoryQuery, ImportItem, Store
from notifyd.core.transfer import export_lines, parse_event

EVERYTHING = Visibility(everything=True)
#: bound on every wait (a hang fails; nothing is timed)
PATIENCE = 30.0


_Store = PostgresStore


@asynccontextmanager
async def opened(url: str) -> AsyncIterator[_Store]:
    store = _Store(url)
    await store.start()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def second_database(pg_server: Any) -> Any:
    url = pg_server.create_database()
    yield url
    pg_server.drop_database(url)


async def seed(store: Any) -> dict[str, int]:
    """Users, a grant, events (one superseded by a collapse key) and read state."""
    alice = await store.create_user("alice", "admin", None)
    bob = await store.create_user("bob", "user", None)
    await store.grant("bob", "home.*", True, False)
    admin_id = alice.id
    await store.publish(
        [
            EventIn(topic="home.door", title="open", body="front door", tags=["door"]),
            EventIn(topic="home.door", title="state", collapse_key="door"),
            EventIn(topic="home.door", title="state", body="closed", collapse_key="door"),
            EventIn(topic="work.ci", title="build", priority=5, click="https://ci.example"),
            EventIn(topic="home.temp", title="21 C", category="sensor"),
        ],
        admin_id,
    )
    await store.set_state(bob.id, [1], "read", EVERYTHING)
    await store.set_state(alice.id, [4], "archive", EVERYTHING)
    await store.set_state(alice.id, [4], "click", EVERYTHING, action="open")
    # bob's "mark all read": a watermark, exported as explicit reads of what he may read
    await store.read_all(
        HistoryQuery(user_id=bob.id, visibility=Visibility(everything=False, any_of=("home.*",)))
    )
    return {"alice": alice.id, "bob": bob.id}


async def export_records(store: Store, topic: str | None = None) -> list[dict[str, Any]]:
    lines = b"".join([chunk async for chunk in export_lines(store, topic, None)])
    return [orjson.loads(line) for line in lines.splitlines()]


def items_of(records: list[dict[str, Any]]) -> list[ImportItem]:
    seen: dict[tuple[str, str, str, str], int] = {}
    items = []
    for n, rec in enumerate(records[1:], start=2):
        item = parse_event(n, rec)
        key = (item.created_at, item.event["topic"], item.event["title"], item.event["body"])
        seen[key] = item.occurrence = seen.get(key, 0) + 1
        items.append(item)
    return items


def comparable(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The event records, without what names the source (ids are compared by order)."""
    return [{k: v for k, v in r.items() if k != "id"} for r in records[1:]]


# -- storage_info, integrity ------------------------------------------------------------


@pytest.mark.trio
async def test_storage_info_describes_the_database_without_its_password(pg_database: str) -> None:
    async with opened(pg_database) as store:
        info = await store.storage_info()
    assert info.engine == "postgresql"
    assert info.size_bytes is not None and info.size_bytes > 0
    assert info.log_bytes == 0
    assert info.schema_version == len(MIGRATIONS)
    assert info.server_version and info.server_version[0].isdigit()
    assert (
        info.location.startswith("postgresql://")
        and pg_database.rsplit("/", 1)[1].split("?")[0] in info.location
    )
    password = psycopg.conninfo.conninfo_to_dict(pg_database).get("password")
    if password:
        assert str(password) not in info.location
    assert info.checks[0] == "consistency"
    assert info.checks[1].startswith("consistency")


@pytest.mark.trio
async def test_integrity_check_finds_a_broken_sequencer_and_orphans(pg_database: str) -> None:
    async with opened(pg_database) as store:
        await seed(store)
        assert await store.integrity_check() == ["ok"]
        assert await store.integrity_check(full=True) == ["ok"]
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute("UPDATE event_sequencer SET last_id = 2 WHERE id = 1")
            conn.execute("INSERT INTO event_extras (event_id, token_id) VALUES (999, 1)")
            conn.execute("INSERT INTO receipts (user_id, event_id, read) VALUES (1, 998, TRUE)")
        problems = await store.integrity_check()
    assert len(problems) == 3, problems
    assert "last_id is 2 but events go up to #5" in problems[0]
    assert problems[1].startswith("receipts: 1 rows")
    assert problems[2].startswith("event_extras: 1 rows")


@pytest.mark.trio
async def test_integrity_check_reports_a_schema_from_another_version(pg_database: str) -> None:
    async with opened(pg_database) as store:
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute("UPDATE notifyd_schema SET version = 1")
        assert await store.integrity_check() == [
            f"schema version is 1, this notifyd expects {len(MIGRATIONS)}"
        ]


# -- backup -----------------------------------------------------------------------------


@pytest.mark.trio
async def test_backup_is_refused_with_a_clear_client_error(
    pg_database: str, tmp_path: Path
) -> None:
    async with opened(pg_database) as store:
        with pytest.raises(BackupUnsupported) as caught:
            await store.backup(str(tmp_path / "copy"))
    exc = caught.value
    assert isinstance(exc, NotifydError) and 400 <= exc.status < 500
    assert exc.code == "backup_unsupported"
    assert "pg_dump" in exc.message and "docs/cluster.md" in exc.message
    assert not (tmp_path / "copy").exists()


# -- checkpoint / after_prune -----------------------------------------------------------


@pytest.mark.trio
async def test_vacuum_after_prune_runs_on_one_node_at_a_time(pg_database: str) -> None:
    async with opened(pg_database) as a, opened(pg_database) as b:
        await a.publish([EventIn(topic="t", title=str(n)) for n in range(20)], 1)
        assert await a.prune("9999-12-31T23:59:59.999Z", 100) == 20
        await a.checkpoint()  # nothing to do on PostgreSQL; must not fail
        await a.after_prune()
        assert await a.vacuum_pruned() is True  # alone: it runs

        # node b's chore while node a is in the middle of its own: b skips it
        b_ran: list[bool] = []

        def overlap() -> None:
            b_ran.append(trio.from_thread.run(b.vacuum_pruned))

        a.during_vacuum = overlap
        with trio.fail_after(PATIENCE):
            assert await a.vacuum_pruned() is True
        assert b_ran == [False]
        a.during_vacuum = None
        # and once a is done, b gets the lock
        assert await b.vacuum_pruned() is True

        # a lock held by any other session (another node) makes the chore skip
        with psycopg.connect(pg_database, autocommit=True) as other:
            other.execute("SELECT pg_advisory_lock(%s)", (VACUUM_LOCK,))
            assert await b.vacuum_pruned() is False
            other.execute("SELECT pg_advisory_unlock(%s)", (VACUUM_LOCK,))
        assert await b.vacuum_pruned() is True
        with psycopg.connect(pg_database, autocommit=True) as conn:
            row = conn.execute(
                "SELECT last_vacuum IS NOT NULL, last_analyze IS NOT NULL "
                "FROM pg_stat_user_tables WHERE relname = 'events'"
            ).fetchone()
        assert row == (True, True)


# -- export / import --------------------------------------------------------------------


@pytest.mark.trio
async def test_export_import_round_trip_between_postgresql_databases(
    pg_database: str, second_database: str
) -> None:
    async with opened(pg_database) as src:
        await seed(src)
        records = await export_records(src)
    header = records[0]
    assert header["type"] == "header"
    assert [r["title"] for r in records[1:]] == ["open", "state", "state", "build", "21 C"]
    assert [r["superseded"] for r in records[1:]] == [False, True, False, False, False]
    assert set(records[1]["state"]) == {"bob"} and records[1]["state"]["bob"]["read"] is True
    assert "read_at" in records[1]["state"]["bob"]
    # bob's "read all" covers the home.* events he may read, not work.ci
    assert records[3]["state"]["bob"]["read"] is True
    assert records[5]["state"]["bob"]["read"] is True
    assert "bob" not in records[4]["state"]
    assert records[4]["state"]["alice"]["action"] == "open"

    async with opened(second_database) as dst:
        heard: list[Event] = []
        dst.add_commit_listener(heard.extend)
        users = {"alice": (await dst.create_user("alice", "admin", None)).id}
        users["bob"] = (await dst.create_user("bob", "user", None)).id
        await dst.grant("bob", "home.*", True, False)
        items = items_of(records)
        batch = await dst.import_events(items, users["alice"], users, await dst.last_event_id())
        assert [e["id"] for e in batch.stored] == [1, 2, 3, 4, 5]
        assert batch.skipped == 0
        assert batch.states == sum(len(i.state) for i in items)
        assert [e["id"] for e in heard] == [1, 2, 3, 4, 5]
        assert await dst.last_event_id() == 5
        assert await dst.integrity_check() == ["ok"]
        again = await export_records(dst)
        assert comparable(again) == comparable(records)
        # importing the same file again stores nothing
        repeat = await dst.import_events(items, users["alice"], users, await dst.last_event_id())
        assert repeat.stored == [] and repeat.skipped == 5
        # new events after an import follow the imported ids
        result = await dst.publish([EventIn(topic="t", title="after")], users["alice"])
        assert result.events[0]["id"] == 6


@pytest.mark.trio
async def test_export_from_postgresql_imports_into_sqlite(pg_database: str, tmp_path: Path) -> None:
    async with opened(pg_database) as src:
        await seed(src)
        records = await export_records(src, topic="home.*")
    assert {r["topic"] for r in records[1:]} == {"home.door", "home.temp"}
    sqlite = open_store(Config(data_dir=str(tmp_path), database_url=f"sqlite://{tmp_path}/i.db"))
    await sqlite.start()
    try:
        users = {"alice": (await sqlite.create_user("alice", "admin", None)).id}
        users["bob"] = (await sqlite.create_user("bob", "user", None)).id
        await sqlite.grant("bob", "home.*", True, False)
        items = items_of(records)
        batch = await sqlite.import_events(items, users["alice"], users, 0)
        assert len(batch.stored) == 4
        assert comparable(await export_records(sqlite)) == comparable(records)
    finally:
        await sqlite.close()


@pytest.mark.trio
async def test_export_reads_one_snapshot(pg_database: str) -> None:
    async with opened(pg_database) as a, opened(pg_database) as b:
        await a.publish([EventIn(topic="t", title=str(n)) for n in range(5)], 1)
        export = await a.open_export(None, None)
        try:
            assert export.summary.events == 5 and export.summary.last_event_id == 5
            first = await export.next_page(2)
            # another node publishes and prunes while the export runs
            await b.publish([EventIn(topic="t", title="late")], 1)
            assert await b.prune("9999-12-31T23:59:59.999Z", 3) == 3
            rest = []
            while page := await export.next_page(2):
                rest.extend(page)
        finally:
            await export.aclose()
        assert [e["id"] for e in first + rest] == [1, 2, 3, 4, 5]
        since = await a.open_export("t", 4)
        try:
            assert since.summary.events == 2
            assert [e["id"] for e in await since.next_page()] == [5, 6]
        finally:
            await since.aclose()


@pytest.mark.trio
async def test_full_integrity_check_uses_amcheck_when_installed(pg_database: str) -> None:
    with psycopg.connect(pg_database, autocommit=True) as conn:
        available = conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'amcheck'"
        ).fetchone()
    assert available is not None, "the test server has no amcheck (postgresql-contrib)"
    async with opened(pg_database) as store:
        await seed(store)
        assert (await store.storage_info()).checks[1] == "consistency (amcheck not installed)"
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION amcheck")
        assert (await store.storage_info()).checks[1] == "consistency+amcheck"
        assert await store.integrity_check(full=True) == ["ok"]
