"""Attachments in the TUI, against a real daemon: the detail pane describes an
event's attachment (name, type, size, expiry), ``O`` opens it (over TCP: the
daemon's URL; an external file: its own URL) or, over the Unix socket where no
browser can follow, shows and copies a command that downloads it. The key shows
in the footer only while the selected notification has an attachment.

Plain functions running ``asyncio.run`` like tests/test_tui_inbox.py; waiting is
on conditions with deadlines.
"""

from __future__ import annotations

import asyncio
import time
import webbrowser
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from conftest import Daemon
from textual.pilot import Pilot
from textual.widgets import Static

from notifyd.tui.app import NotifydApp, make_app
from notifyd.tui.screens.inbox import InboxScreen
from notifyd.tui.widgets.event_detail import describe_attachment, human_size
from notifyd.tui.widgets.event_table import parse_time

SIZE = (100, 30)
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 8 + b"\n%%EOF\n"


async def until(pilot: Pilot, predicate: Callable[[], Any], message: str,
                timeout: float = 10.0) -> Any:  # fmt: skip
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        await pilot.pause(0.02)


def inbox(app: NotifydApp) -> InboxScreen:
    screen = app.screen
    assert isinstance(screen, InboxScreen)
    return screen


def meta_text(app: NotifydApp) -> str:
    return str(app.screen.query_one("#detail-meta", Static).content)


def toasts(app: NotifydApp) -> list[str]:
    return [f"{n.title or ''} {n.message}" for n in app._notifications]


def run(app: NotifydApp, scenario: Callable[[Pilot], Awaitable[None]]) -> None:
    async def main() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await until(
                pilot,
                lambda: inbox(app).loaded and app.connection.state == "connected",
                "the inbox to load and the stream to connect",
            )
            await scenario(pilot)

    asyncio.run(main())


def upload(daemon: Daemon, data: bytes, filename: str, content_type: str) -> dict:
    with daemon.admin() as c:
        r = c.post(
            "/v1/attachments",
            params={"filename": filename},
            content=data,
            headers={"Content-Type": content_type},
        )
        assert r.status_code == 201, r.text
        return r.json()


def test_describe_attachment() -> None:
    now = parse_time("2026-01-01T12:00:00Z")
    assert now is not None
    att = {"id": "abcdefghijkl", "name": "report.pdf", "type": "application/pdf",
           "size": 1536, "expires_at": "2026-01-04T12:00:00Z", "url": "/v1/attachments/abcdefghijkl"}  # fmt: skip
    assert (
        describe_attachment(att, now)
        == "report.pdf · application/pdf · 1.5 KiB · expires in 3 days"
    )
    assert describe_attachment({**att, "expires_at": "2026-01-01T11:00:00Z"}, now).endswith(
        "expired"
    )
    external = {"id": None, "name": "x.iso", "type": None, "size": None, "expires_at": None,
                "url": "https://files.example.org/x.iso"}  # fmt: skip
    assert describe_attachment(external, now) == "x.iso · external link"
    assert describe_attachment(None, now) == ""
    assert [human_size(n) for n in (0, 1023, 1024, 10 * 1024**2, None)] == [
        "0 B", "1023 B", "1.0 KiB", "10.0 MiB", ""
    ]  # fmt: skip


def test_upload_over_the_socket_is_described_and_o_shows_how_to_fetch_it(daemon: Daemon) -> None:
    att = upload(daemon, PDF, "report.pdf", "application/pdf")
    event = daemon.publish("reports", title="Weekly report", attachment={"id": att["id"]})
    plain = daemon.publish("reports", title="no attachment")
    app = make_app(socket_path=str(daemon.socket), browser=False)

    async def scenario(pilot: Pilot) -> None:
        screen = inbox(app)
        # the newest (no attachment) is selected: no attachment key in the footer
        await until(pilot, lambda: screen.detail.event and screen.detail.event["id"] == plain["id"],
                    "the detail pane")  # fmt: skip
        assert "O" not in app.screen.active_bindings
        await pilot.press("down")
        await until(pilot, lambda: screen.detail.event and screen.detail.event["id"] == event["id"],
                    "the event with the attachment")  # fmt: skip
        text = meta_text(app)
        assert f"attachment: report.pdf · application/pdf · {human_size(len(PDF))}" in text
        assert "expires in" in text
        await until(pilot, lambda: "O" in app.screen.active_bindings, "the attachment key")
        buttons = [str(b.label) for b in app.screen.query("#detail-links Button")]
        assert "Attachment (O)" in buttons
        await pilot.press("O")
        await until(pilot, lambda: any("--unix-socket" in t for t in toasts(app)), "the fetch hint")
        hint = next(t for t in toasts(app) if "--unix-socket" in t)
        assert f"/v1/attachments/{att['id']}" in hint and str(daemon.socket) in hint

    run(app, scenario)


def test_over_tcp_o_opens_the_attachment_url(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = daemon.user("tuireader", grants={"pics/*": "read"}, scopes=["subscribe"])
    att = upload(daemon, b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "door.png", "image/png")
    daemon.publish("pics/door", title="Someone at the door", attachment={"id": att["id"]})
    opened: list[str] = []
    monkeypatch.setattr("notifyd.tui.app._graphical_browser", lambda: True)
    monkeypatch.setattr(webbrowser, "open", lambda url, *a, **k: opened.append(url) or True)
    app = make_app(url=daemon.url, token=token)

    async def scenario(pilot: Pilot) -> None:
        await until(pilot, lambda: "door.png" in meta_text(app), "the attachment line")
        # o without a click URL or link action opens the attachment too
        await pilot.press("o")
        assert opened == [f"{daemon.url}/v1/attachments/{att['id']}"]
        await pilot.press("O")
        assert opened == [f"{daemon.url}/v1/attachments/{att['id']}"] * 2

    run(app, scenario)


def test_external_attachment_opens_its_own_url(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "https://files.example.org/builds/app-1.2.apk"
    daemon.publish("builds", title="APK ready", attachment={"url": url, "name": "app-1.2.apk"})
    opened: list[str] = []
    monkeypatch.setattr("notifyd.tui.app._graphical_browser", lambda: True)
    monkeypatch.setattr(webbrowser, "open", lambda u, *a, **k: opened.append(u) or True)
    app = make_app(socket_path=str(daemon.socket))

    async def scenario(pilot: Pilot) -> None:
        await until(pilot, lambda: "app-1.2.apk" in meta_text(app), "the attachment line")
        assert "external link" in meta_text(app)
        await pilot.press("O")
        assert opened == [url]

    run(app, scenario)


def test_snapshot_attachment_in_the_detail_pane(daemon: Daemon, snap_compare: Any) -> None:
    """The detail pane with an attachment, and the attachment key in the footer."""
    att = upload(daemon, PDF, "report-2026-W01.pdf", "application/pdf")
    event = daemon.publish("reports/weekly", title="Weekly report", body="The numbers for week 1.",
                           category="report", attachment={"id": att["id"]})  # fmt: skip
    created = parse_time(event["created_at"])
    assert created is not None
    now = created + timedelta(seconds=90)  # "1m"; the file expires in 2 days and 23 hours
    app = make_app(socket_path=str(daemon.socket), browser=False, clock=lambda: now)

    async def run_before(pilot: Pilot) -> None:
        await until(
            pilot,
            lambda: inbox(app).loaded and app.connection.state == "connected",
            "the inbox to load and the stream to connect",
        )
        await until(pilot, lambda: "report-2026-W01.pdf" in meta_text(app), "the attachment")
        await until(pilot, lambda: "O" in app.screen.active_bindings, "the attachment key")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
