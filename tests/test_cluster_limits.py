"""Guarantee 6 (issue 15), limits: sign-in throttling and the publish rate limit count
across the nodes of a cluster, so a guesser or a publisher gains nothing by spreading
requests over nodes.

The limit role's contract (:class:`notifyd.core.store.LimitStore`) runs on both
engines, on real stores: SQLite keeps the limits in the process's memory,
PostgreSQL in the database. Then, end to end, real daemons (nodes) on one real
PostgreSQL: failed sign-ins spread over two nodes hit the per-user limit in total,
a success on one node clears what the other counted, and one token's publish burst
is one bucket for both nodes.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from conftest import Daemon
from pg import connect

from notifyd.core.config import Config
from notifyd.core.storage import open_store
from notifyd.core.store import Store
from notifyd.core.throttle import PER_USER

OpenStore = Callable[[], Any]


@pytest.fixture(params=["sqlite", "postgresql"])
def limit_engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def new_store(
    limit_engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Callable[[], Any]:
    """``async with new_store() as store``: a started store (each call on PostgreSQL
    another node of the same database)."""
    if limit_engine == "postgresql":
        url = request.getfixturevalue("pg_database")
        config = Config(data_dir=str(tmp_path), database_url=url)
    else:
        config = Config(data_dir=str(tmp_path), database_url=f"sqlite://{tmp_path}/limits.db")

    @asynccontextmanager
    async def open_() -> AsyncIterator[Store]:
        store = open_store(config)
        assert store.engine == limit_engine
        await store.start()
        try:
            yield store
        finally:
            await store.close()

    return open_


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll ``check`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await trio.sleep(0.01)


# -- the store contract -----------------------------------------------------------------

SLOW = 0.001  # one unit per 1000 s: nothing refills while a test runs


@pytest.mark.trio
async def test_a_refused_charge_takes_nothing_and_says_how_long(new_store: OpenStore) -> None:
    async with new_store() as store:
        assert await store.charge_rate("k", 3, SLOW, 5) == 0.0
        # 2 left, 3 wanted: one unit short, 1000 s at this rate
        wait = await store.charge_rate("k", 3, SLOW, 5)
        assert 990 < wait <= 1000
        # the refusal took nothing: the 2 left still pass, then nothing does
        assert await store.charge_rate("k", 2, SLOW, 5) == 0.0
        assert 990 < await store.charge_rate("k", 1, SLOW, 5) <= 1000
        # keys are independent: a new key's bucket is full
        assert await store.charge_rate("other", 5, SLOW, 5) == 0.0
        with pytest.raises(ValueError):
            await store.charge_rate("k", 6, SLOW, 5)


@pytest.mark.trio
async def test_a_bucket_refills_at_its_rate(new_store: OpenStore) -> None:
    async with new_store() as store:
        assert await store.charge_rate("fast", 2, 50.0, 2) == 0.0
        wait = await store.charge_rate("fast", 2, 50.0, 2)
        assert 0 < wait <= 2 / 50.0
        await eventually(lambda: _charged(store, "fast", 2, 50.0, 2))


async def _charged(store: Store, key: str, cost: int, rate: float, burst: int) -> bool:
    return await store.charge_rate(key, cost, rate, burst) == 0.0


@pytest.mark.trio
async def test_concurrent_charges_take_exactly_the_burst(new_store: OpenStore) -> None:
    async with new_store() as first, new_store() as second:
        stores = [first, second] if first.engine == "postgresql" else [first]
        passed: list[bool] = []

        async def charge(store: Store) -> None:
            passed.append(await store.charge_rate("shared", 1, SLOW, 10) == 0.0)

        async with trio.open_nursery() as nursery:
            for i in range(30):
                nursery.start_soon(charge, stores[i % len(stores)])
        assert len(passed) == 30 and passed.count(True) == 10


@pytest.mark.trio
async def test_failures_count_per_key_up_to_each_limit(new_store: OpenStore) -> None:
    async with new_store() as store:
        limits = {"user": 3, "address": 2}
        assert await store.recent_failures(limits, 600) == {}
        await store.record_failure(limits, 600)
        assert await store.recent_failures(limits, 600) == {"user": 0.0, "address": 0.0}
        await store.record_failure(limits, 600)
        found = await store.recent_failures({**limits, "elsewhere": 1}, 600)
        assert set(found) == {"user", "address"}
        assert found["user"] == 0.0  # 2 of 3
        assert 590 < found["address"] <= 600  # 2 of 2: until the older ages out
        # a key's limit is the caller's: the same failures block a stricter one
        assert 590 < (await store.recent_failures({"user": 2}, 600))["user"] <= 600
        await store.clear_failures(["address"])
        assert await store.recent_failures(limits, 600) == {"user": 0.0}


@pytest.mark.trio
async def test_failures_age_out_of_their_window(new_store: OpenStore) -> None:
    async with new_store() as store:
        await store.record_failure({"brief": 1}, 0.2)
        assert 0 < (await store.recent_failures({"brief": 1}, 0.2))["brief"] <= 0.2

        async def forgotten() -> bool:
            return await store.recent_failures({"brief": 1}, 0.2) == {}

        await eventually(forgotten)


@pytest.mark.trio
async def test_postgresql_keeps_only_failures_inside_the_window(
    pg_database: str, tmp_path: Path
) -> None:
    store = open_store(Config(data_dir=str(tmp_path), database_url=pg_database))
    await store.start()
    try:
        for _ in range(3):
            await store.record_failure({"key": 5}, 0.05)
        with connect(pg_database) as conn:
            deadline = time.monotonic() + 10
            while conn.execute("SELECT count(*) FROM failures WHERE key = 'key' AND "
                               "at > extract(epoch FROM clock_timestamp()) - 0.05"
                               ).fetchone() != (0,):  # fmt: skip
                assert time.monotonic() < deadline
                await trio.sleep(0.01)
            # the next failure of the key deletes those that left the window
            await store.record_failure({"key": 5}, 0.05)
            row = conn.execute("SELECT count(*) FROM failures WHERE key = 'key'").fetchone()
            assert row == (1,)
    finally:
        await store.close()


@pytest.mark.trio
async def test_postgresql_sweeps_buckets_that_are_full_again(
    pg_database: str, tmp_path: Path
) -> None:
    config = Config(data_dir=str(tmp_path), database_url=pg_database)
    first = open_store(config)
    await first.start()
    try:
        assert await first.charge_rate("idle", 1, 1000.0, 5) == 0.0  # full again in 1 ms
        assert await first.charge_rate("busy", 1, SLOW, 5) == 0.0  # full again in 1000 s
    finally:
        await first.close()
    with connect(pg_database) as conn:
        deadline = time.monotonic() + 10
        while conn.execute("SELECT count(*) FROM rate_limits WHERE key = 'idle' AND "
                           "tat >= extract(epoch FROM clock_timestamp())").fetchone() != (0,):  # fmt: skip
            assert time.monotonic() < deadline
            await trio.sleep(0.01)
        # a node sweeps with its first charge, then about once a minute
        second = open_store(config)
        await second.start()
        try:
            assert await second.charge_rate("other", 1, SLOW, 5) == 0.0
        finally:
            await second.close()
        keys = {row[0] for row in conn.execute("SELECT key FROM rate_limits")}
        assert keys == {"busy", "other"}


# -- end to end: two nodes on one PostgreSQL --------------------------------------------

PASSWORD = "correct horse battery"


def two_nodes(make_pg_node: Callable[..., Daemon], **env: str) -> tuple[Daemon, Daemon]:
    a = make_pg_node(extra_env=env).start()
    b = make_pg_node(extra_env=env).start()
    return a, b


def with_password(node: Daemon, name: str) -> None:
    node.user(name)
    with node.admin() as c:
        r = c.put(f"/v1/users/{name}/password", json={"password": PASSWORD})
        assert r.status_code == 204, r.text


def sign_in(node: Daemon, name: str, password: str) -> httpx.Response:
    return httpx.post(
        f"{node.url}/v1/session", json={"username": name, "password": password}, timeout=10
    )


def test_failed_sign_ins_spread_over_nodes_count_once(
    make_pg_node: Callable[..., Daemon],
) -> None:
    a, b = two_nodes(make_pg_node)
    with_password(a, "carol")
    nodes = [a, b]
    for i in range(PER_USER):  # alternating: each node sees fewer than the limit
        r = sign_in(nodes[i % 2], "carol", "wrong guess")
        assert r.status_code == 401, r.text
    for node in nodes:
        # used up on both nodes, even with the right password
        r = sign_in(node, "carol", PASSWORD)
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(r.headers["retry-after"]) <= 900
    # Basic auth on a compatibility door counts the same failures
    r = httpx.get(f"{b.url}/current/user", auth=("carol", PASSWORD), timeout=10)
    assert r.status_code == 429, r.text
    # another user from the same address is not held up by carol's limit
    with_password(b, "dan")
    assert sign_in(a, "dan", PASSWORD).status_code == 200


def test_a_success_on_one_node_clears_failures_counted_on_another(
    make_pg_node: Callable[..., Daemon],
) -> None:
    a, b = two_nodes(make_pg_node)
    with_password(a, "erin")
    for _ in range(PER_USER - 1):
        assert sign_in(b, "erin", "wrong guess").status_code == 401
    assert sign_in(a, "erin", PASSWORD).status_code == 200
    # cleared: as many failures again, and the right password still passes
    for node in (a, b, a, b)[: PER_USER - 1]:
        assert sign_in(node, "erin", "wrong guess").status_code == 401
    assert sign_in(b, "erin", PASSWORD).status_code == 200


def test_a_phone_app_with_the_right_password_neither_waits_for_nor_clears_the_throttle(
    daemon: Daemon,
) -> None:
    """A Basic-auth success that is remembered (a phone app polling with the right
    password) skips the throttle: it keeps working while guessers have locked the
    name out, and it does not wipe the failures they piled up meanwhile."""
    with_password(daemon, "fay")
    app = ("fay", PASSWORD)
    assert httpx.get(f"{daemon.url}/current/user", auth=app, timeout=10).status_code == 200
    for _ in range(PER_USER - 1):
        r = httpx.get(f"{daemon.url}/current/user", auth=("fay", "guess"), timeout=10)
        assert r.status_code == 401, r.text
    # the app's next poll, remembered: passes and leaves the count as it is
    assert httpx.get(f"{daemon.url}/current/user", auth=app, timeout=10).status_code == 200
    r = httpx.get(f"{daemon.url}/current/user", auth=("fay", "guess"), timeout=10)
    assert r.status_code == 401, r.text  # the fifth failure
    r = httpx.get(f"{daemon.url}/current/user", auth=("fay", "another guess"), timeout=10)
    assert r.status_code == 429, r.text  # locked for guessers
    assert httpx.get(f"{daemon.url}/current/user", auth=app, timeout=10).status_code == 200
    assert sign_in(daemon, "fay", PASSWORD).status_code == 429  # not remembered: throttled


def publish(node: Daemon, token: str, n: int, topic: str) -> httpx.Response:
    events = [{"topic": topic, "title": f"e{i}"} for i in range(n)]
    with node.http(token) as c:
        return c.post("/v1/events", json=events)


def stored(node: Daemon, topic: str) -> int:
    with node.admin() as c:
        r = c.get("/v1/events", params={"topic": topic, "limit": 500})
        assert r.status_code == 200, r.text
        return len(r.json()["events"])


def test_a_tokens_publish_burst_is_one_bucket_for_every_node(
    make_pg_node: Callable[..., Daemon],
) -> None:
    # 0.01 events/s: nothing refills while the test runs (one event takes 100 s)
    a, b = two_nodes(make_pg_node, NOTIFYD_PUBLISH_RATE="0.01", NOTIFYD_PUBLISH_BURST="5")
    token = a.user("pub", grants={"shared": "rw"})
    assert publish(a, token, 3, "shared").status_code == 201
    assert publish(b, token, 2, "shared").status_code == 201
    for node in (b, a):
        r = publish(node, token, 1, "shared")
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "rate_limited"
        # one event short at 0.01 events/s: about 100 s
        assert 90 <= int(r.headers["retry-after"]) <= 100
    # ntfy's door charges the same bucket
    r = httpx.post(f"{b.url}/shared", content="x", headers={"Authorization": f"Bearer {token}"},
                   timeout=10)  # fmt: skip
    assert r.status_code == 429, r.text
    assert stored(a, "shared") == 5
    # another token has a bucket of its own; the socket is not limited
    other = b.user("pub", grants={"shared": "rw"})
    assert publish(a, other, 5, "shared").status_code == 201
    with b.admin() as c:
        assert c.post("/v1/events", json={"topic": "shared", "title": "op"}).status_code == 201
    assert stored(b, "shared") == 11
