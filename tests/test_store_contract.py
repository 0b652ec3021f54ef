"""Store conformance suite: the guarantees of :class:`notifyd.core.store.Store`.

These tests use only the public interface (the roles of ``notifyd/core/store.py``
and their types), so that every engine must pass them unchanged. They run once
per engine in ``ENGINES``. SQLite is opened through the factory
(:func:`notifyd.core.storage.open_store`); PostgreSQL, whose engine does not have
every role yet (issue 15), is opened directly on a fresh database of the test
server (the ``pg_database`` fixture) until the factory opens it. A test that
needs a role an engine does not implement yet is marked with the roles it needs
(``@needs("outbox")``) and expected to fail on that engine, strictly: it shows as
xfail, and turns into a failure the moment the role exists (remove the engine's
entry from ``UNIMPLEMENTED`` then). The ``clock`` given to a store is the time
that stamps ``created_at`` and new outbox rows.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
import trio

from notifyd.core.acl import Grant, Visibility
from notifyd.core.config import Config
from notifyd.core.errors import Conflict, NotFound
from notifyd.core.models import EventIn
from notifyd.core.postgres.store import PostgresStore
from notifyd.core.storage import open_store as open_engine_store
from notifyd.core.store import DueDelivery, Event, HistoryQuery, Hook, Outcome, Store
from notifyd.core.timeutil import format_ts, parse_rfc3339

ENGINES = ["sqlite", "postgresql"]
#: the roles (of notifyd/core/store.py) each engine does not implement yet
UNIMPLEMENTED: dict[str, set[str]] = {}

EVERYTHING = Visibility(everything=True)
DAY = 86400.0
#: a fixed point in the past (2023-11-14), so that no event is "in the future"
T0 = 1_700_000_000.0
FAR_FUTURE = "9999-12-31T23:59:59.999Z"

Clock = Callable[[], float]
OpenStore = Callable[..., AbstractAsyncContextManager[Store]]
F = TypeVar("F", bound=Callable[..., Any])


def needs(*roles: str) -> Callable[[F], F]:
    """Mark a test as needing ``roles`` besides the event, inbox and account roles
    (``outbox``, ``operations``)."""

    def mark(test: F) -> F:
        test.store_roles = roles  # type: ignore[attr-defined]
        return test

    return mark


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each test on every engine; strictly expected to fail on an engine that
    lacks a role the test needs."""
    if "engine" not in metafunc.fixturenames:
        return
    wanted = set(getattr(metafunc.function, "store_roles", ()))
    params = []
    for name in ENGINES:
        missing = sorted(wanted & UNIMPLEMENTED.get(name, set()))
        marks = [
            pytest.mark.xfail(
                strict=True,
                reason=f"PostgreSQL engine: {role} role not implemented yet (issue 15)",
            )
            for role in missing
        ]
        params.append(pytest.param(name, marks=marks, id=name))
    metafunc.parametrize("engine", params)


def _config(engine: str, tmp_path: Path) -> Config:
    if engine == "sqlite":
        return Config(data_dir=str(tmp_path), database_url=f"sqlite://{tmp_path}/contract.db")
    raise AssertionError(f"no store for engine {engine!r}")


def _new_store(engine: str, tmp_path: Path, clock: Clock, request: pytest.FixtureRequest) -> Store:
    if engine == "postgresql":
        # not through the factory yet: it refuses postgresql:// until every role exists
        url: str = request.getfixturevalue("pg_database")
        store = cast(Store, PostgresStore(url, clock=clock))
    else:
        store = open_engine_store(_config(engine, tmp_path), clock=clock)
    assert store.engine == engine
    return store


@pytest.fixture
def open_store(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> OpenStore:
    """``async with open_store(clock=...) as store``: a started store on an empty
    database, closed on exit."""

    @asynccontextmanager
    async def open_(clock: Clock = time.time) -> AsyncIterator[Store]:
        store = _new_store(engine, tmp_path, clock, request)
        await store.start()
        try:
            yield store
        finally:
            await store.close()

    return open_


def ev(topic: str = "t", title: str = "", **fields: Any) -> EventIn:
    return EventIn(topic=topic, title=title, **fields)


def ids(events: list[Event]) -> list[int]:
    return [e["id"] for e in events]


def query(user_id: int, visibility: Visibility = EVERYTHING, **kw: Any) -> HistoryQuery:
    return HistoryQuery(user_id=user_id, visibility=visibility, **kw)


async def replay_all(store: Store, cursor: int, visibility: Visibility = EVERYTHING) -> list[Event]:
    """Every event after ``cursor`` up to the newest id, in pages, as a stream does."""
    upto = await store.last_event_id()
    out: list[Event] = []
    while True:
        page = await store.events_after(cursor, upto, visibility, None, 7)
        out += page
        if len(page) < 7:
            return out
        cursor = page[-1]["id"]


async def full_history(store: Store, user_id: int, **kw: Any) -> list[Event]:
    return await store.history(query(user_id, limit=10_000, **kw))


# -- 1. ids, commit order, cursors ---------------------------------------------------


@pytest.mark.trio
async def test_concurrent_publishes_get_unique_ids_in_commit_order(open_store: OpenStore) -> None:
    async with open_store(clock=lambda: T0) as store:
        user = await store.create_user("pub", "admin", None)
        committed: list[int] = []
        store.add_commit_listener(lambda events: committed.extend(ids(events)))
        got: dict[tuple[int, int], list[Event]] = {}

        async def publisher(task: int) -> None:
            for n in range(4):
                if n == 2:  # one batch of three per task
                    events = [ev(f"p{task}", f"{task}.{n}.{k}") for k in range(3)]
                    result = await store.publish(events, user.id, batch=True)
                else:
                    result = await store.publish([ev(f"p{task}", f"{task}.{n}")], user.id)
                assert not result.replayed
                assert result.new_events == result.events
                got[task, n] = result.events

        async with trio.open_nursery() as nursery:
            for task in range(40):
                nursery.start_soon(publisher, task)

        assert len(got) == 160
        all_ids = sorted(i for events in got.values() for i in ids(events))
        assert len(all_ids) == 40 * 6
        assert len(set(all_ids)) == len(all_ids)  # no id given twice
        # a batch gets consecutive ids, in the order of its events
        for task in range(40):
            batch = got[task, 2]
            assert [e["title"] for e in batch] == [f"{task}.2.{k}" for k in range(3)]
            assert ids(batch) == list(range(batch[0]["id"], batch[0]["id"] + 3))
            # a task's later publish commits after its earlier one: a higher id
            firsts = [got[task, n][0]["id"] for n in range(4)]
            assert firsts == sorted(firsts)
        # commit listeners see every event once, in strictly increasing id order
        assert committed == all_ids
        assert await store.last_event_id() == all_ids[-1]
        # replay from the start yields every event exactly once, in order
        replayed = await replay_all(store, 0)
        assert ids(replayed) == all_ids
        by_id = {e["id"]: e for events in got.values() for e in events}
        assert [(e["topic"], e["title"]) for e in replayed] == [
            (by_id[i]["topic"], by_id[i]["title"]) for i in all_ids
        ]


@pytest.mark.trio
async def test_a_follower_reading_during_publishes_misses_nothing(open_store: OpenStore) -> None:
    async with open_store() as store:
        user = await store.create_user("pub", "admin", None)
        published: list[int] = []
        done = trio.Event()
        seen: list[int] = []

        async def publisher(task: int) -> None:
            for n in range(5):
                result = await store.publish([ev("f", f"{task}.{n}")], user.id)
                published.extend(ids(result.events))

        async def publishers() -> None:
            async with trio.open_nursery() as nursery:
                for task in range(30):
                    nursery.start_soon(publisher, task)
            done.set()

        async def follower() -> None:
            # the stream's loop: read up to the newest id, move the cursor, repeat
            cursor = 0
            while True:
                finished = done.is_set()  # before reading: all is committed then
                upto = await store.last_event_id()
                page = await store.events_after(cursor, upto, EVERYTHING, None, 1000)
                seen.extend(ids(page))
                if page:
                    cursor = page[-1]["id"]
                if finished and len(page) < 1000:
                    return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(follower)
            nursery.start_soon(publishers)

        assert len(published) == 150
        assert seen == sorted(published)


@pytest.mark.trio
async def test_since_returns_every_later_event_once_in_order(open_store: OpenStore) -> None:
    async with open_store() as store:
        user = await store.create_user("u", "admin", None)
        first = await store.publish([ev("a", f"e{n}") for n in range(10)], user.id, batch=True)
        all_ids = ids(first.events)
        mark = all_ids[3]
        later = all_ids[4:]
        # replay (oldest first)
        assert ids(await replay_all(store, mark)) == later
        assert ids(await store.events_after(mark, all_ids[6], EVERYTHING, None, 100)) == [
            all_ids[4],
            all_ids[5],
            all_ids[6],
        ]
        assert ids(await store.events_after(mark, all_ids[-1], EVERYTHING, ("b",), 100)) == []
        # history (newest first)
        assert ids(await full_history(store, user.id, since=mark)) == later[::-1]
        assert ids(await full_history(store, user.id, since=mark, before=all_ids[7])) == [
            all_ids[6],
            all_ids[5],
            all_ids[4],
        ]
        assert await store.count(query(user.id, since=mark)) == len(later)
        # pages of history with `before` cover everything once
        pages: list[int] = []
        before: int | None = None
        while True:
            page = ids(await store.history(query(user.id, before=before, limit=3)))
            pages += page
            if len(page) < 3:
                break
            before = page[-1]
        assert pages == all_ids[::-1]
        # the newest id is a cursor after which there is nothing
        assert await store.last_event_id() == all_ids[-1]
        assert await replay_all(store, all_ids[-1]) == []
        assert await full_history(store, user.id, since=all_ids[-1]) == []


# -- 2. idempotency keys ---------------------------------------------------------------


@pytest.mark.trio
async def test_a_retry_with_the_same_key_returns_the_original_and_stores_nothing(
    open_store: OpenStore,
) -> None:
    async with open_store() as store:
        alice = await store.create_user("alice", "admin", None)
        bob = await store.create_user("bob", "admin", None)
        committed: list[int] = []
        store.add_commit_listener(lambda events: committed.extend(ids(events)))

        original = await store.publish([ev("k", "first")], alice.id, idempotency_key="key-1")
        assert not original.replayed
        assert [e["title"] for e in original.events] == ["first"]
        top = await store.last_event_id()
        assert ids(original.events) == [top]

        # a retry, even with a different body, is answered with the stored event
        retry = await store.publish([ev("k", "second")], alice.id, idempotency_key="key-1")
        assert retry.replayed
        assert retry.new_events == []
        assert ids(retry.events) == ids(original.events)
        assert [e["title"] for e in retry.events] == ["first"]
        assert await store.last_event_id() == top
        assert committed == [top]
        assert [e["title"] for e in await full_history(store, alice.id)] == ["first"]

        # concurrent retries of one new key: one publish stores, the rest replay it
        results = []

        async def send(n: int) -> None:
            results.append(
                await store.publish([ev("k", f"burst {n}")], alice.id, idempotency_key="key-2")
            )

        async with trio.open_nursery() as nursery:
            for n in range(10):
                nursery.start_soon(send, n)
        assert sorted(r.replayed for r in results) == [False] + [True] * 9
        stored = [r for r in results if not r.replayed][0].events
        assert len(stored) == 1
        assert all(ids(r.events) == ids(stored) for r in results)
        assert stored[0]["id"] > top
        assert await store.last_event_id() == stored[0]["id"]
        assert committed == [top, stored[0]["id"]]

        # keys belong to the publisher: another user's same key is a new publish
        other = await store.publish([ev("k", "bob's")], bob.id, idempotency_key="key-1")
        assert not other.replayed
        assert ids(other.events) != ids(original.events)
        assert [e["title"] for e in await full_history(store, alice.id)] == [
            "bob's",
            stored[0]["title"],
            "first",
        ]

        # a batch replays as the whole batch
        batch = [ev("k", "b1"), ev("k", "b2")]
        b1 = await store.publish(batch, alice.id, idempotency_key="key-3", batch=True)
        b2 = await store.publish(batch, alice.id, idempotency_key="key-3", batch=True)
        assert not b1.replayed and b2.replayed
        assert ids(b2.events) == ids(b1.events)
        assert len(ids(b1.events)) == 2
        assert len(await full_history(store, alice.id)) == 5


# -- 3. ACL-filtered history -----------------------------------------------------------


TOPICS = ["alerts/db", "alerts/web", "billing", "private", "alerts"]


@pytest.mark.trio
async def test_history_and_replay_show_only_what_the_visibility_allows(
    open_store: OpenStore,
) -> None:
    async with open_store() as store:
        admin = await store.create_user("admin", "admin", None)
        user = await store.create_user("user", "user", None)
        result = await store.publish(
            [ev(topic, topic) for topic in TOPICS * 2], admin.id, batch=True
        )
        by_topic: dict[str, list[int]] = {}
        for e in result.events:
            by_topic.setdefault(e["topic"], []).append(e["id"])

        def expect(*topics: str) -> list[int]:
            return sorted((i for t in topics for i in by_topic[t]), reverse=True)

        cases = [
            (Visibility(everything=False, any_of=("alerts/*",)), ("alerts/db", "alerts/web")),
            (Visibility(everything=False, any_of=("billing", "alerts")), ("billing", "alerts")),
            (Visibility(everything=False, any_of=("*",)), tuple(TOPICS)),
            (Visibility(everything=True, also_matching="alerts*"), TOPICS[:2] + ["alerts"]),
            (
                Visibility(everything=False, any_of=("alerts/*", "billing"), also_matching="*db"),
                ("alerts/db",),
            ),
            (Visibility(everything=True), tuple(TOPICS)),
        ]
        for visibility, topics in cases:
            want = expect(*topics)
            got = await full_history(store, user.id, visibility=visibility)
            assert ids(got) == want, visibility
            assert all(visibility.allows(e["topic"]) for e in got)
            assert await store.count(query(user.id, visibility)) == len(want), visibility
            replayed = await replay_all(store, 0, visibility)
            assert ids(replayed) == want[::-1], visibility

        nothing = Visibility(everything=False)
        assert await full_history(store, user.id, visibility=nothing) == []
        assert await store.count(query(user.id, nothing)) == 0
        assert await replay_all(store, 0, nothing) == []

        # a topic filter cannot widen what the visibility allows
        alerts = Visibility(everything=False, any_of=("alerts/*",))
        assert ids(await full_history(store, user.id, visibility=alerts, topic="billing")) == []
        assert ids(
            await full_history(store, user.id, visibility=alerts, topic="alerts/web")
        ) == expect("alerts/web")

        # state changes only reach events the visibility allows
        changed = await store.set_state(user.id, ids(result.events), "read", alerts)
        assert sorted(changed) == sorted(
            (i, t) for t in ("alerts/db", "alerts/web") for i in by_topic[t]
        )
        everything = await full_history(store, user.id)
        assert [e["id"] for e in everything if e["read"]] == expect("alerts/db", "alerts/web")


# -- 4. read state ---------------------------------------------------------------------


@pytest.mark.trio
async def test_read_state_is_per_user(open_store: OpenStore) -> None:
    async with open_store() as store:
        alice = await store.create_user("alice", "user", None)
        bob = await store.create_user("bob", "user", None)
        result = await store.publish([ev("r", f"e{n}") for n in range(4)], alice.id, batch=True)
        e0, e1, e2, e3 = ids(result.events)

        def read_ids(events: list[Event]) -> list[int]:
            return [e["id"] for e in events if e["read"]]

        fresh = await full_history(store, alice.id)
        assert [(e["read"], e["seen"], e["archived"]) for e in fresh] == [(False, False, False)] * 4

        assert sorted(await store.set_state(alice.id, [e1, e3], "read", EVERYTHING)) == [
            (e1, "r"),
            (e3, "r"),
        ]
        assert read_ids(await full_history(store, alice.id)) == [e3, e1]
        assert read_ids(await full_history(store, bob.id)) == []
        alice_e1 = await store.get_event(e1, alice.id)
        bob_e1 = await store.get_event(e1, bob.id)
        assert alice_e1 is not None and bob_e1 is not None
        assert (alice_e1["read"], alice_e1["seen"]) == (True, True)
        assert (bob_e1["read"], bob_e1["seen"]) == (False, False)

        # unread filter and count
        assert ids(await full_history(store, alice.id, unread=True)) == [e2, e0]
        assert await store.count(query(alice.id, unread=True)) == 2
        assert await store.count(query(bob.id, unread=True)) == 4

        # unread again
        assert await store.set_state(alice.id, [e3], "unread", EVERYTHING) == [(e3, "r")]
        assert read_ids(await full_history(store, alice.id)) == [e1]
        assert ids(await full_history(store, alice.id, unread=True)) == [e3, e2, e0]

        # bob's changes do not touch alice's
        await store.set_state(bob.id, [e0, e1, e2, e3], "read", EVERYTHING)
        await store.set_state(bob.id, [e1], "unread", EVERYTHING)
        assert read_ids(await full_history(store, bob.id)) == [e3, e2, e0]
        assert read_ids(await full_history(store, alice.id)) == [e1]

        # unknown ids change nothing
        assert await store.set_state(alice.id, [e3 + 1000], "read", EVERYTHING) == []
        assert read_ids(await full_history(store, alice.id)) == [e1]

        # "read all" for alice marks hers, bob's stay as they are
        done = await store.read_all(query(alice.id))
        assert done["updated"] == 3
        assert read_ids(await full_history(store, alice.id)) == [e3, e2, e1, e0]
        assert read_ids(await full_history(store, bob.id)) == [e3, e2, e0]
        # events published after "read all" are unread
        late = await store.publish([ev("r", "late")], alice.id)
        (late_id,) = ids(late.events)
        assert ids(await full_history(store, alice.id, unread=True)) == [late_id]
        # and one marked unread after it is unread again
        await store.set_state(alice.id, [e0], "unread", EVERYTHING)
        assert ids(await full_history(store, alice.id, unread=True)) == [late_id, e0]


# -- 5. pruning ------------------------------------------------------------------------


@pytest.mark.trio
async def test_prune_deletes_the_oldest_events_before_the_cutoff_only(
    open_store: OpenStore,
) -> None:
    now = [T0]
    async with open_store(clock=lambda: now[0]) as store:
        user = await store.create_user("u", "admin", None)
        old = await store.publish([ev("p", f"old {n}") for n in range(3)], user.id, batch=True)
        now[0] += 10 * DAY
        mid = await store.publish([ev("p", "mid")], user.id)
        now[0] += 10 * DAY
        new = await store.publish([ev("p", "new")], user.id)
        old_ids, (mid_id,), (new_id,) = ids(old.events), ids(mid.events), ids(new.events)
        await store.set_state(user.id, [*old_ids, mid_id, new_id], "read", EVERYTHING)
        cutoff = mid.events[0]["created_at"]  # events created before it go
        assert all(e["created_at"] < cutoff for e in old.events)
        assert new.events[0]["created_at"] > cutoff

        # at most `limit` per call, oldest first
        assert await store.prune(cutoff, 2) == 2
        assert ids(await full_history(store, user.id)) == [new_id, mid_id, old_ids[2]]
        assert await store.get_event(old_ids[0], user.id) is None
        assert await store.prune(cutoff, 2) == 1
        assert ids(await full_history(store, user.id)) == [new_id, mid_id]
        assert await store.prune(cutoff, 2) == 0
        assert ids(await replay_all(store, 0)) == [mid_id, new_id]
        assert await store.count(query(user.id)) == 2
        kept = await store.get_event(mid_id, user.id)
        assert kept is not None and kept["read"] and kept["title"] == "mid"

        # pruning never lowers the cursor, and ids are not given again
        assert await store.last_event_id() == new_id
        assert await store.prune(FAR_FUTURE, 100) == 2
        assert await full_history(store, user.id) == []
        assert await store.last_event_id() == new_id
        again = await store.publish([ev("p", "after")], user.id)
        assert ids(again.events)[0] > new_id
        assert not (await full_history(store, user.id))[0]["read"]


# -- 6. outbox: claims and leases ------------------------------------------------------

#: the lease the outbox tests claim with, in seconds
LEASE = 30.0


async def _with_deliveries(store: Store, events: int, channels: int = 1) -> tuple[int, list[int]]:
    """An admin with ``channels`` channels and ``events`` events published: one outbox
    row per (event, channel), due now. Returns the admin's id and the rows' ids."""
    admin = await store.create_user("admin", "admin", None)
    for n in range(channels):
        await store.create_channel(admin.id, f"ch{n}", "memory", {})
    await store.publish([ev("o", f"e{n}") for n in range(events)], admin.id, batch=True)
    rows = await store.list_deliveries(None, None, 10_000)
    assert len(rows) == events * channels
    assert {r["state"] for r in rows} == {"pending"}
    return admin.id, sorted(r["id"] for r in rows)


def delivery_ids(batch: list[DueDelivery]) -> list[int]:
    return [i for d in batch for i in d.ids]


async def delivery(store: Store, delivery_id: int) -> dict[str, Any]:
    (row,) = [r for r in await store.list_deliveries(None, None, 10_000) if r["id"] == delivery_id]
    return row


def sent(d: DueDelivery, at: float) -> Outcome:
    return Outcome(d.ids, d.channel_id, at)


@needs("outbox")
@pytest.mark.trio
async def test_concurrent_claimers_never_get_the_same_delivery(open_store: OpenStore) -> None:
    async with open_store(clock=lambda: T0) as store:
        _, all_ids = await _with_deliveries(store, events=40, channels=2)
        got: dict[str, list[DueDelivery]] = {}

        async def claimer(owner: str) -> None:
            mine = got.setdefault(owner, [])
            for _ in range(80):  # far more rounds than needed: a broken store ends too
                batch = await store.claim_deliveries(T0, 3, owner, LEASE)
                if not batch:
                    return
                assert len(batch) <= 3
                mine += batch
                await trio.sleep(0)

        async with trio.open_nursery() as nursery:
            for n in range(6):
                nursery.start_soon(claimer, f"node-{n % 2}/{n}")

        claimed = [i for batch in got.values() for i in delivery_ids(batch)]
        assert sorted(claimed) == all_ids  # every row once, no row twice
        assert all(got.values()), "every claimer got some work"
        # what was handed out is complete: the channel and the event of each row
        for d in (d for batch in got.values() for d in batch):
            assert d.attempt == 1 and d.channel is not None and d.channel.id == d.channel_id
            assert [e["topic"] for e in d.events] == ["o"]
        # nothing is due until the leases end, then everything is, once
        assert await store.claim_deliveries(T0 + LEASE - 1, 100, "late/1", LEASE) == []
        assert await store.next_due() == pytest.approx(T0 + LEASE, abs=0.01)
        again = await store.claim_deliveries(T0 + LEASE + 1, 1000, "late/1", LEASE)
        assert sorted(delivery_ids(again)) == all_ids


@needs("outbox")
@pytest.mark.trio
async def test_an_expired_lease_is_claimable_again_and_its_old_owner_cannot_finish(
    open_store: OpenStore,
) -> None:
    async with open_store(clock=lambda: T0) as store:
        _, (row,) = await _with_deliveries(store, events=1)
        assert await store.next_due() == pytest.approx(T0, abs=0.01)
        (a,) = await store.claim_deliveries(T0, 10, "node-a/1", LEASE)
        assert a.ids == [row] and a.attempt == 1
        # under A's lease nobody else gets it
        assert await store.claim_deliveries(T0 + LEASE - 0.5, 10, "node-b/1", LEASE) == []
        assert await store.next_due() == pytest.approx(T0 + LEASE, abs=0.01)
        # A's lease ran out (A is presumed dead): B takes it; A never reported, so
        # this is still the first attempt
        (b,) = await store.claim_deliveries(T0 + LEASE + 1, 10, "node-b/1", LEASE)
        assert b.ids == [row] and b.attempt == 1
        # A comes back late: its outcome is ignored, B's counts
        assert await store.finish_deliveries([sent(a, T0 + LEASE + 2)], "node-a/1") == 0
        assert (await delivery(store, row))["state"] == "pending"
        failed = Outcome(b.ids, b.channel_id, T0 + 40, error="boom", retry_at=T0 + 100)
        assert await store.finish_deliveries([failed], "node-b/1") == 1
        row_now = await delivery(store, row)
        assert (row_now["state"], row_now["attempts"], row_now["last_error"]) == (
            "pending",
            1,
            "boom",
        )
        # finishing releases the claim: the same owner cannot finish it twice
        assert await store.finish_deliveries([sent(b, T0 + 41)], "node-b/1") == 0
        assert (await delivery(store, row))["state"] == "pending"
        # due again at the retry time (not before), as attempt 2
        assert await store.next_due() == pytest.approx(T0 + 100, abs=0.01)
        assert await store.claim_deliveries(T0 + 99, 10, "node-a/2", LEASE) == []
        (c,) = await store.claim_deliveries(T0 + 100, 10, "node-a/2", LEASE)
        assert c.attempt == 2
        # an owner whose lease ended but whose rows nobody took still holds them
        assert await store.finish_deliveries([sent(c, T0 + 500)], "node-a/2") == 1
        done = await delivery(store, row)
        assert (done["state"], done["attempts"], done["last_error"]) == ("sent", 2, None)
        assert done["sent_at"] is not None
        assert await store.next_due() is None
        assert await store.claim_deliveries(T0 + 10_000, 10, "node-b/1", LEASE) == []


@needs("outbox")
@pytest.mark.trio
async def test_failures_retry_until_dead_and_a_retry_request_revives(open_store: OpenStore) -> None:
    async with open_store(clock=lambda: T0) as store:
        admin_id, rows = await _with_deliveries(store, events=2)
        batch = await store.claim_deliveries(T0, 10, "n/1", LEASE)
        assert sorted(delivery_ids(batch)) == rows
        # a permanent failure (no retry time) is dead at once; another is retried
        first, second = sorted(batch, key=lambda d: d.ids[0])
        outcomes = [
            Outcome(first.ids, first.channel_id, T0 + 1, error="permanent"),
            Outcome(second.ids, second.channel_id, T0 + 1, error="later", retry_at=T0 + 60),
        ]
        assert await store.finish_deliveries(outcomes, "n/1") == 2
        dead, retried = await delivery(store, rows[0]), await delivery(store, rows[1])
        assert (dead["state"], dead["attempts"], dead["last_error"]) == ("dead", 1, "permanent")
        assert (retried["state"], retried["attempts"]) == ("pending", 1)
        assert parse_rfc3339(retried["next_attempt_at"]) == pytest.approx(T0 + 60, abs=0.01)
        assert [r["id"] for r in await store.list_deliveries(admin_id, "dead", 10)] == [rows[0]]
        # a dead row is never claimed; the retried one only from its time on
        assert await store.claim_deliveries(T0 + 59, 10, "n/1", LEASE) == []
        (again,) = await store.claim_deliveries(T0 + 60, 10, "n/1", LEASE)
        assert again.ids == [rows[1]] and again.attempt == 2
        # asking to retry a row under a live lease leaves it with its owner
        await store.retry_delivery(rows[1], None, T0 + 61)
        assert await store.claim_deliveries(T0 + 61, 10, "other/1", LEASE) == []
        # asking to retry the dead row makes it due now, as its next attempt
        await store.retry_delivery(rows[0], admin_id, T0 + 61)
        (revived,) = await store.claim_deliveries(T0 + 61, 10, "other/1", LEASE)
        assert revived.ids == [rows[0]] and revived.attempt == 2
        with pytest.raises(NotFound):
            await store.retry_delivery(rows[-1] + 1000, None, T0 + 61)
        with pytest.raises(NotFound):
            await store.retry_delivery(rows[0], admin_id + 1000, T0 + 61)  # not theirs
        stats = await store.delivery_stats(None)
        assert sum((stats["by_channel"].get("memory") or {}).get(s) or 0
                   for s in ("pending", "sent", "dead")) == 2  # fmt: skip


@needs("outbox")
@pytest.mark.trio
async def test_a_removed_channel_or_pruned_event_ends_its_claimed_deliveries(
    open_store: OpenStore,
) -> None:
    async with open_store(clock=lambda: T0) as store:
        admin_id, rows = await _with_deliveries(store, events=2, channels=2)
        batch = await store.claim_deliveries(T0, 10, "n/1", LEASE)
        assert sorted(delivery_ids(batch)) == rows
        channel = await store.get_channel(admin_id, "ch0")
        assert channel is not None
        await store.delete_channel(channel.id)
        with pytest.raises(NotFound):
            await store.delete_channel(channel.id)
        gone = [d for d in batch if d.channel_id == channel.id]
        kept = [d for d in batch if d.channel_id != channel.id]
        assert len(gone) == len(kept) == 2
        # the removed channel's rows are dead; what their sender says changes nothing
        assert await store.finish_deliveries([sent(d, T0 + 1) for d in gone], "n/1") == 0
        assert {(await delivery(store, i))["state"] for d in gone for i in d.ids} == {"dead"}
        # a retry cannot revive a row of a removed channel
        with pytest.raises(NotFound):
            await store.retry_delivery(gone[0].ids[0], None, T0 + 2)
        # pruning the events takes their deliveries along, claimed or not
        assert await store.prune(FAR_FUTURE, 100) == 2
        assert await store.list_deliveries(None, None, 100) == []
        assert await store.finish_deliveries([sent(d, T0 + 3) for d in kept], "n/1") == 0
        assert await store.next_due() is None


@needs("outbox")
@pytest.mark.trio
async def test_a_node_that_starts_again_releases_the_claims_of_its_earlier_processes(
    open_store: OpenStore,
) -> None:
    async with open_store(clock=lambda: T0) as store:
        _, rows = await _with_deliveries(store, events=3)
        (a,) = await store.claim_deliveries(T0, 1, "node-a/old", 3600)
        (ab,) = await store.claim_deliveries(T0, 1, "node-ab/1", 3600)
        (b,) = await store.claim_deliveries(T0, 1, "node-b/1", 3600)
        assert sorted(a.ids + ab.ids + b.ids) == rows
        assert await store.release_claims("node-c") == 0
        assert await store.release_claims("node-a") == 1  # not node-ab's
        (again,) = await store.claim_deliveries(T0 + 1, 10, "node-a/new", 3600)
        assert again.ids == a.ids and again.attempt == 1
        # the old process's outcome no longer counts; the new one's does
        assert await store.finish_deliveries([sent(a, T0 + 2)], "node-a/old") == 0
        assert await store.finish_deliveries([sent(again, T0 + 2)], "node-a/new") == 1
        assert await store.claim_deliveries(T0 + 2, 10, "node-a/new", 3600) == []


# -- 7. accounts -----------------------------------------------------------------------


@pytest.mark.trio
async def test_users_tokens_by_hash_and_revocation(open_store: OpenStore) -> None:
    async with open_store() as store:
        alice = await store.create_user("alice", "user", "hash-a")
        bob = await store.create_user("bob", "admin", None)
        with pytest.raises(Conflict):
            await store.create_user("alice", "admin", None)
        assert [u.name for u in await store.list_users()] == ["alice", "bob"]
        found = await store.get_user("alice")
        assert found is not None and (found.id, found.role, found.has_password) == (
            alice.id, "user", True,
        )  # fmt: skip
        assert (await store.get_user_by_id(bob.id)) == bob and not bob.has_password
        assert await store.get_user("carol") is None
        assert await store.password_hash("alice") == (alice.id, "hash-a")
        assert await store.password_hash("bob") is None

        t1 = await store.create_token(alice.id, "sha-1", "nfy_ab", ("publish",), "alerts/*", "ci")
        t2 = await store.create_token(
            alice.id, "sha-2", "nfy_cd", ("subscribe", "account"), None, None
        )
        t3 = await store.create_token(bob.id, "sha-3", "nfy_ef", ("admin",), None, "ops")
        by_hash = await store.token_by_hash("sha-1")
        assert by_hash is not None
        assert (by_hash.id, by_hash.user_id, by_hash.user, by_hash.scopes, by_hash.topics) == (
            t1.id, alice.id, "alice", ("publish",), "alerts/*",
        )  # fmt: skip
        assert by_hash.last_used_at is None
        assert await store.token_by_hash("nfy_ab") is None  # found by hash only
        assert await store.token_by_hash("sha-404") is None
        assert sorted(t.id for t in await store.list_tokens(alice.id)) == sorted([t1.id, t2.id])
        assert sorted(t.id for t in await store.list_tokens()) == sorted([t1.id, t2.id, t3.id])
        await store.touch_tokens([(t2.id, T0)])
        touched = await store.token_by_hash("sha-2")
        assert touched is not None and touched.last_used_at == format_ts(T0)

        # a user can revoke only their own; an admin path (no user) any
        with pytest.raises(NotFound):
            await store.revoke_token(t3.id, alice.id)
        assert await store.token_by_hash("sha-3") is not None
        assert await store.revoke_token(t1.id, alice.id) == alice.id
        assert await store.revoke_token(t3.id) == bob.id
        assert await store.token_by_hash("sha-1") is None
        with pytest.raises(NotFound):
            await store.revoke_token(t1.id)
        assert [t.id for t in await store.list_tokens()] == [t2.id]


@pytest.mark.trio
async def test_sessions_expire_and_a_new_password_ends_the_others(open_store: OpenStore) -> None:
    async with open_store() as store:
        alice = await store.create_user("alice", "user", "old")
        await store.create_session(alice.id, "s-long", "firefox", T0 + 100)
        await store.create_session(alice.id, "s-short", None, T0 + 10)
        assert await store.session_user("s-long", T0) == alice.id
        assert await store.session_user("s-short", T0 + 9) == alice.id
        assert await store.session_user("s-short", T0 + 11) is None  # expired
        assert await store.session_user("s-unknown", T0) is None
        assert await store.prune_sessions(T0 + 11) == 1
        assert await store.prune_sessions(T0 + 11) == 0
        assert await store.session_user("s-long", T0 + 11) == alice.id
        await store.delete_session("s-long")
        assert await store.session_user("s-long", T0) is None

        await store.create_session(alice.id, "s-here", None, T0 + 100)
        await store.create_session(alice.id, "s-there", None, T0 + 100)
        await store.set_password("alice", "new", keep_session="s-here")
        assert await store.password_hash("alice") == (alice.id, "new")
        assert await store.session_user("s-here", T0) == alice.id
        assert await store.session_user("s-there", T0) is None
        await store.set_password("alice", "newer")
        assert await store.session_user("s-here", T0) is None
        with pytest.raises(NotFound):
            await store.set_password("nobody", "x")


@pytest.mark.trio
async def test_a_session_remembers_the_groups_of_its_sign_in(open_store: OpenStore) -> None:
    async with open_store() as store:
        alice = await store.create_user("alice", "user", None)
        await store.create_session(alice.id, "s-sso", None, T0 + 100, ("ops", "dev team"))
        await store.create_session(alice.id, "s-pw", None, T0 + 100)
        assert await store.session("s-sso", T0) == (alice.id, ("ops", "dev team"))
        assert await store.session("s-pw", T0) == (alice.id, ())
        assert await store.session_user("s-sso", T0) == alice.id
        assert await store.session("s-sso", T0 + 101) is None  # expired
        assert await store.session("s-unknown", T0) is None


@pytest.mark.trio
async def test_grants_and_removing_a_user(open_store: OpenStore) -> None:
    async with open_store() as store:
        admin = await store.create_user("admin", "admin", None)
        alice = await store.create_user("alice", "user", None)
        entry = await store.grant("alice", "alerts/*", True, False)
        assert (entry.user, entry.pattern, entry.read, entry.write) == (
            "alice",
            "alerts/*",
            True,
            False,
        )
        await store.grant("alice", "billing", True, True)
        changed = await store.grant("alice", "alerts/*", True, True)  # a change, not a second grant
        assert changed.id == entry.id and changed.write
        assert await store.grants(alice.id) == (
            Grant("alerts/*", True, True),
            Grant("billing", True, True),
        )
        assert [a.pattern for a in await store.list_acl("alice")] == ["alerts/*", "billing"]
        assert await store.list_acl("admin") == []
        with pytest.raises(NotFound):
            await store.grant("nobody", "x", True, False)
        await store.revoke_acl("alice", "billing")
        with pytest.raises(NotFound):
            await store.revoke_acl("alice", "billing")
        assert await store.grants(alice.id) == (Grant("alerts/*", True, True),)

        await store.set_preferences(alice.id, {"rules": [], "mute": ["noise"]})
        assert await store.get_preferences(alice.id) == {"rules": [], "mute": ["noise"]}
        assert await store.get_preferences(admin.id) is None

        # removing a user takes everything of theirs; their events stay
        await store.create_token(alice.id, "sha-a", "nfy_a", ("publish",), None, None)
        await store.create_session(alice.id, "s-a", None, T0 + DAY)
        published = await store.publish([ev("alerts/x", "by alice")], alice.id)
        await store.delete_user("alice")
        assert await store.get_user("alice") is None
        assert await store.token_by_hash("sha-a") is None
        assert await store.session_user("s-a", T0) is None
        assert await store.list_acl() == []
        assert await store.get_preferences(alice.id) is None
        kept = await store.get_event(ids(published.events)[0], admin.id)
        assert kept is not None and kept["title"] == "by alice"
        with pytest.raises(NotFound):
            await store.delete_user("alice")
        with pytest.raises(Conflict):
            await store.delete_user("admin")  # the last admin
        assert await store.get_user("admin") is not None


@pytest.mark.trio
async def test_admins_removing_each_other_at_once_leave_one(open_store: OpenStore) -> None:
    async with open_store() as store:
        for name in ("a", "b"):
            await store.create_user(name, "admin", None)
        refused: list[str] = []

        async def remove(name: str) -> None:
            try:
                await store.delete_user(name)
            except Conflict:
                refused.append(name)

        async with trio.open_nursery() as nursery:
            for name in ("a", "b"):
                nursery.start_soon(remove, name)
        assert len(refused) == 1
        assert [u.name for u in await store.list_users()] == refused


@needs("outbox")
@pytest.mark.trio
async def test_removing_a_user_takes_their_channels_and_deliveries(open_store: OpenStore) -> None:
    async with open_store(clock=lambda: T0) as store:
        admin = await store.create_user("admin", "admin", None)
        alice = await store.create_user("alice", "user", None)
        await store.grant("alice", "x", True, False)
        await store.create_channel(alice.id, "phone", "memory", {})
        await store.create_channel(admin.id, "desk", "memory", {})
        await store.publish([ev("x", "one")], admin.id)
        assert len(await store.list_deliveries(alice.id, None, 100)) == 1
        assert len(await store.list_deliveries(admin.id, None, 100)) == 1
        await store.delete_user("alice")
        assert [c.name for c in await store.list_channels()] == ["desk"]
        assert await store.list_deliveries(alice.id, None, 100) == []
        assert len(await store.list_deliveries(None, None, 100)) == 1  # the admin's


# -- 8. inbox: archive state, counts, filtered "read all" -------------------------------


@pytest.mark.trio
async def test_archive_seen_click_and_counts(open_store: OpenStore) -> None:
    async with open_store() as store:
        alice = await store.create_user("alice", "user", None)
        bob = await store.create_user("bob", "user", None)
        result = await store.publish(
            [
                ev("a", "a1", priority=5, category="ops"),
                ev("a", "a2"),
                ev("b", "b1", priority=1),
                ev("b", "b2", category="ops"),
            ],
            alice.id,
            batch=True,
        )
        a1, a2, b1, b2 = ids(result.events)
        assert await store.set_state(alice.id, [a2, b1], "archive", EVERYTHING) == [
            (a2, "a"),
            (b1, "b"),
        ]
        assert ids(await full_history(store, alice.id)) == [b2, a1]  # archived left out
        assert ids(await full_history(store, alice.id, archived="only")) == [b1, a2]
        assert ids(await full_history(store, alice.id, archived="include")) == [b2, b1, a2, a1]
        assert ids(await full_history(store, bob.id)) == [b2, b1, a2, a1]  # per user
        assert await store.count(query(alice.id)) == 2
        assert await store.count(query(alice.id, archived="only")) == 2
        assert await store.count(query(alice.id, archived="include")) == 4
        assert await store.count(query(bob.id)) == 4
        assert await store.count(query(alice.id, archived="include", topic="b")) == 2
        assert await store.count(query(alice.id, archived="include", category="ops")) == 2
        assert await store.count(query(alice.id, archived="include", min_priority=4)) == 1
        got = await store.get_event(a2, alice.id)
        assert got is not None and got["archived"] and not got["read"]
        await store.set_state(alice.id, [a2], "unarchive", EVERYTHING)
        assert ids(await full_history(store, alice.id)) == [b2, a2, a1]

        # seen is not read; a click is read and seen, with the action taken
        await store.set_state(alice.id, [a1], "seen", EVERYTHING)
        await store.set_state(alice.id, [b2], "click", EVERYTHING, action="open")
        seen, clicked = await store.get_event(a1, alice.id), await store.get_event(b2, alice.id)
        assert seen is not None and (seen["seen"], seen["read"]) == (True, False)
        assert clicked is not None and (clicked["read"], clicked["seen"]) == (True, True)
        assert clicked["action"] == "open" and clicked["clicked_at"] is not None
        assert await store.count(query(alice.id, unread=True)) == 2  # a1, a2

        # "read all" with a filter marks only what matches it
        done = await store.read_all(query(alice.id, topic="a"))
        assert done["updated"] == 2
        assert await store.count(query(alice.id, unread=True, archived="include")) == 1  # b1
        assert await store.count(query(bob.id, unread=True)) == 4
        nothing = await store.read_all(query(bob.id, Visibility(everything=False)))
        assert nothing["updated"] == 0
        assert await store.count(query(bob.id, unread=True)) == 4


# -- 9. scheduled events and time cursors ----------------------------------------------


@pytest.mark.trio
async def test_scheduled_events_are_released_in_time_order_with_new_ids(
    open_store: OpenStore,
) -> None:
    async with open_store(clock=lambda: T0) as store:
        user = await store.create_user("u", "admin", None)
        committed: list[str] = []
        store.add_commit_listener(lambda events: committed.extend(e["title"] for e in events))
        now_event = await store.publish([ev("s", "now")], user.id)
        top = await store.last_event_id()
        later = [("third", 30), ("first", 10), ("second", 20), ("cancelled", 15)]
        for title, offset in later:
            key = "k" if title == "cancelled" else None
            result = await store.publish(
                [ev("s", title, deliver_at=format_ts(T0 + offset), collapse_key=key)], user.id
            )
            assert result.events[0]["id"] is None and result.scheduled
            assert result.new_events == []
        # scheduled events are not events yet: no id, no history, the cursor stays
        assert await store.last_event_id() == top
        assert ids(await full_history(store, user.id)) == ids(now_event.events)
        assert await store.cancel_scheduled("s", "k") == 1
        assert await store.cancel_scheduled("s", "k") == 0
        assert await store.release_due(T0 + 5) == 0
        assert await store.release_due(T0 + 12) == 1
        assert await store.release_due(T0 + 100) == 2
        assert await store.release_due(T0 + 100) == 0
        released = (await full_history(store, user.id))[::-1]
        assert [e["title"] for e in released] == ["now", "first", "second", "third"]
        assert ids(released) == sorted(ids(released)) and ids(released)[1] > top
        assert committed == ["now", "first", "second", "third"]
        assert [e["title"] for e in await replay_all(store, top)] == ["first", "second", "third"]


@pytest.mark.trio
async def test_cursor_at_a_time_replays_from_that_time(open_store: OpenStore) -> None:
    now = [T0]
    async with open_store(clock=lambda: now[0]) as store:
        user = await store.create_user("u", "admin", None)
        assert await store.cursor_at(format_ts(T0)) == 0
        early = await store.publish([ev("c", "early")], user.id)
        now[0] += 60
        late = await store.publish([ev("c", "late 1"), ev("c", "late 2")], user.id, batch=True)
        cursor = await store.cursor_at(format_ts(T0 + 30))
        assert cursor == ids(early.events)[0]
        assert ids(await replay_all(store, cursor)) == ids(late.events)
        assert await store.cursor_at(format_ts(T0 + 3600)) == await store.last_event_id()
        assert ids(await replay_all(store, await store.cursor_at(format_ts(T0 - 1)))) == ids(
            early.events + late.events
        )


@needs("outbox")
@pytest.mark.trio
async def test_held_rows_sharing_a_digest_key_are_claimed_as_one(open_store: OpenStore) -> None:
    async with open_store(clock=lambda: T0) as store:
        admin = await store.create_user("admin", "admin", None)
        await store.create_channel(admin.id, "digest", "memory", {})
        await store.create_channel(admin.id, "direct", "memory", {})
        await store.set_preferences(admin.id, {"digests": {"digest": 600}})
        published = await store.publish([ev("d", f"e{n}") for n in range(3)], admin.id, batch=True)
        # the direct channel's rows are due now, one claim each; the digest's are held
        now = await store.claim_deliveries(T0, 10, "n/1", LEASE)
        direct = await store.get_channel(admin.id, "direct")
        assert direct is not None
        assert [d.channel_id for d in now] == [direct.id] * 3
        assert sorted(e["id"] for d in now for e in d.events) == ids(published.events)
        assert await store.finish_deliveries([sent(d, T0) for d in now], "n/1") == 3
        held_until = await store.next_due()
        assert held_until is not None and T0 < held_until <= T0 + 600
        assert await store.claim_deliveries(held_until - 1, 10, "n/1", LEASE) == []
        (digest,) = await store.claim_deliveries(held_until, 10, "n/1", LEASE)
        assert len(digest.ids) == 3 and digest.attempt == 1
        assert ids(digest.events) == ids(published.events)  # in event order
        assert await store.finish_deliveries([sent(digest, held_until)], "n/1") == 3


@pytest.mark.trio
async def test_hooks_are_kept_per_user_and_go_with_their_user(open_store: OpenStore) -> None:
    async with open_store() as store:
        await store.create_user("admin", "admin", None)
        alice = await store.create_user("alice", "user", None)
        hook = Hook(
            id="h1", user_id=alice.id, name="ci", topic="ci/builds", template="github",
            options={"priority": 4, "tags": ["ci"]}, secret="s3cret", created_at=format_ts(T0),
        )  # fmt: skip
        made = await store.create_hook(hook)
        assert made.user_name == "alice" and made.options == {"priority": 4, "tags": ["ci"]}
        assert made.secret == "s3cret" and made.last_used_at is None
        with pytest.raises(Conflict):
            await store.create_hook(Hook(**{**hook.__dict__, "id": "h2"}))
        await store.touch_hook("h1", format_ts(T0 + 5))
        await store.touch_hook("h1", format_ts(T0 + 1))  # an older use does not go back
        got = await store.get_hook("h1")
        assert got is not None and got.last_used_at == format_ts(T0 + 5)
        assert [h.id for h in await store.list_hooks(alice.id)] == ["h1"]
        assert [h.id for h in await store.list_hooks()] == ["h1"]
        assert await store.delete_hook("h1", user_id=alice.id + 100) == 0
        await store.delete_user("alice")
        assert await store.get_hook("h1") is None and await store.list_hooks() == []


# -- 10. PostgreSQL against SQLite: inbox state, step by step ------------------------


def _inbox_view(events: list[Event]) -> list[tuple[Any, ...]]:
    return [
        (e["id"], e["read"], e["seen"], e["archived"], e["clicked_at"] is not None, e["action"])
        for e in events
    ]


@pytest.mark.trio
async def test_postgresql_inbox_state_matches_sqlite_step_by_step(
    pg_database: str, tmp_path: Path
) -> None:
    """A seeded random run of state changes, "read all" (filtered or not, with
    narrower visibilities, archived events, mutes, explicit unread marks) and
    publishes, applied to both engines: every answer and every user's whole inbox
    must be the same after each step (the SQLite engine is the reference)."""
    import random

    rnd = random.Random(1515)
    sqlite = open_engine_store(_config("sqlite", tmp_path), clock=lambda: T0)
    pg = cast(Store, PostgresStore(pg_database, clock=lambda: T0))
    stores = (sqlite, pg)
    topics = ["a", "a/x", "b", "c/y"]
    visibilities = [
        EVERYTHING,
        Visibility(everything=False, any_of=("a*",)),
        Visibility(everything=True, also_matching="*y"),
        Visibility(everything=False, any_of=("b", "c/*")),
    ]
    for store in stores:
        await store.start()
    try:
        users = []
        for name in ("u1", "u2", "u3"):
            got = [await s.create_user(name, "admin", None) for s in stores]
            assert got[0].id == got[1].id
            users.append(got[0].id)
        mutes = {"rules": [{"topic": "c/*", "mute": True}]}
        for store in stores:
            await store.set_preferences(users[2], mutes)

        def batch() -> list[EventIn]:
            return [
                ev(rnd.choice(topics), "t", priority=rnd.randint(1, 5),
                   category=rnd.choice(["general", "ops"]))
                for _ in range(rnd.randint(1, 4))
            ]  # fmt: skip

        for step in range(120):
            user = rnd.choice(users)
            vis = rnd.choice(visibilities)
            last = await sqlite.last_event_id()
            kind = rnd.random()
            if kind < 0.15 or last == 0:
                events = batch()
                out = [ids((await s.publish(events, users[0], batch=True)).events) for s in stores]
            elif kind < 0.65:
                state = rnd.choice(["read", "unread", "seen", "archive", "unarchive", "click"])
                chosen = rnd.sample(range(1, last + 3), k=min(last + 2, rnd.randint(1, 5)))
                action = "go" if state == "click" else None
                out = [await s.set_state(user, chosen, state, vis, action) for s in stores]
            else:
                filters: dict[str, Any] = rnd.choice(
                    [{}, {}, {"topic": "a*"}, {"category": "ops"}, {"min_priority": 3},
                     {"archived": "include"}, {"archived": "only"}, {"since": last // 2}]
                )  # fmt: skip
                if rnd.random() < 0.5:  # the whole inbox: the watermark's path
                    vis, filters = EVERYTHING, {}
                q = query(user, vis, **filters)
                out = [await s.read_all(q) for s in stores]
            assert out[0] == out[1], (step, kind)
            for u in users:
                for archived in ("exclude", "only"):
                    views = [
                        _inbox_view(await full_history(s, u, archived=archived)) for s in stores
                    ]
                    assert views[0] == views[1], (step, u, archived)
                counts = [await s.count(query(u, unread=True, archived="include")) for s in stores]
                assert counts[0] == counts[1], (step, u)
    finally:
        for store in stores:
            await store.close()


# -- 11. PostgreSQL against SQLite: the outbox a publish writes, and its claims ------


def _claim_view(claims: list[DueDelivery]) -> list[tuple[Any, ...]]:
    return [(d.ids, d.attempt, d.channel_id, ids(d.events)) for d in claims]


@pytest.mark.trio
async def test_postgresql_outbox_matches_sqlite(pg_database: str, tmp_path: Path) -> None:
    """Seeded random publishes to users with grants, several channels each, and
    preferences (digests, quiet hours, channel rules, mutes, a rate limit), then
    claims and outcomes at later times, on both engines: the outbox rows, the
    stats and every claim must be the same (the SQLite engine is the reference)."""
    import random

    rnd = random.Random(1516)
    sqlite = open_engine_store(_config("sqlite", tmp_path), clock=lambda: T0)
    pg = cast(Store, PostgresStore(pg_database, clock=lambda: T0))
    stores = (sqlite, pg)
    for store in stores:
        await store.start()
    try:
        users: dict[str, int] = {}
        for name, role in (("root", "admin"), ("ann", "user"), ("bob", "user")):
            got = [await s.create_user(name, role, None) for s in stores]
            assert got[0].id == got[1].id
            users[name] = got[0].id
        channels = {"root": ["direct", "digest"], "ann": ["phone", "mail"], "bob": ["push"]}
        prefs: dict[str, dict[str, Any]] = {
            "root": {"digests": {"digest": 600}, "rules": [{"topic": "c/*", "mute": True}]},
            # T0 is 22:13 UTC: inside these quiet hours
            "ann": {
                "quiet_hours": {"start": "22:00", "end": "07:00"},
                "rules": [{"topic": "a/x", "channels": ["mail"]}],
            },
            "bob": {"rate_limit_per_minute": 3, "rules": [{"topic": "b", "min_priority": 4}]},
        }
        for store in stores:
            await store.grant("ann", "a*", True, False)
            await store.grant("bob", "b", True, False)
            await store.grant("bob", "c/*", True, False)
            for name, names in channels.items():
                for channel in names:
                    await store.create_channel(users[name], channel, "memory", {})
                await store.set_preferences(users[name], prefs[name])

        async def same_outbox() -> None:
            views = [await s.list_deliveries(None, None, 10_000) for s in stores]
            assert views[0] == views[1]
            for user_id in (None, *users.values()):
                stats = [await s.delivery_stats(user_id) for s in stores]
                assert stats[0] == stats[1]
            due = [await s.next_due() for s in stores]
            assert due[0] == due[1]

        for _ in range(15):
            events = [
                ev(rnd.choice(["a", "a/x", "b", "c/y", "d"]), "t", priority=rnd.randint(1, 5))
                for _ in range(rnd.randint(1, 4))
            ]
            out = [ids((await s.publish(events, users["root"], batch=True)).events) for s in stores]
            assert out[0] == out[1]
        await same_outbox()
        rows = await sqlite.list_deliveries(None, None, 10_000)
        assert {r["channel"] for r in rows} == {c for names in channels.values() for c in names}
        assert any(r["next_attempt_at"] > r["created_at"] for r in rows)  # held rows

        at = T0
        claimed: list[DueDelivery] = []
        for _ in range(8):
            at += rnd.choice([0.0, 60.0, 700.0, 9 * 3600.0])
            limit = rnd.randint(3, 40)
            claims = [await s.claim_deliveries(at, limit, "n/1", LEASE) for s in stores]
            assert _claim_view(claims[0]) == _claim_view(claims[1])
            claimed += claims[0]
            outcomes = [
                sent(d, at)
                if n % 3
                else Outcome(d.ids, d.channel_id, at, error="busy", retry_at=at + 30)
                for n, d in enumerate(claims[0])
            ]
            done = [await s.finish_deliveries(outcomes, "n/1") for s in stores]
            assert done[0] == done[1]
            await same_outbox()
        assert any(len(d.ids) > 1 for d in claimed)  # a digest
        assert any(d.attempt > 1 for d in claimed)  # a retry
    finally:
        for store in stores:
            await store.close()
