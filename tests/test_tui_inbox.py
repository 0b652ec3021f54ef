"""The TUI's inbox against a real daemon: Textual's ``run_test()`` and Pilot.

These tests are plain functions running ``asyncio.run`` (Textual is asyncio; they
stay out of pytest-trio). Waiting is always on a condition with a deadline
(:func:`until`), never a bare sleep. The daemon is the real one from conftest, over
its Unix socket; what the TUI changes is checked through the API.
"""

from __future__ import annotations

import asyncio
import time
import webbrowser
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from conftest import Daemon
from textual.command import CommandList
from textual.pilot import Pilot
from textual.widgets import Input, Select, Static

from notifyd.tui.app import NotifydApp, make_app
from notifyd.tui.screens.inbox import InboxScreen
from notifyd.tui.widgets.event_table import EventTable, parse_time

SIZE = (100, 30)


async def until(pilot: Pilot, predicate: Callable[[], Any], message: str | Callable[[], str],
                timeout: float = 10.0) -> Any:  # fmt: skip
    """Let the app run until ``predicate()`` is truthy; fail after ``timeout`` s.

    ``message`` may be a function, to describe the state at the time of failure.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            what = message() if callable(message) else message
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


def inbox(app: NotifydApp) -> InboxScreen:
    screen = app.screen
    assert isinstance(screen, InboxScreen)
    return screen


def table(app: NotifydApp) -> EventTable:
    return inbox(app).table


def indicator(app: NotifydApp) -> str:
    return str(app.screen.query_one("#connection", Static).content)


def status(app: NotifydApp) -> str:
    return str(app.screen.query_one("#inbox-status", Static).content)


def palette_hits(app: NotifydApp) -> int:
    lists = app.screen.query(CommandList)
    return lists.first().option_count if lists else 0


def titles(app: NotifydApp) -> list[str]:
    events = table(app).events
    return [events[eid]["title"] for eid in table(app).ordered_ids()]


async def ready(pilot: Pilot) -> None:
    """The first page is shown and the live stream is connected."""
    app = pilot.app
    assert isinstance(app, NotifydApp)
    await until(
        pilot,
        lambda: inbox(app).loaded and app.connection.state == "connected",
        "the inbox to load and the stream to connect",
    )


def run(app: NotifydApp, scenario: Callable[[Pilot], Awaitable[None]]) -> None:
    async def main() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            await scenario(pilot)

    asyncio.run(main())


def api_get(daemon: Daemon, path: str, **params: Any) -> Any:
    with daemon.admin() as c:
        r = c.get(path, params=params)
        assert r.status_code == 200, r.text
        return r.json()


async def server_state(daemon: Daemon, event_id: int) -> dict:
    return await asyncio.to_thread(api_get, daemon, f"/v1/events/{event_id}")


async def publish(daemon: Daemon, topic: str, **fields: Any) -> dict:
    return await asyncio.to_thread(daemon.publish, topic, **fields)


async def wait_server(pilot: Pilot, daemon: Daemon, event_id: int, check: Callable[[dict], bool],
                      message: str) -> None:  # fmt: skip
    """Poll the daemon (without blocking the app) until ``check(event)`` holds."""
    deadline = time.monotonic() + 10
    while not check(await server_state(daemon, event_id)):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        await pilot.pause(0.02)


# --- 1. live updates ------------------------------------------------------------


def test_published_events_appear_live(daemon: Daemon) -> None:
    old = daemon.publish("ci/main", title="Build 1 passed")
    app = make_app(socket_path=str(daemon.socket), browser=False)

    async def scenario(pilot: Pilot) -> None:
        assert table(app).ordered_ids() == [old["id"]]
        first = await publish(daemon, "alerts/disk", title="Disk full", priority="urgent")
        second = await publish(
            daemon, "backup", title="Backup done", body="*ok*", format="markdown"
        )
        await until(pilot, lambda: len(table(app).events) == 3, "the live events in the table")
        assert table(app).ordered_ids() == [second["id"], first["id"], old["id"]]
        # the cursor stays on the event it was on; the new rows are above it
        assert table(app).current["id"] == old["id"]
        assert inbox(app).detail.event["id"] == old["id"]
        # stream events carry no per-user state: they arrive unread
        assert not table(app).events[first["id"]]["read"]
        await pilot.press("home")
        await until(pilot, lambda: inbox(app).detail.event["id"] == second["id"], "the detail pane")
        await until(pilot, lambda: "3 loaded · 3 unread" in status(app), lambda: status(app))

    run(app, scenario)


# --- 2. filters and search ------------------------------------------------------


def test_filters_and_search_change_the_rows(daemon: Daemon) -> None:
    daemon.publish("ci/main", title="Build passed", category="build")
    daemon.publish("ci/nightly", title="Build failed", category="build", priority="high")
    backup = daemon.publish("backup", title="Backup finished", category="backup", priority="low")
    daemon.publish("alerts/disk", title="Disk almost full", body="sda1 at 97 %",
                   category="alert", priority="urgent")  # fmt: skip
    with daemon.admin() as c:
        assert c.post(f"/v1/events/{backup['id']}/read").status_code == 200
    app = make_app(socket_path=str(daemon.socket), browser=False)

    async def shows(pilot: Pilot, expected: list[str], what: str) -> None:
        await until(
            pilot,
            lambda: titles(app) == expected and not inbox(app).fetching,
            lambda: f"{what}: rows {titles(app)}, filters {inbox(app).filters}",
        )

    async def scenario(pilot: Pilot) -> None:
        everything = ["Disk almost full", "Backup finished", "Build failed", "Build passed"]
        assert titles(app) == everything
        # topic pattern, typed into the filter bar (f focuses it, Enter applies)
        await pilot.press("f", *"ci/*", "enter")
        await shows(pilot, ["Build failed", "Build passed"], "the ci/* rows")
        assert app.focused is table(app)
        # live events are filtered too
        await publish(daemon, "backup", title="Another backup")
        live = await publish(daemon, "ci/main", title="Build rerun")
        await shows(pilot, ["Build rerun", "Build failed", "Build passed"], "the live ci row")
        assert live["id"] in table(app).events
        # clear, then unread only (u)
        await pilot.press("x")
        await until(pilot, lambda: len(titles(app)) == 6 and not inbox(app).fetching, "all rows")
        await pilot.press("u")
        await until(pilot, lambda: "Backup finished" not in titles(app) and not inbox(app).fetching,
                    "the read event to go")  # fmt: skip
        assert len(titles(app)) == 5
        await pilot.press("u")
        # minimum priority, from the command palette (the filter bar's Select follows)
        await pilot.press("ctrl+p", *"priority high")
        await until(pilot, lambda: palette_hits(app), "palette hits")
        await pilot.press("enter")
        await shows(pilot, ["Disk almost full", "Build failed"], "priority ≥ high")
        assert app.screen.query_one("#filter-priority", Select).value == 4
        # full-text search (/ focuses it), combined with the priority filter
        await pilot.press("escape", "/", *"sda1", "enter")
        await shows(pilot, ["Disk almost full"], "the search result")
        # the command palette clears the filters
        await pilot.press("ctrl+p", *"clear filters")
        await until(pilot, lambda: palette_hits(app), "palette hits")
        await pilot.press("enter")
        await until(
            pilot, lambda: len(titles(app)) == 6 and not inbox(app).fetching, "all rows again"
        )
        assert app.screen.query_one("#filter-q", Input).value == ""

    run(app, scenario)


def test_search_applies_after_typing_stops(daemon: Daemon) -> None:
    daemon.publish("a", title="Deploy of web finished")
    daemon.publish("a", title="Certificate renewed")
    app = make_app(socket_path=str(daemon.socket), browser=False)

    async def scenario(pilot: Pilot) -> None:
        await pilot.press("slash", *"certif")  # no Enter: the search runs on a pause
        await until(pilot, lambda: titles(app) == ["Certificate renewed"], "the debounced search")
        assert isinstance(app.focused, Input), app.focused

    run(app, scenario)


# --- 3. read state --------------------------------------------------------------


def test_read_unread_archive_and_mark_all_reach_the_server(daemon: Daemon) -> None:
    a = daemon.publish("t", title="first")
    b = daemon.publish("t", title="second")
    c = daemon.publish("t", title="third")
    app = make_app(socket_path=str(daemon.socket), browser=False)

    async def scenario(pilot: Pilot) -> None:
        assert table(app).current["id"] == c["id"]
        await pilot.press("r")
        assert table(app).events[c["id"]]["read"]  # at once, before the daemon answers
        await wait_server(pilot, daemon, c["id"], lambda e: e["read"], "read on the server")
        await pilot.press("r")
        await wait_server(pilot, daemon, c["id"], lambda e: not e["read"], "unread again")
        # archive: the row leaves the inbox, the cursor moves on to the next one
        await pilot.press("a")
        await wait_server(pilot, daemon, c["id"], lambda e: e["archived"], "archived")
        assert table(app).ordered_ids() == [b["id"], a["id"]]
        await until(pilot, lambda: inbox(app).detail.event["id"] == b["id"], "the next event")
        # the archive view shows it; a unarchives it
        await pilot.press("A")
        await until(pilot, lambda: table(app).ordered_ids() == [c["id"]], "the archive view")
        await pilot.press("a")
        await wait_server(pilot, daemon, c["id"], lambda e: not e["archived"], "unarchived")
        await pilot.press("A")
        await until(
            pilot, lambda: len(table(app).events) == 3 and not inbox(app).fetching, "the inbox"
        )
        # mark all read (R)
        await pilot.press("R")
        await until(pilot, lambda: not api_get(daemon, "/v1/events", unread="true")["events"],
                    "everything read on the server")  # fmt: skip
        await until(pilot, lambda: all(e["read"] for e in table(app).events.values()),
                    "every row read")  # fmt: skip

    run(app, scenario)


def test_state_changes_from_other_devices_update_the_table(daemon: Daemon) -> None:
    a = daemon.publish("t", title="first")
    b = daemon.publish("t", title="second")
    app = make_app(socket_path=str(daemon.socket), browser=False)

    async def scenario(pilot: Pilot) -> None:
        events = table(app).events
        with daemon.admin() as c:
            assert c.post(f"/v1/events/{a['id']}/read").status_code == 200
        await until(pilot, lambda: events[a["id"]]["read"], "the state frame for a")
        with daemon.admin() as c:
            assert c.post(f"/v1/events/{b['id']}/archive").status_code == 200
        await until(pilot, lambda: b["id"] not in events, "b to leave the inbox")
        with daemon.admin() as c:
            assert c.post(f"/v1/events/{b['id']}/unarchive").status_code == 200
        await until(pilot, lambda: b["id"] in events, "b to come back")
        assert table(app).ordered_ids() == [b["id"], a["id"]]
        with daemon.admin() as c:
            assert c.post("/v1/inbox/read-all").status_code == 200
        await until(pilot, lambda: all(e["read"] for e in events.values()), "read-all")

    run(app, scenario)


def test_open_link_records_the_click_and_opens_the_browser(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    event = daemon.publish("t", title="PR merged", click="https://example.org/pr/7",
                           actions=[{"label": "Deploy", "url": "https://example.org/deploy",
                                     "method": "POST"}])  # fmt: skip
    opened: list[str] = []
    monkeypatch.setattr("notifyd.tui.app._graphical_browser", lambda: True)
    monkeypatch.setattr(webbrowser, "open", lambda url, *a, **k: opened.append(url) or True)
    app = make_app(socket_path=str(daemon.socket))

    async def scenario(pilot: Pilot) -> None:
        await pilot.press("o")
        assert opened == ["https://example.org/pr/7"]
        await wait_server(pilot, daemon, event["id"], lambda e: e["clicked_at"] and e["read"],
                          "the click to be recorded")  # fmt: skip
        # an HTTP action from the detail pane is recorded, not run
        await until(pilot, lambda: app.screen.query("#detail-links Button"), "the action buttons")
        deploy = app.screen.query("#detail-links Button").last()
        assert str(deploy.label) == "Deploy (POST)"
        await pilot.click(deploy)
        await wait_server(pilot, daemon, event["id"], lambda e: e["action"] == "Deploy",
                          "the action to be recorded")  # fmt: skip
        assert opened == ["https://example.org/pr/7"]

    run(app, scenario)


def test_without_a_browser_the_link_is_shown(daemon: Daemon) -> None:
    daemon.publish("t", title="PR merged", click="https://example.org/pr/8")
    app = make_app(socket_path=str(daemon.socket), browser=False)

    async def scenario(pilot: Pilot) -> None:
        await pilot.press("o")
        await until(pilot, lambda: any("https://example.org/pr/8" in str(n.message)
                                       for n in app._notifications), "the link toast")  # fmt: skip

    run(app, scenario)


# --- 4. reconnecting -------------------------------------------------------------


def test_recovers_after_a_daemon_restart_without_losing_or_doubling(daemon: Daemon) -> None:
    before = daemon.publish("t", title="before")
    app = make_app(socket_path=str(daemon.socket), browser=False)
    # hold the feed's reconnect until the test has published while it was away
    gate = asyncio.Event()

    async def held(seconds: float) -> None:
        await gate.wait()

    app.live.sleep = held
    received: list[int] = []

    async def scenario(pilot: Pilot) -> None:
        app.live_frames.subscribe(
            app.screen,
            lambda f: received.append(f["event"]["id"]) if f["type"] == "event" else None,
        )
        assert indicator(app).startswith("● connected")
        await asyncio.to_thread(daemon.restart)
        await until(pilot, lambda: "reconnecting" in indicator(app), "the reconnecting indicator")
        assert app.connection.reason  # the indicator says why
        away = await publish(daemon, "t", title="while away")
        assert app.connection.state == "reconnecting"  # published before the TUI came back
        gate.set()
        await until(pilot, lambda: app.connection.state == "connected", "the reconnection")
        assert app.connection.connects == 2
        assert indicator(app).startswith("● connected")
        await until(pilot, lambda: away["id"] in table(app).events, "the event missed while away")
        after = await publish(daemon, "t", title="after")
        await until(pilot, lambda: after["id"] in table(app).events, "a live event after it")
        assert table(app).ordered_ids() == [after["id"], away["id"], before["id"]]
        assert received.count(away["id"]) == 1
        assert received.count(after["id"]) == 1

    try:
        run(app, scenario)
    finally:
        gate.set()


# --- 5. infinite scroll -----------------------------------------------------------


def test_scrolling_to_the_end_loads_older_pages_lazily(daemon: Daemon) -> None:
    with daemon.admin() as c:
        batch = [{"topic": f"bulk/{i % 3}", "title": f"event {i}"} for i in range(300)]
        r = c.post("/v1/events", json=batch)
        assert r.status_code == 201, r.text
    server_ids = sorted((e["id"] for e in r.json()["events"]), reverse=True)
    app = make_app(socket_path=str(daemon.socket), browser=False, page_size=100)

    async def scenario(pilot: Pilot) -> None:
        t = table(app)
        assert t.row_count == 100  # one page, not the whole history
        await pilot.press("pagedown")
        await pilot.pause()
        assert t.row_count == 100  # far from the end: nothing to fetch yet
        await pilot.press("end")
        await until(pilot, lambda: t.row_count == 200, "the second page")
        await until(pilot, lambda: not inbox(app).fetching, "the fetch to finish")
        assert t.row_count == 200  # only the next page
        while not inbox(app).exhausted:
            count = t.row_count
            await pilot.press("end")
            await until(
                pilot, lambda n=count: t.row_count > n or inbox(app).exhausted, "the next page"
            )
        assert t.ordered_ids() == server_ids  # every event once, newest first
        assert "300 loaded" in status(app) and "end of history" in status(app)

    run(app, scenario)


# --- 6. snapshots ------------------------------------------------------------------


def _snapshot_daemon_events(daemon: Daemon) -> datetime:
    """Fixed content; returns a clock one and a half minutes after the newest event,
    so every relative time reads "1m" whatever the day."""
    daemon.publish("backup/nightly", title="Nightly backup finished", body="1.2 GiB in 42 s",
                   category="backup", priority="low", tags=["backup"])  # fmt: skip
    daemon.publish("ci/main", title="Build 1412 passed",
                   body="All **green** on `main`.\n\n- 214 tests\n- 0 failures",
                   format="markdown", category="build", click="https://ci.example.org/1412",
                   actions=[{"label": "Logs", "url": "https://ci.example.org/1412/logs"},
                            {"label": "Rerun", "url": "https://ci.example.org/rerun",
                             "method": "POST"}])  # fmt: skip
    read = daemon.publish("ci/nightly", title="Nightly build failed", category="build",
                          priority="high")  # fmt: skip
    daemon.publish("alerts/disk", title="Disk /srv at 95 %", body="Free space is low.",
                   category="alert", priority="urgent", tags=["disk"])  # fmt: skip
    last = daemon.publish("mail", title="3 new messages", category="mail")
    with daemon.admin() as c:
        assert c.post(f"/v1/events/{read['id']}/read").status_code == 200
    created = parse_time(last["created_at"])
    assert created is not None
    return created + timedelta(seconds=90)


def test_snapshot_inbox(daemon: Daemon, snap_compare: Any) -> None:
    now = _snapshot_daemon_events(daemon)
    app = make_app(socket_path=str(daemon.socket), browser=False, clock=lambda: now)

    async def run_before(pilot: Pilot) -> None:
        await ready(pilot)
        await pilot.press("down", "down", "down")  # onto "Build 1412 passed"
        await until(pilot, lambda: inbox(app).detail.event["title"] == "Build 1412 passed",
                    "the detail pane")  # fmt: skip
        await until(pilot, lambda: app.screen.query("#detail-links Button"), "the buttons")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_snapshot_inbox_filtered(daemon: Daemon, snap_compare: Any) -> None:
    now = _snapshot_daemon_events(daemon)
    app = make_app(socket_path=str(daemon.socket), browser=False, clock=lambda: now)

    async def run_before(pilot: Pilot) -> None:
        await ready(pilot)
        await pilot.press("f", *"ci/*", "enter", "u")
        await until(pilot, lambda: titles(app) == ["Build 1412 passed"] and not inbox(app).fetching,
                    "the filtered list")  # fmt: skip
        await until(pilot, lambda: inbox(app).detail.event is not None, "the detail pane")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
