"""History queries and retention at scale: the query plans chosen for large
databases return what the simple reading of the filters says, and pruning removes
everything that belongs to old events, nothing else, in batches that let
publishes through."""

from __future__ import annotations

import fnmatch
import random
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio
import trio.testing
from conftest import Daemon, wait_for

from notifyd.config import Config
from notifyd.core.acl import Visibility
from notifyd.core.housekeeping import PRUNE_BATCH, prune_once
from notifyd.core.models import validate_events
from notifyd.core.services import Services
from notifyd.core.sqlite import schema
from notifyd.core.sqlite.store import SQLiteStore, connect
from notifyd.core.store import HistoryQuery
from notifyd.core.timeutil import format_ts

WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "theta",
    "kappa",
    "lambda",
    "sigma",
    "omega",
    "server",
    "backup",
    "deploy",
    "disk",
    "memory",
    "queue",
]
TOPICS = ("a/x", "a/y", "b/z", "c/w", "c/v")
CATEGORIES = ("general", "deploy", "backup")
BOB_GRANTS = {"a/*": "read", "c/w": "read"}


def _fts_ok(path: Path) -> None:
    """FTS5's own check that the index holds exactly the content table's text."""
    c = sqlite3.connect(path)
    try:
        c.execute("INSERT INTO events_fts (events_fts) VALUES ('integrity-check')")
    finally:
        c.close()


# -- queries ---------------------------------------------------------------------------


class Model:
    """What the history of one reader should hold, computed in Python."""

    def __init__(self, events: list[dict[str, Any]], patterns: tuple[str, ...] | None) -> None:
        self.events = sorted(events, key=lambda e: -e["id"])
        self.patterns = patterns  # None: sees everything
        self.read: set[int] = set()
        self.unread: set[int] = set()
        self.watermark = 0

    def is_read(self, i: int) -> bool:
        if i in self.read:
            return True
        if i in self.unread:
            return False
        return i <= self.watermark

    def matches(self, ev: dict[str, Any], f: dict[str, Any]) -> bool:
        if self.patterns is not None and not any(
            fnmatch.fnmatchcase(ev["topic"], p) for p in self.patterns
        ):
            return False
        if "topic" in f and not fnmatch.fnmatchcase(ev["topic"], f["topic"]):
            return False
        if "category" in f and ev["category"] != f["category"]:
            return False
        if "min_priority" in f and ev["priority"] < f["min_priority"]:
            return False
        if "before" in f and not ev["id"] < f["before"]:
            return False
        if "since" in f and not ev["id"] > f["since"]:
            return False
        if "unread" in f and self.is_read(ev["id"]) == f["unread"]:
            return False
        if "q" in f:
            tokens = (ev["title"] + " " + ev["body"]).lower().split()
            *whole, last = f["q"].lower().split()
            if not all(w in tokens for w in whole):
                return False
            if not any(t.startswith(last) for t in tokens):
                return False
        return True

    def query(self, f: dict[str, Any]) -> list[int]:
        return [e["id"] for e in self.events if self.matches(e, f)]


def _pages(client: httpx.Client, f: dict[str, Any], limit: int, pages: int) -> list[int]:
    params = {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in f.items()}
    ids: list[int] = []
    for _ in range(pages):
        r = client.get("/v1/events", params={**params, "limit": limit})
        assert r.status_code == 200, r.text
        body = r.json()
        ids += [e["id"] for e in body["events"]]
        if body["next"] is None:
            break
        params["before"] = body["next"]
    return ids


def test_history_filters_match_the_model_over_both_query_plans(daemon: Daemon) -> None:
    """25,000 events: more than the window that history scans in id order first
    (SCAN_WINDOW), so that pages come from both statements and their boundary."""
    rng = random.Random(5)
    bob = daemon.user("bob", grants=BOB_GRANTS, scopes=["subscribe"])
    events: list[dict[str, Any]] = []
    with daemon.admin(timeout=60) as admin:
        for _ in range(25):
            batch = [
                {
                    "topic": rng.choice(TOPICS),
                    "title": " ".join(rng.choices(WORDS, k=2)),
                    "body": " ".join(rng.choices(WORDS, k=rng.randint(3, 8))),
                    "category": rng.choice(CATEGORIES),
                    "priority": rng.randint(1, 5),
                }
                for _ in range(1000)
            ]
            r = admin.post("/v1/events", json=batch)
            assert r.status_code == 201, r.text
            events += r.json()["events"]
        bob_model = Model(events, tuple(BOB_GRANTS))
        admin_model = Model(events, None)
        # the admin reads everything up to here (the watermark), then marks some
        # older events unread again and some newer ones read
        r = admin.post("/v1/inbox/read-all")
        assert r.status_code == 200, r.text
        admin_model.watermark = events[-1]["id"]
        ids = [e["id"] for e in events]
        admin_unread = rng.sample(ids, 400)
        admin_read = rng.sample(ids, 400)
        for state, chosen, into in (
            ("unread", admin_unread, admin_model.unread),
            ("read", admin_read, admin_model.read),
        ):
            r = admin.post("/v1/inbox/state", json={"ids": chosen, "state": state})
            assert r.status_code == 200, r.text
            into.update(chosen)
            (admin_model.unread if state == "read" else admin_model.read).difference_update(chosen)
    visible = [e["id"] for e in events if bob_model.matches(e, {})]
    bob_read = rng.sample(visible[: len(visible) * 9 // 10], 3000) + visible[-300:]
    with daemon.http(bob) as client:
        for start in range(0, len(bob_read), 500):
            chunk = bob_read[start : start + 500]
            r = client.post("/v1/inbox/state", json={"ids": chunk, "state": "read"})
            assert r.status_code == 200, r.text
        bob_model.read.update(bob_read)

    top = events[-1]["id"]
    split = top + 1 - 20_000
    filters: list[dict[str, Any]] = [
        {}, {"unread": True}, {"unread": False}, {"topic": "a/x"}, {"topic": "a/*"},
        {"topic": "a/*", "unread": True}, {"topic": "c/*", "min_priority": 5},
        {"topic": "b/*"}, {"category": "deploy"}, {"category": "backup", "unread": True},
        {"min_priority": 5, "unread": True}, {"q": "alpha"}, {"q": "sig"},
        {"q": "alpha gam"}, {"q": "beta omega", "topic": "a/*"}, {"q": "disk", "unread": True},
        {"topic": "a/*", "before": split + 3}, {"topic": "c/*", "before": split - 100},
        {"topic": "a/*", "since": split - 40}, {"q": "kappa", "before": split, "since": 100},
        {"unread": True, "topic": "a/*", "q": "delta"}, {"q": "zzz"}, {"q": "!?"},
    ]  # fmt: skip
    with daemon.http(bob) as as_bob, daemon.admin() as as_admin:
        for f in filters:
            for who, client, model in (
                ("bob", as_bob, bob_model),
                ("admin", as_admin, admin_model),
            ):
                expected = model.query(f)
                got = _pages(client, f, 70, 3)
                assert got == expected[: len(got)], (who, f)
                assert len(got) == min(len(expected), 210), (who, f, len(got), len(expected))
                params = {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in f.items()}
                r = client.get("/v1/inbox/count", params=params)
                assert r.json()["count"] == len(expected), (who, f)


# -- pruning -----------------------------------------------------------------------------


@pytest.mark.trio
async def test_prune_removes_old_events_with_all_that_is_theirs_and_nothing_else(
    tmp_path: Path,
) -> None:
    day = 86400.0
    now = [1_800_000_000.0 - 40 * day]
    path = tmp_path / "p.db"
    store = SQLiteStore(path, clock=lambda: now[0])
    await store.start()
    try:
        svc = Services.build(Config(data_dir=str(tmp_path), retention_days=30), store)
        admin = await store.create_user("admin", "admin", None)
        await store.create_channel(admin.id, "phone", "memory", {})

        def batch(word: str, n: int) -> list:
            evs = validate_events(
                [{"topic": "t", "title": f"{word} {i}", "body": f"{word} body"} for i in range(n)]
            )[0]
            for ev in evs[:10]:  # as the Gotify layer stores its application token
                ev._token_id = 7
                ev._extras = {"client::display": {"contentType": "text/plain"}}
            return evs

        old_ids: list[int] = []
        for _ in range(3):
            result = await store.publish(batch("ancient", 1500), admin.id, batch=True)
            old_ids += [e["id"] for e in result.events]
        now[0] += 40 * day
        new = (await store.publish(batch("fresh", 200), admin.id, batch=True)).events
        new_ids = [e["id"] for e in new]
        vis = Visibility(everything=True)
        for start in range(0, len(old_ids), 500):
            await store.set_state(admin.id, old_ids[start : start + 500], "read", vis)
        await store.set_state(admin.id, new_ids, "read", vis)

        def counts(ids: list[int]) -> dict[str, int]:
            c = sqlite3.connect(path)
            try:
                inside = f"IN (SELECT value FROM json_each('{orjson.dumps(ids).decode()}'))"
                out = {
                    "events": c.execute(f"SELECT count(*) FROM events WHERE id {inside}"),
                    "receipts": c.execute(f"SELECT count(*) FROM receipts WHERE event_id {inside}"),
                    "deliveries": c.execute(
                        f"SELECT count(*) FROM deliveries WHERE event_id {inside}"
                    ),
                    "extras": c.execute(
                        f"SELECT count(*) FROM event_extras WHERE event_id {inside}"
                    ),
                    "fts": c.execute(
                        f"SELECT count(*) FROM events_fts WHERE events_fts MATCH ? AND rowid {inside}",
                        ("ancient OR fresh",),
                    ),
                }
                return {k: v.fetchone()[0] for k, v in out.items()}
            finally:
                c.close()

        assert counts(old_ids) == {
            "events": 4500, "receipts": 4500, "deliveries": 4500, "extras": 30, "fts": 4500,
        }  # fmt: skip
        before_new = counts(new_ids)
        assert before_new == {
            "events": 200, "receipts": 200, "deliveries": 200, "extras": 10, "fts": 200,
        }  # fmt: skip
        assert await prune_once(svc, now=now[0]) == 4500
        assert counts(old_ids) == dict.fromkeys(before_new, 0)
        assert counts(new_ids) == before_new
        _fts_ok(path)
        hits = await store.history(
            HistoryQuery(user_id=admin.id, visibility=vis, q="ancient", limit=10)
        )
        assert hits == []
        assert await prune_once(svc, now=now[0]) == 0
    finally:
        await store.close()


class _BatchCountingStore(SQLiteStore):
    """The real store; it only counts the prune batches that begin and signals the
    end of the first one."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.batches_begun = 0
        self.first_batch_done = trio.Event()

    async def prune(self, created_before: str, limit: int) -> int:
        self.batches_begun += 1
        n = await super().prune(created_before, limit)
        self.first_batch_done.set()
        return n


def test_a_publish_commits_between_two_prune_batches_under_mock_clock(tmp_path: Path) -> None:
    """A pruning pass yields the single writer between its batches: a publish issued
    after the first batch is committed and acknowledged while the pass is held in its
    pause (virtual time stands still), before any further batch begins and while old
    events are still there.

    Ordering, not timing: without a pause between batches the next batch would begin
    before the publish is even submitted, and a pass done as one delete would leave
    no old event behind."""
    clock = trio.testing.MockClock()  # autojump off: virtual time moves only when told
    day = 86400.0
    path = tmp_path / "race.db"

    def old_left() -> int:
        c = sqlite3.connect(path)
        try:
            return c.execute("SELECT count(*) FROM events WHERE title LIKE 'old %'").fetchone()[0]
        finally:
            c.close()

    async def scenario() -> None:
        now = [1_800_000_000.0 - 40 * day]
        store = _BatchCountingStore(path, clock=lambda: now[0])
        await store.start()
        try:
            svc = Services.build(Config(data_dir=str(tmp_path), retention_days=30), store)
            admin = await store.create_user("admin", "admin", None)
            for b in range(3):
                evs = validate_events(
                    [{"topic": "t", "title": f"old {b}.{i}"} for i in range(1500)]
                )[0]
                await store.publish(evs, admin.id, batch=True)
            now[0] += 40 * day
            assert old_left() == 4500 > PRUNE_BATCH

            result: list[int] = []

            async def prune() -> None:
                result.append(await prune_once(svc, now=now[0]))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(prune)
                await store.first_batch_done.wait()  # (pytest-timeout bounds the test)
                during = validate_events({"topic": "t", "title": "during"})[0]
                acked = (await store.publish(during, admin.id)).events
                assert [e["title"] for e in acked] == ["during"]
                # acknowledged while the pass waits in its pause
                assert result == [], "the pass ended before the publish was acknowledged"
                assert store.batches_begun == 1, "a second batch began before the publish"
                assert 0 < await trio.to_thread.run_sync(old_left) < 4500
                clock.autojump_threshold = 0  # let the rest of the pass run
            assert result == [4500]
            assert old_left() == 0
            assert store.batches_begun > 2  # it did go in batches
            c = sqlite3.connect(path)
            try:
                titles = [r[0] for r in c.execute("SELECT title FROM events")]
            finally:
                c.close()
            assert titles == ["during"]
        finally:
            await store.close()

    trio.run(scenario, clock=clock)


def _export(n: int, created_at: float, user: str) -> bytes:
    head = {
        "type": "header", "format": "notifyd-export", "version": 1,
        "counts": {"events": n, "users": 1}, "users": [{"name": user, "role": "user"}],
    }  # fmt: skip
    lines = [orjson.dumps(head)]
    for i in range(n):
        ev = {
            "type": "event", "topic": "old/t", "title": f"old {i}", "body": "retired words",
            "created_at": format_ts(created_at + i * 0.001), "state": {user: {"read": True}},
        }  # fmt: skip
        lines.append(orjson.dumps(ev))
    return b"\n".join(lines) + b"\n"


def _pruned(d: Daemon) -> float:
    with d.admin() as c:
        text = c.get("/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("notifyd_events_pruned_total")
    )


def test_lowering_retention_by_reload_prunes_at_once_and_keeps_what_is_young(
    tmp_path: Path,
) -> None:
    """The reload path end to end. That the pass goes in batches that let publishes
    through is pinned without timing by the MockClock test above."""
    n = 30_000
    conf = tmp_path / "notifyd.toml"
    conf.write_text("retention_days = 3650\n")
    d = Daemon(tmp_path / "data", extra_args=["--config", str(conf)])
    d.data_dir.mkdir()
    d.start()
    try:
        d.user("carol", grants={"old/*": "read", "new/*": "read"})
        with d.admin(timeout=120) as admin:
            r = admin.post(
                "/v1/admin/import",
                content=_export(n, time.time() - 40 * 86400, "carol"),
                headers={"Content-Type": "application/x-ndjson"},
            )
            assert r.status_code == 200, r.text
            assert r.json()["imported"] == n
            kept = d.publish("new/t", title="kept")
            assert _pruned(d) == 0  # the pass at start found nothing older than 10 years

            conf.write_text("retention_days = 30\n")
            assert d.proc is not None
            d.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: _pruned(d) > 0, timeout=30, message="the prune to start")
            # a publish issued once the prune has begun is stored and kept (whether
            # the pass is still running then depends on the machine: not asserted)
            r = admin.post("/v1/events", json={"topic": "new/t", "title": "during"})
            assert r.status_code == 201, r.text
            wait_for(lambda: _pruned(d) == n, timeout=60, message="the prune to finish")
            wait_for(lambda: "pruned 30000 events" in d.log(), message="the pass to end")
            r = admin.get("/v1/events", params={"limit": 10})
            assert [e["title"] for e in r.json()["events"]] == ["during", "kept"]
            assert kept["id"] < r.json()["events"][0]["id"]
            assert "retention_days lowered to 30" in d.log()
    finally:
        d.stop()
    db = d.data_dir / "notifyd.db"
    c = sqlite3.connect(db)
    try:
        assert c.execute("SELECT count(*) FROM events").fetchone()[0] == 2
        assert c.execute("SELECT count(*) FROM receipts").fetchone()[0] == 0
    finally:
        c.close()
    _fts_ok(db)


# -- migration -----------------------------------------------------------------------------


@pytest.mark.trio
async def test_migration_8_applies_to_an_existing_database(tmp_path: Path) -> None:
    import sqlite_utils

    path = tmp_path / "v7.db"
    conn = connect(str(path))
    db = sqlite_utils.Database(conn)
    for number, step in enumerate(schema.MIGRATIONS[:7], start=1):
        conn.execute("BEGIN IMMEDIATE")
        step(db)
        conn.execute(f"PRAGMA user_version = {number}")
        conn.execute("COMMIT")
    # a version-7 database with an old event, indexed as version 7 did
    conn.execute(
        "INSERT INTO events (topic, title, body, created_at) VALUES ('t', 'legacy', 'words', ?)",
        (format_ts(1_000_000_000),),
    )
    conn.execute("INSERT INTO events_fts (rowid, title, body) VALUES (1, 'legacy', 'words')")
    triggers = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'")}
    assert "events_ad" in triggers
    conn.close()

    store = SQLiteStore(path)
    await store.start()
    try:
        svc = Services.build(Config(data_dir=str(tmp_path), retention_days=30), store)
        assert await prune_once(svc) == 1
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(schema.MIGRATIONS) >= 8
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'")}
        assert "events_ad" not in names
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 0
        hits = conn.execute("SELECT count(*) FROM events_fts WHERE events_fts MATCH 'legacy'")
        assert hits.fetchone()[0] == 0
    finally:
        conn.close()
    _fts_ok(path)
