"""Store conformance suite: the guarantees of :class:`notifyd.core.store.Store`.

These tests use only the public interface (``Store``'s methods and the types of
``notifyd/core/store.py``), so that every engine must pass them unchanged. They run
once per value of the ``engine`` fixture; to add an engine (PostgreSQL), add its name
to ``ENGINES`` and a branch to ``_new_store`` that returns an unstarted store on a
fresh, empty database whose clock (the time that stamps ``created_at``) is the
``clock`` callable given.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from notifyd.core.acl import Visibility
from notifyd.core.models import EventIn
from notifyd.core.sqlite.store import SQLiteStore
from notifyd.core.store import Event, HistoryQuery, Store

ENGINES = ["sqlite"]

EVERYTHING = Visibility(everything=True)
DAY = 86400.0
#: a fixed point in the past (2023-11-14), so that no event is "in the future"
T0 = 1_700_000_000.0
FAR_FUTURE = "9999-12-31T23:59:59.999Z"

Clock = Callable[[], float]
OpenStore = Callable[..., AbstractAsyncContextManager[Store]]


def _new_store(engine: str, tmp_path: Path, clock: Clock) -> Store:
    if engine == "sqlite":
        return SQLiteStore(tmp_path / "contract.db", clock=clock)
    raise AssertionError(f"no store for engine {engine!r}")


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def open_store(engine: str, tmp_path: Path) -> OpenStore:
    """``async with open_store(clock=...) as store``: a started store on an empty
    database, closed on exit."""

    @asynccontextmanager
    async def open_(clock: Clock = time.time) -> AsyncIterator[Store]:
        store = _new_store(engine, tmp_path, clock)
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
