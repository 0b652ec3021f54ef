"""The TUI's live feed (tui/live.py) against a real daemon: TCP with a token, a
``resync`` from the daemon, a refused stream, a clean exit; and its back-off.

Like tests/test_tui_inbox.py, these are plain functions running ``asyncio.run`` with
Textual's ``run_test()``; waiting is on conditions with deadlines. The daemon
restart case (resume by Last-Event-ID, nothing lost or doubled) is in
test_tui_inbox.py, next to the inbox it checks.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from conftest import Daemon, wait_for
from test_tui_inbox import SIZE, api_get, indicator, publish, ready, run, table, until
from textual.pilot import Pilot
from textual.worker import WorkerState

from notifyd.tui.app import make_app
from notifyd.tui.live import BACKOFF_MAX, BACKOFF_MIN, Backoff, ConnectionStatus

# --- live events over TCP ----------------------------------------------------------


def test_live_events_arrive_over_tcp_with_a_token(daemon: Daemon) -> None:
    token = daemon.user("watcher", grants={"ops/*": "read"}, scopes=["subscribe"])
    old = daemon.publish("ops/db", title="before")
    app = make_app(url=daemon.url, token=token, browser=False)

    async def scenario(pilot: Pilot) -> None:
        assert table(app).ordered_ids() == [old["id"]]
        await publish(daemon, "secret", title="not for the watcher")
        new = await publish(daemon, "ops/web", title="live")
        await until(pilot, lambda: new["id"] in table(app).events, "the live event")
        assert table(app).ordered_ids() == [new["id"], old["id"]]
        assert app.connection.connects == 1  # no reconnection (no refresh) was needed

    run(app, scenario)


# --- resync ------------------------------------------------------------------------


def test_a_resync_reconnects_and_replays_what_was_dropped_once(
    make_daemon: Callable[..., Daemon],
) -> None:
    d = make_daemon(extra_env={"NOTIFYD_STREAM_QUEUE": "20"}).start()
    first = d.publish("burst", title="before")
    app = make_app(socket_path=str(d.socket), browser=False, page_size=100)
    received: list[int] = []
    statuses: list[ConnectionStatus] = []

    async def scenario(pilot: Pilot) -> None:
        app.live_frames.subscribe(
            app.screen,
            lambda f: received.append(f["event"]["id"]) if f["type"] == "event" else None,
        )
        app.screen.watch(app, "connection", lambda s: statuses.append(s), init=False)

        def burst() -> list[dict[str, Any]]:
            with d.admin() as c:
                r = c.post(
                    "/v1/events", json=[{"topic": "burst", "title": f"b{i}"} for i in range(30)]
                )
                assert r.status_code == 201, r.text
                return r.json()["events"]

        # 30 frames at once into a 20-frame queue: the daemon gives up on the stream
        events = await asyncio.to_thread(burst)
        ids = [e["id"] for e in events]
        await until(pilot, lambda: set(ids) <= set(table(app).events), "every event of the burst")
        await until(pilot, lambda: app.connection.state == "connected", "the reconnection")
        assert any("resync" in s.reason for s in statuses), statuses
        assert app.connection.connects == 2
        assert sorted(received) == ids  # each once, none lost
        assert table(app).ordered_ids() == [*reversed(ids), first["id"]]

    run(app, scenario)


# --- back-off across connections ------------------------------------------------------


@pytest.mark.parametrize("healthy_after", [0.0, 3600.0])
def test_the_backoff_starts_over_after_a_healthy_connection(
    daemon: Daemon, healthy_after: float
) -> None:
    """Two drops in a row: after a connection that counts as healthy the first delay
    is the minimum again; after one that does not, it keeps growing."""
    app = make_app(socket_path=str(daemon.socket), browser=False)
    app.live.healthy_after = healthy_after
    app.live.backoff = Backoff(rand=lambda: 0.0)  # no jitter: the delays are exact
    statuses: list[ConnectionStatus] = []

    async def scenario(pilot: Pilot) -> None:
        statuses.append(app.connection)  # connected
        app.screen.watch(app, "connection", lambda s: statuses.append(s), init=False)
        for connects in (2, 3):
            await asyncio.to_thread(daemon.restart)
            await until(
                pilot,
                lambda n=connects: (
                    app.connection.state == "connected" and app.connection.connects == n
                ),
                f"connection {connects}",
            )
        # the first delay after each drop (a connected state, then reconnecting)
        after_drop = [
            b.retry_in
            for a, b in zip(statuses, statuses[1:], strict=False)
            if a.state == "connected" and b.state == "reconnecting"
        ]
        assert len(after_drop) == 2, statuses
        assert after_drop[0] == BACKOFF_MIN
        if healthy_after == 0:
            assert after_drop[1] == BACKOFF_MIN
        else:
            assert after_drop[1] is not None and after_drop[1] > BACKOFF_MIN

    run(app, scenario)


# --- a refused stream ----------------------------------------------------------------


def test_a_refused_stream_is_shown_and_not_retried(daemon: Daemon) -> None:
    app = make_app(url=daemon.url, token="nfy_not-a-real-token", browser=False)

    async def main() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.connection.state == "failed", "the failed state")
            assert indicator(app).startswith("✕ disconnected")
            assert "token" in app.connection.reason
            worker = app.live_worker
            assert worker is not None
            await until(pilot, lambda: worker.is_finished, "the feed to give up")
            assert worker.state == WorkerState.SUCCESS
            assert app.live.backoff.attempts == 0  # no retry was scheduled

    asyncio.run(main())


# --- exit --------------------------------------------------------------------------


def test_exit_with_the_feed_connected_leaves_nothing_running(daemon: Daemon) -> None:
    daemon.publish("t", title="hello")
    app = make_app(socket_path=str(daemon.socket), browser=False)
    threads_before = set(threading.enumerate())

    def stream_clients() -> int:
        return int(api_get(daemon, "/healthz")["stream_clients"])

    async def main() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            assert await asyncio.to_thread(stream_clients) == 1
            await pilot.press("q")
        # run_test has returned: the app has exited, and the feed with it
        worker = app.live_worker
        assert worker is not None and worker.is_finished, worker
        assert worker.state == WorkerState.CANCELLED
        feed_tasks = [t for t in asyncio.all_tasks() if "LiveFeed.run" in repr(t.get_coro())]
        assert not feed_tasks, feed_tasks

    asyncio.run(main())
    # the connection is closed (the daemon no longer counts it) and no thread is left
    wait_for(lambda: stream_clients() == 0, message="the daemon to see the stream close")
    assert set(threading.enumerate()) <= threads_before, threading.enumerate()


def test_the_feed_uses_the_async_client_not_a_thread(daemon: Daemon) -> None:
    """While connected, the feed runs on the app's loop: no thread of its own."""
    app = make_app(socket_path=str(daemon.socket), browser=False)

    async def scenario(pilot: Pilot) -> None:
        worker = app.live_worker
        assert worker is not None and worker.state == WorkerState.RUNNING
        assert not worker._thread_worker
        names = [t.name for t in threading.enumerate()]
        assert not [n for n in names if "live" in n.lower()], names

    run(app, scenario)


# --- back-off ------------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap_with_jitter_and_resets() -> None:
    top = Backoff(rand=lambda: 0.0)  # no jitter: the base delays
    delays = [top.next() for _ in range(8)]
    assert delays == [min(BACKOFF_MAX, BACKOFF_MIN * 2**n) for n in range(8)]
    assert delays[-1] == BACKOFF_MAX
    top.reset()
    assert top.next() == BACKOFF_MIN

    low = Backoff(rand=lambda: 0.999999, jitter=0.25)  # the most jitter
    jittered = [low.next() for _ in range(8)]
    for base, delay in zip(delays, jittered, strict=True):
        assert 0.75 * base <= delay < base
    assert Backoff().next() <= BACKOFF_MIN
    many = Backoff()
    assert max(many.next() for _ in range(200)) <= BACKOFF_MAX


def test_the_async_client_talks_to_the_same_daemon(daemon: Daemon) -> None:
    """Client.async_http: the socket (as admin) and TCP (with the token) both work."""
    from notifyd.client import Client

    token = daemon.user("reader", grants={"*": "read"})

    async def latest(client: Client) -> int:
        async with client.async_http() as http:
            r = await http.get("/v1/events", params={"limit": 1})
            assert r.status_code == 200, r.text
            return r.json()["events"][0]["id"]

    ev = daemon.publish("x", title="one")
    with Client(socket_path=str(daemon.socket)) as c:
        assert asyncio.run(latest(c)) == ev["id"]
    with Client(url=daemon.url, token=token) as c:
        assert asyncio.run(latest(c)) == ev["id"]
    with httpx.Client(base_url=daemon.url) as raw:
        assert raw.get("/v1/events").status_code == 401  # the token is what made it work
