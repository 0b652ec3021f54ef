"""Preferences: validation, rules and mutes through the real daemon, and quiet
hours, digest windows and rate limits in virtual time (trio's MockClock driving
the store's clock and the outbox)."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from conftest import Daemon, wait_for
from memory_plugin import MemoryChannel
from test_delivery import _env, add_channel, sent

from notifyd.config import Config
from notifyd.core.models import validate_events
from notifyd.core.outbox import Outbox
from notifyd.core.prefs import Preferences
from notifyd.core.services import Services
from notifyd.core.sqlite.store import SQLiteStore

#: every daemon here runs on SQLite and on PostgreSQL (tests/conftest.py)
pytestmark = pytest.mark.both_engines


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"rules": [{"topic": "a b"}]}, "rules[0].topic"),
        ({"rules": [{"min_priority": 9}]}, "rules[0].min_priority"),
        ({"rules": [{"channels": "email"}]}, "rules[0].channels"),
        ({"rules": [{"colour": "red"}]}, "rules[0].colour"),
        ({"quiet_hours": {"start": "25:00", "end": "07:00"}}, "quiet_hours.start"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"digests": {"email": 5}}, "digests.email"),
        ({"rate_limit_per_minute": 0}, "rate_limit_per_minute"),
        ({"snooze": True}, "snooze"),
    ],
)
def test_bad_preferences_name_the_field(doc: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field.replace('[', '.').replace(']', '.')}"):
        Preferences.from_json(doc)


def test_preferences_api_rules_and_mutes(make_daemon: Any) -> None:
    d: Daemon = make_daemon(extra_env=_env()).start()
    with d.admin() as c:
        assert c.get("/v1/preferences").json()["rules"] == []
        add_channel(c, "phone")
        add_channel(c, "email")
        r = c.put("/v1/preferences", json={"rules": [{"topic": "a b"}]})
        assert r.status_code == 422 and r.json()["error"]["field"] == "rules[0].topic"
        doc = {
            "rules": [
                {"topic": "ci/*", "min_priority": "high", "channels": ["phone"]},
                {"topic": "ci/*", "channels": []},
                {"topic": "noisy/*", "mute": True},
            ],
        }
        r = c.put("/v1/preferences", json=doc)
        assert r.status_code == 200, r.text
        assert r.json()["rules"][0]["min_priority"] == 4
        urgent = d.publish("ci/main", title="build broke", priority="urgent")
        low = d.publish("ci/main", title="build ok", priority="low")
        noise = d.publish("noisy/spam", title="spam")
        other = d.publish("home/door", title="door")
        # the first deliveries also wait for the delivery worker to start (its own
        # process and store connections: seconds on a busy machine)
        wait_for(lambda: len(sent(d)) == 3, timeout=30, message="three deliveries")
        got = sorted((r["channel"], r["event_ids"][0]) for r in sent(d))
        assert got == sorted(
            [("phone", urgent["id"]), ("phone", other["id"]), ("email", other["id"])]
        )
        history = [e["id"] for e in c.get("/v1/events").json()["events"]]
        assert noise["id"] not in history  # muted: not in the inbox either
        assert {urgent["id"], low["id"], other["id"]} <= set(history)  # inbox-only rule keeps it
        assert c.get("/v1/preferences").json() == r.json()


# -- virtual time ---------------------------------------------------------------------

# 2026-01-05 21:59:00 UTC
START = datetime(2026, 1, 5, 21, 59, tzinfo=UTC).timestamp()


async def _world(tmp_path: Path, prefs: dict) -> tuple[SQLiteStore, Outbox, Any]:
    clock = lambda: START + trio.current_time()  # noqa: E731
    store = SQLiteStore(tmp_path / "p.db", clock=clock)
    await store.start()
    svc = Services.build(Config(data_dir=str(tmp_path)), store)
    admin = await store.create_user("admin", "admin", None)
    await store.create_channel(admin.id, "m", "memory", {"fail": 0, "permanent": False})
    await store.set_preferences(admin.id, Preferences.from_json(prefs).to_json())
    outbox = Outbox(
        svc, {"memory": MemoryChannel(svc)}, clock=clock, rng=random.Random(1), idle_poll=86400
    )
    store.add_commit_listener(outbox.wake)
    MemoryChannel.sent.clear()
    return store, outbox, admin


async def _publish(store: SQLiteStore, admin: Any, title: str, priority: int = 3) -> int:
    result = await store.publish(
        validate_events({"topic": "ops", "title": title, "priority": priority})[0], admin.id
    )
    return result.events[0]["id"]


def _run(fn: Any) -> Any:
    # A small autojump threshold: the store's work in its threads must not let the
    # virtual clock leap to the outbox's next deadline (07:00) mid-publish.
    return trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0.02))


def _when(record_time: float) -> str:
    return datetime.fromtimestamp(START + record_time, UTC).strftime("%H:%M")


def test_quiet_hours_hold_all_but_urgent_and_release_one_digest(tmp_path: Path) -> None:
    async def scenario() -> list[tuple[list[int], str, str]]:
        store, outbox, admin = await _world(
            tmp_path, {"quiet_hours": {"start": "22:00", "end": "07:00"}}
        )
        seen: list[tuple[list[int], str, str]] = []
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(outbox.run)
                before = await _publish(store, admin, "before quiet")  # 21:59
                while len(MemoryChannel.sent) < 1:
                    await trio.sleep(1)
                await trio.sleep(90)  # 22:00:30
                held1 = await _publish(store, admin, "held one")
                urgent = await _publish(store, admin, "urgent one", priority=5)
                await trio.sleep(3600)  # 23:00
                held2 = await _publish(store, admin, "held two")
                while len(MemoryChannel.sent) < 3:
                    await trio.sleep(1800)
                nursery.cancel_scope.cancel()
            for record in MemoryChannel.sent:
                seen.append((record["event_ids"], record["title"], _when(record["at"])))
            assert [s[0] for s in seen] == [[before], [urgent], [held1, held2]]
            return seen
        finally:
            await store.close()

    original = MemoryChannel.send

    async def stamped(self: MemoryChannel, delivery: Any) -> None:
        await original(self, delivery)
        MemoryChannel.sent[-1]["at"] = trio.current_time()

    MemoryChannel.send = stamped  # type: ignore[method-assign]
    try:
        seen = _run(scenario)
    finally:
        MemoryChannel.send = original  # type: ignore[method-assign]
    assert seen[0][2] == "21:59" and seen[1][2] == "22:00"
    assert seen[2][1] == "2 new in general" and seen[2][2] == "07:00"


def test_digest_window_and_rate_limit(tmp_path: Path) -> None:
    async def scenario() -> list[dict]:
        store, outbox, admin = await _world(tmp_path, {"digests": {"m": 600}})
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(outbox.run)
                for n in range(3):
                    await _publish(store, admin, f"build {n}")
                    await trio.sleep(10)
                while not MemoryChannel.sent:
                    await trio.sleep(30)
                nursery.cancel_scope.cancel()
            return list(MemoryChannel.sent)
        finally:
            await store.close()

    (digest,) = _run(scenario)
    assert len(digest["event_ids"]) == 3 and digest["title"] == "3 new in general"
    assert digest["body"].count("• build") == 3

    async def limited() -> list[dict]:
        store, outbox, admin = await _world(tmp_path / "r", {"rate_limit_per_minute": 2})
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(outbox.run)
                for n in range(5):
                    await _publish(store, admin, f"spam {n}")
                while sum(len(r["event_ids"]) for r in MemoryChannel.sent) < 5:
                    await trio.sleep(5)
                nursery.cancel_scope.cancel()
            return list(MemoryChannel.sent)
        finally:
            await store.close()

    (tmp_path / "r").mkdir()
    records = _run(limited)
    sizes = sorted(len(r["event_ids"]) for r in records)
    assert sizes == [1, 1, 3], (
        records
    )  # two at once, the rest held into one digest: nothing dropped
