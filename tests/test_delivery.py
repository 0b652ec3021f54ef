"""The outbox end to end (real daemon, the `memory` test channel) and its retry
schedule under trio's MockClock (real store, no sleeps)."""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from conftest import Daemon, wait_for
from memory_plugin import MemoryChannel

from notifyd.config import Config
from notifyd.core.errors import StoreUnavailable
from notifyd.core.outbox import Outbox, backoff
from notifyd.core.services import Services
from notifyd.core.sqlite.store import SQLiteStore
from notifyd.worker_link import DaemonLink

#: every daemon here runs on SQLite and on PostgreSQL (tests/conftest.py)
pytestmark = pytest.mark.both_engines

TESTS = str(Path(__file__).parent)


def _env(**extra: str) -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return {
        "PYTHONPATH": TESTS + (os.pathsep + path if path else ""),
        "NOTIFYD_PLUGINS": "memory_plugin",
        "NOTIFYD_DELIVERY_BACKOFF_SECONDS": "0.1",
        **extra,
    }


def sent(d: Daemon) -> list[dict[str, Any]]:
    path = d.data_dir / "memory-deliveries.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def add_channel(c: Any, name: str, user: str | None = None, **config: Any) -> dict:
    body: dict[str, Any] = {"name": name, "kind": "memory", "config": config}
    if user:
        body["user"] = user
    r = c.post("/v1/channels", json=body)
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture
def mdaemon(make_daemon: Any) -> Daemon:
    return make_daemon(extra_env=_env()).start()


def test_events_reach_channels_of_users_who_may_read_them(mdaemon: Daemon) -> None:
    token = mdaemon.user("bob", grants={"home/*": "read"})
    with mdaemon.admin() as c:
        add_channel(c, "admin-mem")
        add_channel(c, "bob-mem", user="bob")
        home = mdaemon.publish("home/door", title="door open")
        work = mdaemon.publish("work/ci", title="build failed")
        wait_for(lambda: len(sent(mdaemon)) == 3, message="three deliveries")
        got = {(r["user"], r["event_ids"][0]) for r in sent(mdaemon)}
        assert got == {("admin", home["id"]), ("admin", work["id"]), ("bob", home["id"])}
        # the outcome is recorded just after the send
        wait_for(lambda: {d["state"] for d in c.get("/v1/deliveries").json()["deliveries"]}
                 == {"sent"}, message="the deliveries recorded as sent")  # fmt: skip
    # bob sees only his own deliveries and channels; the config is what the plugin shows
    with mdaemon.http(token) as h:
        mine = h.get("/v1/deliveries").json()["deliveries"]
        assert [d["user"] for d in mine] == ["bob"]
        chans = h.get("/v1/channels").json()["channels"]
        assert [ch["name"] for ch in chans] == ["bob-mem"]
        assert (
            h.post(
                "/v1/channels", json={"name": "x", "kind": "memory", "user": "admin"}
            ).status_code
            == 403
        )


def test_retries_with_backoff_then_dead_and_manual_retry(make_daemon: Any) -> None:
    d = make_daemon(extra_env=_env(NOTIFYD_DELIVERY_MAX_ATTEMPTS="3")).start()
    with d.admin() as c:
        add_channel(c, "flaky", fail=2)  # fails twice, then works
        add_channel(c, "broken", fail=-1)  # always fails: dead after 3 attempts
        add_channel(c, "refuses", permanent=True)  # dead at once
        ev = d.publish("alerts", title="disk full")

        def states() -> dict[str, tuple[str, int]]:
            rows = c.get("/v1/deliveries").json()["deliveries"]
            return {r["channel"]: (r["state"], r["attempts"]) for r in rows}

        wait_for(lambda: states() == {"flaky": ("sent", 3), "broken": ("dead", 3), "refuses": ("dead", 1)},
                 message="final delivery states")  # fmt: skip
        assert [r["attempt"] for r in sent(d)] == [3]
        dead = {
            r["channel"]: r
            for r in c.get("/v1/deliveries", params={"state": "dead"}).json()["deliveries"]
        }
        assert "failing on purpose" in dead["broken"]["last_error"]
        chans = {ch["name"]: ch for ch in c.get("/v1/channels").json()["channels"]}
        assert chans["flaky"]["last_success_at"] and chans["broken"]["last_error"]

        # retry a dead delivery by hand: the channel now works
        c.delete("/v1/channels/refuses")
        assert c.post(f"/v1/deliveries/{dead['broken']['id']}/retry").status_code == 200
        stats = c.get("/v1/stats").json()
        assert stats["by_channel"]["memory"]["sent"] == 1
        assert c.post(f"/v1/events/{ev['id']}/read").status_code == 200
        assert c.get("/v1/stats").json()["by_channel"]["memory"]["read_rate"] == 1.0
        assert c.post("/v1/deliveries/999999/retry").status_code == 404


def test_sensitive_events_leave_only_a_generic_line(mdaemon: Daemon) -> None:
    with mdaemon.admin() as c:
        add_channel(c, "mem")
    mdaemon.publish("bank", title="Card 4242 charged", body="EUR 950 at Shop", category="finance",
                    sensitive=True, click="https://bank.example/tx/1")  # fmt: skip
    (record,) = wait_for(lambda: sent(mdaemon), message="the delivery")
    assert record["title"] == "New notification in finance"
    assert record["body"] == ""
    assert "4242" not in json.dumps(record) and "950" not in json.dumps(record)
    assert "bank.example" not in (
        record["click"] or ""
    )  # the link leads to the notification center
    assert record["click"].startswith(mdaemon.url)
    # as whole numbers: a log line's time (".950Z"), a port or a pid may hold the digits
    log = mdaemon.log()
    assert not re.search(r"\b4242\b", log) and not re.search(r"\b950\b", log), log


def test_pending_deliveries_survive_a_restart_and_are_sent_once(make_daemon: Any) -> None:
    d = make_daemon(extra_env=_env(NOTIFYD_DELIVERY_BACKOFF_SECONDS="2")).start()
    with d.admin() as c:
        add_channel(c, "mem", fail=1)  # the first attempt fails; the retry is 2 s later
        ids = [d.publish("jobs", title=f"job {n}")["id"] for n in range(5)]
        wait_for(
            lambda: all(r["attempts"] == 1 and r["state"] == "pending"
                        for r in c.get("/v1/deliveries").json()["deliveries"])
            and len(c.get("/v1/deliveries").json()["deliveries"]) == 5,
            message="first attempts failed",
        )  # fmt: skip
    d.restart()
    wait_for(lambda: len(sent(d)) >= 5, timeout=20, message="deliveries after the restart")
    with d.admin() as c:
        wait_for(
            lambda: {r["state"] for r in c.get("/v1/deliveries").json()["deliveries"]} == {"sent"}
        )
    assert sorted(r["event_ids"][0] for r in sent(d)) == ids  # each exactly once


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # exited, not yet reaped
    except FileNotFoundError:
        return True


def test_the_worker_stops_when_the_daemon_is_killed_mid_send(make_daemon: Any) -> None:
    d = make_daemon(extra_env=_env()).start()
    assert d.proc is not None
    (worker,) = wait_for(lambda: _children(d.proc.pid), message="the delivery worker")
    with d.admin() as c:
        add_channel(c, "slow", latency=1.5)  # the send outlives the daemon
        event = d.publish("jobs", title="in flight")
    d.kill()
    # its outcome can no longer be recorded: the worker must give up and exit, not
    # wait for the daemon's answer forever (the row stays pending: sent again later)
    wait_for(lambda: _gone(worker), timeout=10, message="the orphaned worker to exit")
    d.start()
    wait_for(lambda: any(event["id"] in r["event_ids"] for r in sent(d)), timeout=20,
             message="the delivery after the restart")  # fmt: skip


@pytest.mark.trio
async def test_worker_link_calls_after_the_daemon_went_away_fail_at_once() -> None:
    """An outcome finishing after the daemon's end of the link closed must not wait
    for an answer that cannot come (the worker would never exit)."""
    ours, theirs = trio.socket.socketpair()
    link = DaemonLink(trio.SocketStream(ours), on_poke=lambda: None)
    async with trio.open_nursery() as nursery:
        await nursery.start(link.run)
        pending = trio.Event()

        async def early_call() -> None:
            with pytest.raises(StoreUnavailable):
                await link.call("finish_deliveries", outcomes=[])
            pending.set()

        nursery.start_soon(early_call)
        await trio.testing.wait_all_tasks_blocked()
        theirs.close()  # the daemon dies
    assert pending.is_set()  # a call in flight when it died was answered "unavailable"
    with trio.fail_after(5), pytest.raises(StoreUnavailable):
        await link.call("finish_deliveries", outcomes=[])  # and so is a later one


def test_a_busy_outbox_sends_each_delivery_exactly_once(mdaemon: Daemon) -> None:
    # Many sends in flight, finishing while the outbox reads the next due rows: no row
    # whose outcome has committed may be read as due again. (Before the fix, a read
    # connection kept a stale snapshot and about 1 delivery in 10 went out twice.)
    with mdaemon.admin() as c:
        for n in range(20):
            add_channel(c, f"device{n}", latency=0.01)
        for n in range(4):
            batch = [{"topic": "load", "title": f"e{n}-{i}"} for i in range(50)]
            r = c.post("/v1/events", json=batch)
            assert r.status_code == 201, r.text
        wait_for(
            lambda: c.get("/v1/stats").json()["by_channel"]["memory"].get("sent") == 4000,
            timeout=60,
            message="4,000 deliveries recorded as sent",
        )
    got = Counter((r["channel"], r["event_ids"][0]) for r in sent(mdaemon))
    assert len(got) == 4000
    assert [k for k, n in got.items() if n > 1] == []


def test_misbehaving_plugins_cannot_take_the_daemon_down(make_daemon: Any) -> None:
    env = _env(NOTIFYD_PLUGINS="memory_plugin,bad_plugins,broken_registration,no_such_plugin")
    d = make_daemon(extra_env=env).start()
    with d.admin() as c:
        add_channel(c, "mem")
        r = c.post("/v1/channels", json={"name": "boom", "kind": "explosive"})
        assert r.status_code == 201, r.text
        d.publish("t", title="still alive")
        wait_for(lambda: len(sent(d)) == 1, message="the good channel still delivers")
        wait_for(lambda: any(x["channel"] == "boom" and x["attempts"] >= 1 and x["last_error"]
                             for x in c.get("/v1/deliveries").json()["deliveries"]))  # fmt: skip
        boom = next(
            x for x in c.get("/v1/deliveries").json()["deliveries"] if x["channel"] == "boom"
        )
        assert boom["last_error"] == "plugin error: RuntimeError"
        assert c.get("/healthz").status_code == 200
    log = d.log()
    assert "no_such_plugin" in log and "startup hook crashed" in log and "cannot register" in log


def test_bad_channel_input(mdaemon: Daemon) -> None:
    with mdaemon.admin() as c:
        r = c.post("/v1/channels", json={"name": "Bad Name", "kind": "memory"})
        assert r.status_code == 422 and r.json()["error"]["field"] == "name"
        r = c.post("/v1/channels", json={"name": "x", "kind": "carrier-pigeon"})
        assert r.status_code == 422 and r.json()["error"]["field"] == "kind"
        r = c.post(
            "/v1/channels", json={"name": "x", "kind": "memory", "config": {"fail": "often"}}
        )
        assert r.status_code == 422 and r.json()["error"]["field"] == "config"
        add_channel(c, "x")
        assert c.post("/v1/channels", json={"name": "x", "kind": "memory"}).status_code == 409
        assert c.delete("/v1/channels/nope").status_code == 404
        assert c.post("/v1/channels/x/test").json() == {"ok": True}


# -- the retry schedule, in virtual time -------------------------------------------


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    rng = random.Random(1)
    for attempt in range(1, 12):
        delay = backoff(attempt, 5.0, 3600.0, rng)
        nominal = min(3600.0, 5.0 * 2 ** (attempt - 1))
        assert 0.8 * nominal <= delay <= 1.2 * nominal


@pytest.mark.trio
async def test_retry_schedule_under_mock_clock(tmp_path: Path) -> None:
    # A small autojump threshold rather than 0: with 0 the virtual clock leaps to the
    # next deadline whenever every task waits on the store's threads, mid-operation.
    clock = trio.testing.MockClock(autojump_threshold=0.02)
    # MockClock must drive the whole run: do the work in a nested trio.run
    store_path = tmp_path / "o.db"

    # Virtual seconds on top of the real start time: the store stamps new outbox
    # rows with the wall clock, which must not lie in the outbox clock's future.
    started = time.time()

    async def scenario() -> list[tuple[int, float]]:
        store = SQLiteStore(store_path)
        await store.start()
        try:
            config = Config(
                data_dir=str(tmp_path), delivery_backoff_seconds=10.0, delivery_max_attempts=4
            )
            svc = Services.build(config, store)
            admin = await store.create_user("admin", "admin", None)
            channel = MemoryChannel(svc)
            outbox = Outbox(svc, {"memory": channel}, clock=lambda: started + trio.current_time(),
                            rng=random.Random(7))  # fmt: skip
            store.add_commit_listener(outbox.wake)
            await store.create_channel(admin.id, "m", "memory", {"fail": 3, "permanent": False})
            MemoryChannel.sent.clear()
            attempts: list[tuple[int, float]] = []
            original = channel.send

            delivered = trio.Event()

            async def recording(delivery: Any) -> None:
                attempts.append((delivery.attempt, trio.current_time()))
                await original(delivery)
                delivered.set()

            channel.send = recording  # type: ignore[method-assign]
            from notifyd.core.models import validate_events

            async with trio.open_nursery() as nursery:
                await nursery.start(outbox.run)
                await store.publish(validate_events({"topic": "t", "title": "x"})[0], admin.id)
                # No polling loop: its timer would let the MockClock jump while the
                # store works in its threads, skewing the measured gaps.
                await delivered.wait()
                nursery.cancel_scope.cancel()
            return attempts
        finally:
            await store.close()

    attempts = await trio.to_thread.run_sync(lambda: trio.run(scenario, clock=clock))
    assert [a for a, _ in attempts] == [1, 2, 3, 4]
    gaps = [b - a for (_, a), (_, b) in zip(attempts, attempts[1:], strict=False)]
    # 10 s, 20 s, 40 s nominal, each within the ±20 % jitter
    for gap, nominal in zip(gaps, (10, 20, 40), strict=True):
        assert 0.8 * nominal <= gap <= 1.2 * nominal + 0.01, gaps
