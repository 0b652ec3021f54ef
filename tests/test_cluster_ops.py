"""Cluster operations (issue 15): ``notifyd migrate``, node heartbeats, the cluster
checks of ``notifyd doctor``, and the chores that must run on one node at a time.

Everything runs against a real PostgreSQL (the ``pg_database`` fixture: a fresh
database per test) and, where a node is needed, real daemons (``make_pg_node``).
The commands run as subprocesses, as operators run them. The chores run from two
store instances on one database (two nodes) at once; that none of them does its
work twice is checked by counting what each reports against what the database
holds. Every wait is on a condition under a deadline; nothing is timed.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio
from conftest import Daemon, free_port
from pg import connect

from notifyd.core.errors import StoreUnavailable
from notifyd.core.models import EventIn
from notifyd.core.postgres.nodes import IDEMPOTENCY_LOCK, RETENTION_LOCK
from notifyd.core.postgres.schema import MIGRATIONS, SchemaTooNew
from notifyd.core.postgres.store import PostgresStore
from notifyd.core.sqlite.schema import MIGRATIONS as SQLITE_MIGRATIONS
from notifyd.core.timeutil import format_ts

VERSION = len(MIGRATIONS)
T0 = 1_700_000_000.0
FAR_FUTURE = "9999-12-31T23:59:59.999Z"
#: bound on every wait (a hang fails; nothing is timed)
PATIENCE = 60.0


def notifyd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``notifyd ARGS`` in a subprocess, with no NOTIFYD_* from the test's environment."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFYD_")}
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "notifyd", *args],
        capture_output=True, text=True, timeout=PATIENCE, env=full, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def migrate_json(url: str) -> dict[str, Any]:
    r = notifyd("migrate", "--database-url", url, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    return dict(json.loads(r.stdout))


def query(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def doctor(node: Daemon, url: str) -> tuple[int, dict[str, dict[str, Any]]]:
    """``notifyd doctor --json`` as run on ``node``'s machine: exit status, checks by name."""
    r = notifyd(
        "doctor", "--data-dir", str(node.data_dir), "--socket", str(node.socket), "--json",
        env={"NOTIFYD_DATABASE_URL": url},
    )  # fmt: skip
    assert r.stdout, r.stderr
    report = json.loads(r.stdout)
    assert report["ok"] is (r.returncode == 0)
    return r.returncode, {c["name"]: c for c in report["checks"]}


# -- notifyd migrate ----------------------------------------------------------------------


def test_migrate_an_empty_database_then_again_does_nothing(pg_database: str) -> None:
    assert query(pg_database, "SELECT to_regclass('notifyd_schema')") == [(None,)]
    first = migrate_json(pg_database)
    assert first == {"engine": "postgresql", "database": pg_database, "before": None,
                     "after": VERSION, "applied": VERSION}  # fmt: skip
    assert query(pg_database, "SELECT version FROM notifyd_schema") == [(VERSION,)]
    assert query(pg_database, "SELECT count(*) FROM nodes") == [(0,)]  # the last migration ran
    again = migrate_json(pg_database)
    assert again["before"] == again["after"] == VERSION and again["applied"] == 0

    r = notifyd("migrate", "--database-url", pg_database)  # the table, for people
    assert r.returncode == 0, r.stderr
    header, row = r.stdout.splitlines()
    assert header.split() == ["ENGINE", "DATABASE", "BEFORE", "AFTER", "APPLIED"]
    assert row.split() == ["postgresql", pg_database, str(VERSION), str(VERSION), "0"]
    assert "nothing to do" in r.stderr


def test_migrate_reads_the_configuration_like_serve(pg_database: str, tmp_path: Path) -> None:
    # the URL from a --config file, the password from a file (trust auth ignores it);
    # a flag beats the file, as for serve
    password = tmp_path / "db-password"
    password.write_text("not-used-by-trust-auth\n")
    config = tmp_path / "notifyd.toml"
    config.write_text(
        f'database_url = "{pg_database}"\ndatabase_password_file = "{password}"\n'
        f'data_dir = "{tmp_path / "data"}"\n'
    )
    r = notifyd("migrate", "--config", str(config), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["after"] == VERSION
    assert query(pg_database, "SELECT version FROM notifyd_schema") == [(VERSION,)]
    # --data-dir over an SQLite configuration: that file is migrated, nothing else
    r = notifyd("migrate", "--config", str(config), "--database-url", "", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["engine"] == "sqlite" and out["database"] == str(tmp_path / "data" / "notifyd.db")


def test_several_processes_migrating_at_once_migrate_once(pg_database: str) -> None:
    full = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFYD_")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "notifyd", "migrate", "--database-url", pg_database, "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full,
        )  # fmt: skip
        for _ in range(6)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=PATIENCE)
        assert proc.returncode == 0, out + err
        results.append(json.loads(out))
    assert all(r["after"] == VERSION for r in results)
    # one of them migrated; each other one waited for it and found nothing to do
    assert sorted(r["applied"] for r in results) == [0] * 5 + [VERSION]
    assert sorted(str(r["before"]) for r in results) == [str(VERSION)] * 5 + ["None"]
    assert query(pg_database, "SELECT count(*), max(version) FROM notifyd_schema") == [(1, VERSION)]
    assert query(pg_database, "SELECT count(*) FROM event_sequencer") == [(1,)]
    tables = query(
        pg_database,
        "SELECT count(*), count(DISTINCT table_name) FROM information_schema.tables "
        "WHERE table_schema = current_schema()",
    )
    assert tables[0][0] == tables[0][1] >= 15


def test_an_unreachable_server_is_named_without_its_password(tmp_path: Path) -> None:
    closed = f"postgresql://notifyd:hunter2-secret@127.0.0.1:{free_port()}/notifyd"
    r = notifyd("migrate", "--database-url", closed)
    assert r.returncode == 1
    assert "cannot migrate postgresql://notifyd:****@127.0.0.1:" in r.stderr
    assert "hunter2" not in r.stdout + r.stderr

    password = tmp_path / "pw"
    password.write_text("file-secret-42\n")
    url = f"postgresql://notifyd@127.0.0.1:{free_port()}/notifyd"
    r = notifyd("migrate", "--database-url", url, "--database-password-file", str(password))
    assert r.returncode == 1 and "cannot migrate" in r.stderr
    assert "file-secret-42" not in r.stdout + r.stderr


def test_a_newer_schema_is_refused_by_migrate_and_serve(pg_database: str, tmp_path: Path) -> None:
    migrate_json(pg_database)
    newer = VERSION + 1
    with connect(pg_database) as conn:
        conn.execute("UPDATE notifyd_schema SET version = %s", (newer,))

    r = notifyd("migrate", "--database-url", pg_database)
    assert r.returncode == 1
    assert f"schema is version {newer}, newer than this notifyd knows ({VERSION})" in r.stderr
    assert "Traceback" not in r.stderr

    data = tmp_path / "node"
    data.mkdir()
    r = notifyd(
        "serve", "--database-url", pg_database, "--data-dir", str(data),
        "--listen", f"127.0.0.1:{free_port()}", "--socket", str(data / "notifyd.sock"),
    )  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"cannot open the database {pg_database}" in r.stderr
    assert f"newer than this notifyd knows ({VERSION})" in r.stderr
    assert "Traceback" not in r.stderr
    # nothing was written: the version stays, no node registered
    assert query(pg_database, "SELECT version FROM notifyd_schema") == [(newer,)]
    assert query(pg_database, "SELECT count(*) FROM nodes") == [(0,)]


@pytest.mark.trio
async def test_a_store_refuses_to_start_on_a_newer_schema(pg_database: str) -> None:
    migrate_json(pg_database)
    with connect(pg_database) as conn:
        conn.execute("UPDATE notifyd_schema SET version = %s", (VERSION + 3,))
    store = PostgresStore(pg_database, node="old-node")
    with pytest.raises(SchemaTooNew) as refused:
        await store.start()
    assert isinstance(refused.value, StoreUnavailable) and refused.value.found == VERSION + 3
    assert query(pg_database, "SELECT version FROM notifyd_schema") == [(VERSION + 3,)]


def test_migrate_on_sqlite(tmp_path: Path) -> None:
    data = tmp_path / "data"
    r = notifyd("migrate", "--data-dir", str(data), "--json")
    assert r.returncode == 0, r.stderr
    first = json.loads(r.stdout)
    assert first == {"engine": "sqlite", "database": str(data / "notifyd.db"), "before": None,
                     "after": len(SQLITE_MIGRATIONS), "applied": len(SQLITE_MIGRATIONS)}  # fmt: skip
    with sqlite3.connect(data / "notifyd.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (len(SQLITE_MIGRATIONS),)
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (0,)
    r = notifyd("migrate", "--data-dir", str(data), "--json")
    assert json.loads(r.stdout)["applied"] == 0

    conn = sqlite3.connect(data / "notifyd.db")
    conn.execute(f"PRAGMA user_version = {len(SQLITE_MIGRATIONS) + 1}")
    conn.close()
    r = notifyd("migrate", "--data-dir", str(data))
    assert r.returncode == 1 and "newer than this notifyd knows" in r.stderr


# -- heartbeats ---------------------------------------------------------------------------


def node_rows(url: str) -> dict[str, tuple[Any, ...]]:
    rows = query(url, "SELECT name, host, pid, version, clock_offset, started_at <= seen_at "
                      "FROM nodes ORDER BY name")  # fmt: skip
    return {r[0]: r[1:] for r in rows}


def test_nodes_appear_while_they_run_and_leave_when_stopped(
    make_pg_node: Callable[..., Daemon], pg_database: str
) -> None:
    from notifyd import __version__

    a, b = make_pg_node().start(), make_pg_node().start()
    # each row is written before the daemon serves; the delivery workers are not nodes
    rows = node_rows(pg_database)
    assert set(rows) == {"node-0", "node-1"}
    for name, node in (("node-0", a), ("node-1", b)):
        host, pid, version, offset, ordered = rows[name]
        assert node.proc is not None and pid == node.proc.pid
        assert version == __version__ and host and ordered
        assert abs(offset) < 1.0  # one machine, one clock: only the round trip's error

    assert b.stop() == 0  # a clean stop removes its row
    assert set(node_rows(pg_database)) == {"node-0"}
    a.kill()  # a crash leaves it (doctor reports it stale once it is old)
    assert set(node_rows(pg_database)) == {"node-0"}
    # started again under the same name, it takes its row over
    a.start()
    assert a.proc is not None and node_rows(pg_database)["node-0"][1] == a.proc.pid


@pytest.mark.trio
async def test_the_heartbeat_refreshes_the_row_and_measures_the_clock(pg_database: str) -> None:
    store = PostgresStore(pg_database, node="beating")
    store.heartbeat_interval = 0.05
    await store.start()
    try:
        first = query(pg_database, "SELECT seen_at FROM nodes WHERE name = 'beating'")[0][0]
        # someone else's idea of this node's clock is overwritten by the next beat
        with connect(pg_database) as conn:
            conn.execute("UPDATE nodes SET clock_offset = 99 WHERE name = 'beating'")
        with trio.fail_after(PATIENCE):
            while True:
                (seen, offset), = query(
                    pg_database, "SELECT seen_at, clock_offset FROM nodes WHERE name = 'beating'"
                )  # fmt: skip
                if seen > first and offset != 99:
                    break
                await trio.sleep(0.02)
        assert abs(offset) < 1.0
    finally:
        await store.close()
    assert query(pg_database, "SELECT count(*) FROM nodes") == [(0,)]
    # a store without a node name (a delivery worker) writes no row
    worker = PostgresStore(pg_database)
    await worker.start()
    await worker.close()
    assert query(pg_database, "SELECT count(*) FROM nodes") == [(0,)]


def test_a_heartbeat_names_another_process_writing_under_its_name(pg_database: str) -> None:
    from notifyd.core.postgres.nodes import NodeIdentity, beat

    migrate_json(pg_database)
    first, second = (
        NodeIdentity("twin", host="web1", pid=11),
        NodeIdentity("twin", host="web2", pid=22),
    )
    with connect(pg_database) as conn:
        assert beat(conn, first) is None  # a new row
        assert beat(conn, first) is None  # its own row
        assert beat(conn, second) == "web1 pid 11"  # two nodes share a node_name
        assert beat(conn, first) == "web2 pid 22"
    assert node_rows(pg_database)["twin"][:2] == ("web1", 11)


# -- doctor -------------------------------------------------------------------------------


def test_doctor_on_a_two_node_cluster(
    make_pg_node: Callable[..., Daemon], pg_database: str
) -> None:
    a, _b = make_pg_node().start(), make_pg_node().start()
    status, checks = doctor(a, pg_database)
    assert status == 0, checks
    for name in ("daemon", "database", "connection", "schema", "nodes", "clock"):
        assert checks[name]["status"] == "ok", checks[name]
    assert "PostgreSQL" in checks["connection"]["detail"]
    assert checks["connection"]["data"]["location"] == pg_database
    assert checks["schema"]["data"] == {"version": VERSION, "expected": VERSION}
    listed = checks["nodes"]["data"]["nodes"]
    assert [n["name"] for n in listed] == ["node-0", "node-1"]
    assert "node-0" in checks["nodes"]["detail"] and "node-1" in checks["nodes"]["detail"]
    assert set(checks["clock"]["data"]["offsets"]) == {"node-0", "node-1"}

    # the table for people has the same checks
    r = notifyd("doctor", "--data-dir", str(a.data_dir), "--socket", str(a.socket),
                env={"NOTIFYD_DATABASE_URL": pg_database})  # fmt: skip
    lines = r.stdout.splitlines()
    for name in ("connection", "schema", "nodes", "clock"):
        assert any(line.split()[:2] == ["ok", name] for line in lines), r.stdout


def test_doctor_warns_and_fails_on_skewed_clocks_and_stale_nodes(
    make_pg_node: Callable[..., Daemon], pg_database: str
) -> None:
    a = make_pg_node().start()

    def inject(name: str, offset: float, seen_ago: float = 0.0) -> None:
        with connect(pg_database) as conn:
            conn.execute(
                "INSERT INTO nodes (name, host, pid, version, started_at, seen_at, clock_offset) "
                "VALUES (%s, 'elsewhere', 4242, 'test', now() - interval '1 hour', "
                "now() - make_interval(secs => %s), %s) ON CONFLICT (name) DO UPDATE SET "
                "seen_at = excluded.seen_at, clock_offset = excluded.clock_offset",
                (name, seen_ago, offset),
            )

    inject("skewed", 2.5)
    status, checks = doctor(a, pg_database)
    assert status == 0  # a warning alone passes
    assert checks["clock"]["status"] == "warn"
    assert "skewed is 2.5 s off" in checks["clock"]["detail"]
    assert checks["clock"]["data"]["offsets"]["skewed"] == 2.5

    inject("skewed", -7.0)  # behind counts as much as ahead
    status, checks = doctor(a, pg_database)
    assert status == 1
    assert checks["clock"]["status"] == "fail" and "7.0 s off" in checks["clock"]["detail"]

    with connect(pg_database) as conn:
        conn.execute("DELETE FROM nodes WHERE name = 'skewed'")
    inject("crashed", 0.0, seen_ago=300)
    status, checks = doctor(a, pg_database)
    assert status == 0 and checks["clock"]["status"] == "ok"
    assert checks["nodes"]["status"] == "warn"
    assert "not seen for over 60 s: crashed" in checks["nodes"]["detail"]
    seen = {n["name"]: n["seen_seconds_ago"] for n in checks["nodes"]["data"]["nodes"]}
    assert seen["crashed"] >= 300 and seen["node-0"] < 300


def test_doctor_on_the_database_with_no_daemon_and_with_no_server(
    make_pg_node: Callable[..., Daemon], pg_database: str, tmp_path: Path
) -> None:
    a = make_pg_node().start()
    a.publish("t", title="one")
    a.stop()
    status, checks = doctor(a, pg_database)
    assert status == 1 and checks["daemon"]["status"] == "fail"
    database = checks["database"]
    assert database["status"] == "ok", database
    assert "checked on the server" in database["detail"] and "1 events" in database["detail"]
    assert checks["connection"]["status"] == "ok" and checks["schema"]["status"] == "ok"
    assert checks["nodes"]["status"] == "warn" and "no node" in checks["nodes"]["detail"]

    with connect(pg_database) as conn:
        conn.execute("UPDATE notifyd_schema SET version = %s", (VERSION + 1,))
    _, checks = doctor(a, pg_database)
    assert (
        checks["schema"]["status"] == "fail"
        and "ahead of this notifyd" in checks["schema"]["detail"]
    )

    gone = f"postgresql://notifyd:pw-never-shown@127.0.0.1:{free_port()}/notifyd"
    status, checks = doctor(a, gone)
    assert status == 1
    assert checks["connection"]["status"] == "fail"
    assert "cannot connect to postgresql://notifyd:****@" in checks["connection"]["detail"]
    for name in ("schema", "nodes", "clock"):
        assert checks[name]["status"] == "warn"
    assert "pw-never-shown" not in json.dumps(checks)


# -- chores on one node at a time ---------------------------------------------------------


@asynccontextmanager
async def two_nodes(url: str, **kw: Any) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    a, b = PostgresStore(url, **kw), PostgresStore(url, **kw)
    await a.start()
    try:
        await b.start()
        try:
            yield a, b
        finally:
            await b.close()
    finally:
        await a.close()


@pytest.mark.trio
async def test_releasing_from_two_nodes_at_once_releases_each_event_once(pg_database: str) -> None:
    scheduled = 240
    async with two_nodes(pg_database, clock=lambda: T0) as (a, b):
        for start in range(0, scheduled, 60):
            await a.publish(
                [EventIn(topic="s", title=f"#{n}", deliver_at=format_ts(T0 + 1 + n))
                 for n in range(start, start + 60)],
                1, batch=True,
            )  # fmt: skip
        assert query(pg_database, "SELECT count(*) FROM scheduled") == [(scheduled,)]
        released: dict[str, list[int]] = {"a": [], "b": []}

        async def release(name: str, store: PostgresStore) -> None:
            # small batches, so that the two nodes' calls interleave many times
            while True:
                n = await store.release_due(T0 + 1 + scheduled, limit=7)
                released[name].append(n)
                if n == 0 and not query(pg_database, "SELECT 1 FROM scheduled LIMIT 1"):
                    return

        with trio.fail_after(PATIENCE):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(release, "a", a)
                nursery.start_soon(release, "b", b)
    assert sum(released["a"]) + sum(released["b"]) == scheduled
    assert sum(released["a"]) and sum(released["b"]), released  # both took part
    titles = query(
        pg_database, "SELECT title, count(*) FROM events GROUP BY title HAVING count(*) > 1"
    )
    assert titles == []  # none twice
    assert query(pg_database, "SELECT count(*) FROM events") == [(scheduled,)]
    assert query(pg_database, "SELECT count(*) FROM scheduled") == [(0,)]


@pytest.mark.trio
async def test_pruning_from_two_nodes_at_once_deletes_each_event_once(pg_database: str) -> None:
    total = 600
    async with two_nodes(pg_database) as (a, b):
        for start in range(0, total, 200):
            await a.publish([EventIn(topic="p", title=f"#{n}") for n in range(start, start + 200)],
                            1, batch=True)  # fmt: skip
        counts: dict[str, list[int]] = {"a": [], "b": []}

        async def prune(name: str, store: PostgresStore) -> None:
            while sum(counts["a"]) + sum(counts["b"]) < total:
                counts[name].append(await store.prune(FAR_FUTURE, 25))
                await trio.sleep(0)

        with trio.fail_after(PATIENCE):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(prune, "a", a)
                nursery.start_soon(prune, "b", b)
        # what each node reported deleted adds up to what is gone: nothing twice
        assert sum(counts["a"]) + sum(counts["b"]) == total
        assert query(pg_database, "SELECT count(*) FROM events") == [(0,)]
        assert await a.prune(FAR_FUTURE, 25) == 0


@pytest.mark.trio
async def test_a_node_skips_a_chore_another_node_holds(pg_database: str) -> None:
    now = [T0]
    async with two_nodes(pg_database, clock=lambda: now[0]) as (a, _b):
        await a.publish([EventIn(topic="p", title="old")], 1, idempotency_key="k1")
        await a.publish([EventIn(topic="p", title="expiring", expires_at=format_ts(T0 + 60))], 1)
        now[0] += 3600
        cutoff = format_ts(now[0])
        # another node, in the middle of these chores
        with psycopg.connect(pg_database, autocommit=True) as other, other.transaction():
            other.execute("SELECT pg_advisory_xact_lock(%s)", (RETENTION_LOCK,))
            other.execute("SELECT pg_advisory_xact_lock(%s)", (IDEMPOTENCY_LOCK,))
            with trio.fail_after(PATIENCE):  # skipped at once, never waiting for it
                assert await a.prune(cutoff, 100) == 0
                assert await a.drop_expired(cutoff, 100) == 0
                assert await a.forget_idempotency_keys(cutoff) == 0
            assert query(pg_database, "SELECT count(*) FROM events") == [(2,)]
            assert query(pg_database, "SELECT count(*) FROM idempotency") == [(1,)]
        # the other node's transaction ended: its locks with it
        assert await a.drop_expired(cutoff, 100) == 1
        assert await a.prune(cutoff, 100) == 1
        assert await a.forget_idempotency_keys(cutoff) == 1
        assert query(pg_database, "SELECT count(*) FROM events") == [(0,)]
        assert query(pg_database, "SELECT count(*) FROM idempotency") == [(0,)]


def test_the_claims_of_a_dead_or_departed_node_are_taken_back(pg_database: str) -> None:
    """Delivery claims whose node is not seen any more (no heartbeat for a few
    intervals, or its row removed at a clean stop) are ended and due at once; a
    live node's claims are left alone."""
    from notifyd.core.postgres.nodes import NodeIdentity, beat, release_dead_claims

    migrate_json(pg_database)
    lease_end = format_ts(4_000_000_000.0)
    with connect(pg_database) as conn:
        beat(conn, NodeIdentity("alive"))
        beat(conn, NodeIdentity("stale"))
        conn.execute("UPDATE nodes SET seen_at = clock_timestamp() - interval '5 minutes' "
                     "WHERE name = 'stale'")  # fmt: skip
        for owner in ("alive/1.aa", "stale/2.bb", "gone/3.cc"):
            conn.execute(
                "INSERT INTO deliveries (event_id, user_id, channel_id, next_attempt_at, "
                "created_at, claimed_by, lease_until) VALUES (1, 1, 1, %s, %s, %s, %s)",
                (lease_end, format_ts(0.0), owner, lease_end),
            )
        now = 1_900_000_000.0
        assert release_dead_claims(conn, 30.0, now) == 2
        rows = conn.execute(
            "SELECT claimed_by, lease_until, next_attempt_at FROM deliveries ORDER BY id"
        ).fetchall()
        assert rows == [
            ("alive/1.aa", lease_end, lease_end),
            (None, None, format_ts(now)),
            (None, None, format_ts(now)),
        ]
        claimed = conn.execute("SELECT claimed_by FROM deliveries WHERE claimed_by IS NOT NULL")
        assert [r[0] for r in claimed] == ["alive/1.aa"]
        assert release_dead_claims(conn, 30.0, now) == 0  # nothing left to take back
