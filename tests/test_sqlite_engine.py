"""The SQLite engine itself, below the store contract (tests/test_store_contract.py):
merged publishes in the writer, migrations, what it deletes with an event, its
files; and the factory that opens it from ``database_url``."""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio

from notifyd.config import Config
from notifyd.core.acl import Visibility
from notifyd.core.config import ConfigError, load_config
from notifyd.core.housekeeping import prune_once
from notifyd.core.models import validate_events
from notifyd.core.outbox import Outbox
from notifyd.core.services import Services
from notifyd.core.sqlite import schema
from notifyd.core.sqlite.schema import migrate
from notifyd.core.sqlite.store import SQLiteStore, _publish_many, _PublishRequest, connect
from notifyd.core.storage import check_offline, open_store, verify_backup

T0 = 1_800_000_000.0


def _events(*titles: str) -> list:
    return [validate_events({"topic": "t", "title": t})[0][0] for t in titles]


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    c = connect(str(tmp_path / "s.db"), "OFF")
    migrate(c)
    return c


def _count(path: Path, table: str, where: str = "1") -> int:
    c = sqlite3.connect(path)
    try:
        n: int = c.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()[0]
        return n
    finally:
        c.close()


# -- the writer's merged publishes ------------------------------------------------------


def test_merged_publishes_assign_ids_in_request_order_and_share_keys(
    conn: sqlite3.Connection,
) -> None:
    conn.execute("BEGIN")
    results = _publish_many(
        conn,
        [
            _PublishRequest(_events("a", "b"), 1, None, True, T0),
            _PublishRequest(_events("c"), 1, "k", False, T0),
            _PublishRequest(_events("c-retry"), 1, "k", False, T0),  # same key, same call
            _PublishRequest(_events("delta"), 2, "k", False, T0),  # keys are per user
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
    (again,) = _publish_many(conn, [_PublishRequest(_events("x"), 1, "k", False, T0)])
    conn.execute("COMMIT")
    assert again.replayed and again.events[0]["id"] == 3
    # the full-text index covers what was inserted in the merged call
    hits = [r[0] for r in conn.execute("SELECT rowid FROM events_fts WHERE events_fts MATCH 'c'")]
    assert hits == [3]


@pytest.mark.trio
async def test_a_failing_job_in_a_group_fails_alone(tmp_path: Path) -> None:
    from notifyd.core.errors import Conflict

    store = open_store(Config(data_dir=str(tmp_path)))
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


# -- pruning takes what belongs to an event ----------------------------------------------


@pytest.mark.trio
async def test_retention_prunes_old_events_with_their_receipts_and_deliveries(
    tmp_path: Path,
) -> None:
    day = 86400.0
    now = [T0 - 40 * day]
    config = Config(data_dir=str(tmp_path), retention_days=30)
    store = open_store(config, clock=lambda: now[0])
    await store.start()
    db = config.db_path
    try:
        svc = Services.build(config, store)
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
            return tuple(_count(db, t) for t in ("events", "receipts", "deliveries"))

        assert counts() == (4, 4, 4)
        assert await prune_once(svc, now=now[0]) == 2
        assert counts() == (2, 2, 2)  # 30 days: the 20-day-old event stays
        assert await prune_once(svc, now=now[0]) == 0
    finally:
        await store.close()


# -- claims in the deliveries table (migration 9) ------------------------------------------


@pytest.mark.trio
async def test_claims_on_a_database_from_before_claims(tmp_path: Path) -> None:
    """A database of schema 8 (pending rows, no claim columns) is migrated on start
    (9: claims, 10: session groups), and its pending rows are claimable at once."""
    config = Config(data_dir=str(tmp_path))
    store = open_store(config, clock=lambda: T0)
    await store.start()
    admin = await store.create_user("admin", "admin", None)
    await store.create_channel(admin.id, "phone", "memory", {})
    await store.publish(_events("before the upgrade"), admin.id)
    await store.close()
    # back to schema 8, as an older notifyd left it
    c = sqlite3.connect(config.db_path)
    c.execute("DROP INDEX idx_deliveries_claimed")
    c.execute("ALTER TABLE deliveries DROP COLUMN claimed_by")
    c.execute("ALTER TABLE deliveries DROP COLUMN lease_until")
    c.execute("ALTER TABLE sessions DROP COLUMN group_names")
    for table in ("hooks", "attachments", "server_keys"):  # migrations 11 and 12
        c.execute(f"DROP TABLE {table}")
    c.execute("ALTER TABLE events DROP COLUMN attachment")
    c.execute("PRAGMA user_version = 8")
    c.commit()
    c.close()
    assert len(schema.MIGRATIONS) == 12

    store = open_store(config, clock=lambda: T0)
    await store.start()
    try:
        (due,) = await store.claim_deliveries(T0, 10, "here/1", 60)
        assert [e["title"] for e in due.events] == ["before the upgrade"]
        assert _count(config.db_path, "deliveries", "claimed_by = 'here/1'") == 1
        assert await store.release_claims("here") == 1
        assert _count(config.db_path, "deliveries", "claimed_by IS NOT NULL") == 0
    finally:
        await store.close()
    c = sqlite3.connect(config.db_path)
    assert c.execute("PRAGMA user_version").fetchone()[0] == len(schema.MIGRATIONS)
    c.close()


# -- the factory, database_url, offline checks and backups --------------------------------


def test_database_url_selects_the_sqlite_file(tmp_path: Path) -> None:
    default = load_config(overrides={"data_dir": str(tmp_path)}, environ={})
    assert default.database_url == "" and default.db_path == tmp_path / "notifyd.db"
    elsewhere = tmp_path / "elsewhere" / "n.db"
    cfg = load_config(
        overrides={"data_dir": str(tmp_path)},
        environ={"NOTIFYD_DATABASE_URL": f"sqlite://{elsewhere}"},
    )
    assert cfg.db_path == elsewhere
    store = open_store(cfg)
    assert isinstance(store, SQLiteStore) and store.engine == "sqlite"
    assert Path(store.path) == elsewhere


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql:notifyd:s3cret@db.example/notifyd", "a PostgreSQL URL is postgresql://"),
        ("postgres:/notifyd:s3cret@db.example/notifyd", "a PostgreSQL URL is postgresql://"),
        ("sqlite://relative.db", "sqlite:///ABSOLUTE/PATH"),
        ("sqlite:///", "sqlite:///ABSOLUTE/PATH"),
        ("mysql://u:s3cret@h/db", "unknown scheme 'mysql'"),
    ],
)
def test_database_urls_this_version_cannot_open_are_config_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_config(environ={"NOTIFYD_DATABASE_URL": url})
    assert "s3cret" not in str(info.value)  # the URL may hold a password: never repeated
    with pytest.raises(ConfigError, match=message):
        open_store(Config(database_url=url))


@pytest.mark.trio
async def test_backup_and_offline_checks_go_through_the_engine(tmp_path: Path) -> None:
    config = Config(data_dir=str(tmp_path / "data"))
    missing = check_offline(config)
    assert not missing.exists and not missing.ok
    store = open_store(config)
    await store.start()
    try:
        admin = await store.create_user("admin", "admin", None)
        await store.publish(_events("one", "two"), admin.id, batch=True)
        dest = tmp_path / "copy"
        info = await store.backup(str(dest))
        assert (info.engine, info.media_type, info.suffix) == (
            "sqlite",
            "application/vnd.sqlite3",
            ".db",
        )
        assert (info.events, info.last_event_id, info.bytes) == (2, 2, dest.stat().st_size)
        assert await store.integrity_check() == ["ok"]
        where = await store.storage_info()
        assert (where.engine, where.location) == ("sqlite", str(config.db_path))
        assert where.size_bytes is not None and where.size_bytes > 0
    finally:
        await store.close()
    copy = verify_backup(dest, info.engine)
    assert copy.ok and (copy.events, copy.last_event_id, copy.check) == (2, 2, "integrity_check")
    offline = check_offline(config)
    assert offline.ok and offline.exists and offline.events == 2 and offline.check == "quick_check"
    assert offline.schema_version == len(schema.MIGRATIONS)
    # a damaged file is reported, not raised
    dest.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    assert not verify_backup(dest).ok
    assert not verify_backup(tmp_path / "nothing-here").ok
    assert not verify_backup(dest, "postgresql").ok  # not an engine this version reads


# -- the outbox on claims (two senders on one database, a restarted node) ----------------


async def _until(predicate: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait for ``predicate()`` (checked every 20 ms), at most 60 s."""
    with trio.fail_after(60):
        while not await predicate():
            await trio.sleep(0.02)


def _memory_outbox(svc: Services, node: str) -> Outbox:
    from memory_plugin import MemoryChannel

    return Outbox(svc, {"memory": MemoryChannel(svc)}, node=node)


@pytest.mark.trio
async def test_two_outboxes_on_one_database_never_send_a_delivery_twice(tmp_path: Path) -> None:
    from memory_plugin import MemoryChannel

    config = Config(data_dir=str(tmp_path))
    store = open_store(config)
    await store.start()
    try:
        svc = Services.build(config, store)
        admin = await store.create_user("admin", "admin", None)
        for n in range(4):
            await store.create_channel(admin.id, f"m{n}", "memory", {"latency": 0.002})
        MemoryChannel.sent.clear()
        outboxes = [_memory_outbox(svc, "node-a"), _memory_outbox(svc, "node-b")]
        assert outboxes[0].owner != outboxes[1].owner

        async def all_sent() -> bool:
            rows = await store.list_deliveries(None, "sent", 1000)
            return len(rows) == 400

        async with trio.open_nursery() as nursery:
            for outbox in outboxes:
                store.add_commit_listener(outbox.wake)
                await nursery.start(outbox.run)
            for n in range(5):
                events = [
                    validate_events({"topic": "t", "title": f"{n}.{i}"})[0][0] for i in range(20)
                ]
                await store.publish(events, admin.id, batch=True)
            await _until(all_sent, "400 deliveries recorded as sent")
            nursery.cancel_scope.cancel()
        sends = Counter((r["channel"], r["event_ids"][0]) for r in MemoryChannel.sent)
        assert len(sends) == 400
        assert [k for k, n in sends.items() if n > 1] == []
    finally:
        await store.close()


@pytest.mark.trio
async def test_an_outbox_starting_again_sends_what_its_node_had_claimed_at_once(
    tmp_path: Path,
) -> None:
    from memory_plugin import MemoryChannel

    config = Config(data_dir=str(tmp_path))
    store = open_store(config)
    await store.start()
    try:
        svc = Services.build(config, store)
        admin = await store.create_user("admin", "admin", None)
        await store.create_channel(admin.id, "m", "memory", {})
        await store.publish(_events("claimed by a process that died"), admin.id)
        # an earlier process of this node claimed it for an hour, then died
        (lost,) = await store.claim_deliveries(time.time(), 10, "node-x/dead", 3600)
        other = await store.publish(_events("claimed on another node"), admin.id)
        (elsewhere,) = await store.claim_deliveries(time.time(), 10, "node-y/1", 3600)
        MemoryChannel.sent.clear()

        async def lost_one_sent() -> bool:
            rows = await store.list_deliveries(None, "sent", 10)
            return [r["id"] for r in rows] == lost.ids

        async with trio.open_nursery() as nursery:
            await nursery.start(_memory_outbox(svc, "node-x").run)
            await _until(lost_one_sent, "the delivery the dead process had claimed")
            nursery.cancel_scope.cancel()
        assert [r["event_ids"] for r in MemoryChannel.sent] == [[e["id"] for e in lost.events]]
        # another node's claim is that node's business until its lease ends
        row = [r for r in await store.list_deliveries(None, None, 10) if r["id"] in elsewhere.ids]
        assert [r["state"] for r in row] == ["pending"]
        assert other.events[0]["id"] not in [e for r in MemoryChannel.sent for e in r["event_ids"]]
    finally:
        await store.close()
