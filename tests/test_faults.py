"""Resource faults against a real daemon: the disk holding the database fills up, or
another process holds the database's write lock.

Publishing then answers 503 with ``Retry-After`` on every door (notifyd's JSON,
ntfy's and Gotify's error shapes), reads and streams keep working, the daemon
neither exits nor wedges, it logs the episode once (not once per request), nothing
acknowledged before is lost or corrupted, a delivery whose outcome could not be
written is not sent again, and everything recovers by itself, without a restart,
once space is back or the lock is released.

The disk is a small tmpfs mounted for the test (root only; skipped otherwise).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Daemon, wait_for
from pushservice import PushService

from notifyd.core.errors import StoreUnavailable
from notifyd.core.sqlite.store import connect
from notifyd.core.sqlite.writer import LOCK_WAIT, LOCK_WAIT_DEGRADED, Writer

#: big enough for the daemon's files, small enough to fill in a moment
FS_SIZE = "24m"


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for the data dir needs root")
    mnt = tmp_path / "fs"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={FS_SIZE},mode=0700", "tmpfs", str(mnt)],
        capture_output=True, text=True,
    )  # fmt: skip
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (mount said: {r.stderr.strip()})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def fdaemon(small_fs: Path, tmp_path: Path) -> Iterator[Daemon]:
    # The outbox runs in the daemon here: the niced worker process can starve for a
    # minute on a busy machine, and the outcome path under test is the same.
    env = {"NOTIFYD_DELIVERY_BACKOFF_SECONDS": "0.5", "NOTIFYD_DELIVERY_PROCESS": "false"}
    d = Daemon(small_fs / "data", extra_env=env)
    d.data_dir.mkdir()
    try:
        d.start(timeout=60)  # slow when the machine is busy
        yield d
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()
        (tmp_path / "daemon.log").write_text(d.log())  # the tmpfs goes away


def fill(path: Path) -> None:
    """Write ``path`` until the filesystem has no byte left."""
    with open(path, "ab") as f:
        try:
            while True:
                f.write(b"\xa5" * 65536)
                f.flush()
        except OSError as exc:
            assert exc.errno == 28, exc  # ENOSPC
    # top up the last partial blocks
    with open(path, "ab", buffering=0) as f:
        try:
            while True:
                f.write(b"\xa5")
        except OSError:
            pass


def assert_503(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 503, r.text
    assert int(r.headers["retry-after"]) >= 1
    assert r.headers["content-type"].startswith("application/json")
    return r.json()


def assert_notifyd_503(r: httpx.Response, cause: str) -> None:
    err = assert_503(r)["error"]
    assert err["code"] == "store_unavailable", err
    assert cause in err["message"] and "try again" in err["message"], err


def event(i: int, size: int = 3000) -> dict[str, Any]:
    return {
        "topic": f"faults/t{i % 3}", "title": f"event {i} é漢🙂", "body": f"{i}:" + "b" * size,
        "priority": 1 + i % 5, "tags": ["disk", f"n{i}"],
    }  # fmt: skip


def check_stored(d: Daemon, acked: list[dict]) -> None:
    """Every acknowledged event is stored exactly as its 201 said."""
    with d.admin() as c:
        for stored in acked:
            r = c.get(f"/v1/events/{stored['id']}")
            assert r.status_code == 200, r.text
            got = r.json()
            assert {k: got[k] for k in stored} == stored, stored["id"]


def integrity(db: Path) -> str:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def episode_lines(d: Daemon) -> list[str]:
    return [line for line in d.log().splitlines() if "database refuses writes" in line]


def sse_ids(d: Daemon, until: int) -> list[int]:
    """Event ids the SSE stream replays from the start, up to ``until``."""
    ids: list[int] = []
    with d.admin(timeout=10) as c, c.stream("GET", "/v1/stream/sse", params={"since": 0}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("id:"):
                ids.append(int(line[3:]))
                if ids[-1] >= until:
                    break
    return ids


@pytest.mark.slow
def test_disk_full_answers_503_keeps_data_and_recovers(fdaemon: Daemon, small_fs: Path) -> None:
    d = fdaemon
    ballast = small_fs / "ballast"
    token = d.user("faults", grants={"faults/*": "rw", "gotify/*": "rw", "ntfy-*": "rw"})
    with d.admin() as c:
        r = c.post("/v1/tokens", json={"user": "faults", "scopes": ["publish"], "label": "App"})
        assert r.status_code == 201, r.text
        app_token = r.json()["token"]
    # one push: the "pending" one (subscribing needs the 'account' scope)
    phone = d.user(
        "phone", grants={"faults/push": "read"}, scopes=["publish", "subscribe", "account"]
    )
    with PushService() as push, d.http(phone) as h, d.admin() as c:
        push.vapid_public_key = h.get("/v1/webpush/vapid-public-key").json()["public_key"]
        sub = push.subscribe(status=500)  # the first attempt fails, retried soon
        r = h.post("/v1/webpush/subscriptions", json=sub.info())
        assert r.status_code == 201, r.text
        _disk_full(d, c, token, app_token, push, sub, ballast)


def _disk_full(d: Daemon, c: httpx.Client, token: str, app_token: str, push: PushService,
               sub: Any, ballast: Path) -> None:  # fmt: skip
    acked: list[dict] = []
    for i in range(20):
        r = c.post("/v1/events", json=event(i))
        assert r.status_code == 201, r.text
        acked.append(r.json())
    r = c.post("/v1/events", json=[event(i) for i in range(20, 25)])
    assert r.status_code == 201, r.text
    acked += r.json()["events"]
    # one delivery in flight: its first attempt failed and was recorded
    pending = c.post("/v1/events", json={"topic": "faults/push", "title": "pending push"}).json()
    acked.append(pending)
    # (the delivery worker is niced: on a busy machine it can take a while)
    wait_for(lambda: push.received(sub), 60, message="the first (failing) push")

    def delivery() -> dict:
        (row,) = c.get("/v1/deliveries", params={"limit": 500}).json()["deliveries"]
        return row

    wait_for(lambda: delivery()["attempts"] == 1, 60, message="the failed attempt recorded")

    # -- the disk fills up ------------------------------------------------------
    # A reader holding a snapshot (a backup, a long query) keeps SQLite from reusing
    # the start of its WAL file, so every commit needs new space: without it, small
    # commits may still fit and the test would depend on luck.
    reader = sqlite3.connect(d.data_dir / "notifyd.db", isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM events").fetchone()
    fill(ballast)
    sub.status = 201  # the retry will succeed, but its outcome cannot be written
    n = 25
    first_503: httpx.Response | None = None
    while first_503 is None and n < 2000:  # what still fits in SQLite's own pages
        r = c.post("/v1/events", json=event(n))
        n += 1
        if r.status_code == 201:
            acked.append(r.json())
        else:
            first_503 = r
    assert first_503 is not None, "2,000 publishes fitted on a full disk"
    assert_notifyd_503(first_503, "disk holding the database is full")
    assert_notifyd_503(c.post("/v1/events", json=[event(n), event(n + 1)]), "full")
    with d.http(token) as h:
        assert_notifyd_503(h.post("/v1/events", json=event(n + 2)), "full")
        # ntfy's publish door, in ntfy's error shape
        r = h.post("/ntfy-faults", content="x" * 3000, headers={"Title": "ntfy"})
        err = assert_503(r)
        assert (err["code"], err["http"]) == (50300, 503), err
    # Gotify's, in Gotify's
    r = httpx.post(d.url + "/message", params={"token": app_token}, timeout=10,
                   json={"title": "gotify", "message": "m" * 3000, "priority": 5})  # fmt: skip
    err = assert_503(r)
    assert (err["error"], err["errorCode"]) == ("Service Unavailable", 503), err
    assert "full" in err["errorDescription"]

    # reads and streams still work, also over TCP with a token
    with d.http(token) as h:
        r = h.get("/v1/events", params={"limit": 5})
        assert r.status_code == 200 and r.json()["events"][0]["id"] == acked[-1]["id"]
    assert sse_ids(d, acked[-1]["id"])[-1] == acked[-1]["id"]
    check_stored(d, acked)

    def sent_pushes() -> list:
        return [p for p in push.received(sub) if p.status == 201]

    # the retry falls due while the disk is full: taking it is a write (a claim with
    # a lease), refused like any other, so it waits for the space to come back
    wait_for(lambda: "could not claim due deliveries" in d.log(), 60,
             message="the refused claim")  # fmt: skip
    assert sent_pushes() == []
    assert delivery()["state"] == "pending"
    assert d.proc is not None and d.proc.poll() is None, "the daemon exited"
    assert len(episode_lines(d)) == 1, episode_lines(d)  # one line, not one per request

    # -- space is back: no restart ---------------------------------------------------
    reader.execute("COMMIT")
    reader.close()
    ballast.unlink()

    def publish_again() -> dict | None:
        r = c.post("/v1/events", json=event(9999))
        return r.json() if r.status_code == 201 else None

    acked.append(wait_for(publish_again, timeout=10, message="publishing to work again"))
    r = c.post("/v1/events", json=[event(10000), event(10001)])
    assert r.status_code == 201, r.text
    acked += r.json()["events"]
    with d.http(token) as h:
        r = h.post("/ntfy-faults", content="back", headers={"Title": "ntfy"})
        assert r.status_code == 200, r.text
    assert "the database takes writes again" in d.log()
    wait_for(lambda: delivery()["state"] == "sent", 60, message="the retried push, sent")
    assert len(sent_pushes()) == 1, "the retried push went out twice"
    assert sent_pushes()[0].payload["id"] == pending["id"]  # type: ignore[index]
    check_stored(d, acked)
    assert d.proc is not None and d.proc.poll() is None
    d.stop()
    assert integrity(d.data_dir / "notifyd.db") == "ok"


def test_locked_database_answers_503_while_the_lock_is_held_and_recovers(daemon: Daemon) -> None:
    """Publishing under another process's write lock is refused, not queued until the
    lock goes: each 503 arrives while the lock is still held (the test releases it
    only afterwards; a daemon that waited for it would hang the request until the
    client's timeout). That later publishers wait less than the first is pinned by
    the writer test below, without timing."""
    d = daemon
    acked = [d.publish("faults/lock", title=f"before {i}") for i in range(5)]
    holder = sqlite3.connect(d.data_dir / "notifyd.db", isolation_level=None, timeout=0)
    try:
        holder.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        with d.admin(timeout=60) as c:
            r = c.post("/v1/events", json={"topic": "faults/lock", "title": "locked out"})
            assert_notifyd_503(r, "locked by another process")
            # while the episode lasts, later publishers are refused the same way
            r = c.post("/v1/events", json=[{"topic": "faults/lock", "title": "x"}] * 2)
            assert_notifyd_503(r, "locked")
            # reads do not need the lock
            r = c.get("/v1/events", params={"topic": "faults/lock"})
            assert [e["id"] for e in r.json()["events"]] == [e["id"] for e in reversed(acked)]
        assert holder.in_transaction  # every answer above came while the lock was held
        # the scheduler and the other background writers ride it out (they write
        # every second): the daemon is still there
        assert d.proc is not None and d.proc.poll() is None
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    after = wait_for(lambda: d.publish("faults/lock", title="after"), message="a 201 again")
    assert after["id"] > acked[-1]["id"]
    assert len(episode_lines(d)) == 1, episode_lines(d)
    assert "the database takes writes again" in d.log()
    check_stored(d, [*acked, after])


@pytest.mark.trio
async def test_writer_waits_less_for_a_lock_while_an_episode_lasts(tmp_path: Path) -> None:
    """The real writer on a real database locked by another connection: once a
    commit has been refused, the writer waits ``LOCK_WAIT_DEGRADED`` instead of
    ``LOCK_WAIT`` for the lock (so queued publishers get their 503 quickly), until a
    commit that writes succeeds again. Read from the writer's own connection (SQLite
    does the waiting, in real time), not measured."""
    path = tmp_path / "w.db"
    setup = sqlite3.connect(path)
    setup.execute("CREATE TABLE t (x INTEGER)")
    setup.commit()
    setup.close()
    writer = Writer(lambda: connect(str(path)))
    await writer.start()

    def lock_wait(conn: sqlite3.Connection) -> float:
        return conn.execute("PRAGMA busy_timeout").fetchone()[0] / 1000

    def insert(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t VALUES (1)")

    try:
        assert LOCK_WAIT_DEGRADED < LOCK_WAIT
        assert await writer.submit(lock_wait) == LOCK_WAIT
        holder = sqlite3.connect(path, isolation_level=None, timeout=0)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            with pytest.raises(StoreUnavailable, match="locked by another process"):
                await writer.submit(insert)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        # the lock is free again, but the episode lasts until a commit writes
        assert await writer.submit(lock_wait) == LOCK_WAIT_DEGRADED
        assert writer.trouble is not None
        await writer.submit(insert)
        assert writer.trouble is None
        assert await writer.submit(lock_wait) == LOCK_WAIT
    finally:
        await writer.stop()
