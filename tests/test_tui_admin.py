"""The TUI's admin screens against a real daemon: channels (with a real SMTP server
and the ``memory`` test channel), preferences, deliveries, users and tokens, driven
with Pilot; and a snapshot of each screen (pytest-textual-snapshot).

These are plain functions that run ``asyncio.run(...)``: Textual runs on asyncio,
so they stay out of pytest-trio. Waiting is always polling a condition between
``pilot.pause()`` calls, with a deadline.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Daemon, wait_for
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from smtpsink import SMTPSink
from textual.app import App
from textual.css.query import NoMatches
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Select, Static

from notifyd.client import Client
from notifyd.tui.app import make_app
from notifyd.tui.screens.channels import ChannelsScreen
from notifyd.tui.screens.deliveries import DeliveriesScreen
from notifyd.tui.screens.preferences import PreferencesScreen
from notifyd.tui.screens.users import UsersScreen
from notifyd.tui.widgets.confirm import ConfirmDialog
from notifyd.tui.widgets.form_dialog import FormDialog
from notifyd.tui.widgets.rule_editor import RuleEditor
from notifyd.tui.widgets.token_secret import TokenSecretDialog

TESTS = str(Path(__file__).parent)
SIZE = (100, 30)


def memory_env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return {
        "PYTHONPATH": TESTS + (os.pathsep + path if path else ""),
        "NOTIFYD_PLUGINS": "memory_plugin",
        "NOTIFYD_DELIVERY_BACKOFF_SECONDS": "0.1",
    }


@pytest.fixture
def mdaemon(make_daemon: Callable[..., Daemon]) -> Daemon:
    return make_daemon(extra_env=memory_env()).start()


# --- helpers ----------------------------------------------------------------------


def drive(app: App, scenario: Callable[[Pilot], Awaitable[None]]) -> None:
    async def main() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await scenario(pilot)

    asyncio.run(main())


async def until(pilot: Pilot, predicate: Callable[[], Any], what: str, timeout: float = 10) -> Any:
    """Let the app run until ``predicate()`` is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except (NoMatches, LookupError):  # the screen is still being built
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause()


def text(app: App, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).content)


def shown(app: App, selector: str) -> bool:
    return bool(app.screen.query_one(selector).display)


def rows(table: DataTable) -> dict[str, list[str]]:
    return {key.value: [str(c) for c in table.get_row(key)] for key in table.rows}


def loaded(app: App, table_id: str) -> bool:
    return bool(app.screen.query_one(table_id, DataTable).columns)


async def open_mode(pilot: Pilot, mode: str, table_id: str | None = None) -> None:
    await pilot.app.switch_mode(mode)
    if table_id:
        await until(pilot, lambda: loaded(pilot.app, table_id), f"the {mode} screen to load")


async def palette(pilot: Pilot, command: str) -> None:
    """Run a command through the command palette, as a user would."""
    await pilot.press("ctrl+p")
    await until(pilot, lambda: type(pilot.app.screen).__name__ == "CommandPalette", "the palette")
    await pilot.press(*command)
    await until(
        pilot, lambda: pilot.app.screen.query_one("CommandList").option_count, f"hits for {command}"
    )
    await pilot.press("enter")


async def dialog(pilot: Pilot, kind: type) -> Any:
    return await until(
        pilot,
        lambda: pilot.app.screen if isinstance(pilot.app.screen, kind) else None,
        f"a {kind.__name__}",
    )


def select_row(table: DataTable, key: str) -> None:
    table.move_cursor(row=table.get_row_index(key))


def push_subscription(endpoint: str) -> dict[str, Any]:
    """A browser's PushSubscription JSON with real P-256 keys."""

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    public = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    return {"endpoint": endpoint, "keys": {"p256dh": b64(public), "auth": b64(os.urandom(16))}}


FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


# --- 1. channels ------------------------------------------------------------------


def test_channels_add_validate_test_remove(mdaemon: Daemon) -> None:
    sink = SMTPSink(credentials=("alerts", "hunter2")).start()
    with mdaemon.admin() as c:
        r = c.post(
            "/v1/channels", json={"name": "pager", "kind": "memory", "config": {"permanent": True}}
        )
        assert r.status_code == 201, r.text
        r = c.post(
            "/v1/webpush/subscriptions",
            json=push_subscription("http://127.0.0.1:9/push/1"),
            headers={"User-Agent": FIREFOX},
        )
        assert r.status_code == 201, r.text
        device = r.json()

    def channel_names() -> set[str]:
        with mdaemon.admin() as c:
            return {ch["name"] for ch in c.get("/v1/channels").json()["channels"]}

    app = make_app(socket_path=str(mdaemon.socket))

    async def scenario(pilot: Pilot) -> None:
        await open_mode(pilot, "channels", "#channels-table")
        screen = app.screen
        assert isinstance(screen, ChannelsScreen)
        table = screen.query_one("#channels-table", DataTable)
        await until(pilot, lambda: "admin/pager" in rows(table), "the existing channel")

        # a URL Apprise cannot use: the daemon's message under the URL input, nothing stored
        await pilot.press("n")
        form = await dialog(pilot, FormDialog)
        form.query_one("#form-name", Input).value = "mail"
        form.query_one("#form-url", Input).value = "foo://nowhere/at/all"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: shown(app, "#form-url-error"), "the URL's error")
        assert "Apprise" in text(app, "#form-url-error"), text(app, "#form-url-error")
        assert not shown(app, "#form-name-error")
        assert form.query_one("#form-url", Input).has_class("has-error")
        assert form.focused is form.query_one("#form-url")
        assert channel_names() == {"pager", device["name"]}

        # a good one (a real SMTP server that wants a login): listed, secret masked
        form.query_one("#form-url", Input).value = sink.url(to="ops@example.org")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: app.screen is screen, "the form to close")
        await until(pilot, lambda: "admin/mail" in rows(table), "the new channel in the table")
        assert "mail" in channel_names()
        row = rows(table)["admin/mail"]
        assert row[:3] == ["mail", "apprise", "untested"]
        assert "****" in row[3] and "hunter2" not in " ".join(row)

        # test: sent to the SMTP server now, and said so
        select_row(table, "admin/mail")
        await pilot.press("t")
        await until(pilot, lambda: "Test sent to mail" in text(app, "#channels-status"), "the test")
        assert sink.messages and sink.messages[0].authenticated_as == "alerts"

        # a test that fails shows the channel's error
        select_row(table, "admin/pager")
        await pilot.press("t")
        await until(pilot, lambda: "failed" in text(app, "#channels-status"), "the failed test")
        assert "refused for good" in text(app, "#channels-status")

        # remove asks first; "no" keeps the channel, "yes" removes it
        select_row(table, "admin/mail")
        await pilot.press("d")
        await dialog(pilot, ConfirmDialog)
        await pilot.press("n")
        await until(pilot, lambda: app.screen is screen, "the question to close")
        assert "mail" in channel_names()
        await pilot.press("d")
        await dialog(pilot, ConfirmDialog)
        await pilot.press("y")
        await until(pilot, lambda: "admin/mail" not in rows(table), "the channel to go")
        assert "mail" not in channel_names()

        # Web Push devices: listed by browser, removed from their own table
        devices = screen.query_one("#webpush-table", DataTable)
        assert rows(devices)[str(device["id"])][:2] == ["Firefox on Linux", "http://127.0.0.1:9"]
        devices.focus()
        await pilot.press("d")
        await dialog(pilot, ConfirmDialog)
        await pilot.press("y")
        await until(pilot, lambda: not rows(devices), "the device to go")
        assert channel_names() == {"pager"}

    try:
        drive(app, scenario)
    finally:
        sink.stop()


# --- 2. preferences ---------------------------------------------------------------


def test_preferences_errors_on_the_right_input_and_save(mdaemon: Daemon) -> None:
    with mdaemon.admin() as c:
        assert c.post("/v1/channels", json={"name": "archive", "kind": "memory"}).status_code == 201
        before = c.get("/v1/preferences").json()

    app = make_app(socket_path=str(mdaemon.socket))

    async def scenario(pilot: Pilot) -> None:
        await pilot.app.switch_mode("preferences")
        screen = app.screen
        assert isinstance(screen, PreferencesScreen)
        await until(
            pilot,
            lambda: screen.saved is not None and screen.query("#digest-archive"),
            "the preferences to load",
        )

        # a bad topic pattern: the message under that rule, its topic input focused
        await pilot.press("ctrl+n")
        editor = await until(pilot, lambda: screen.query(RuleEditor).first(), "a new rule")
        topic = editor.query_one(".rule-topic", Input)
        assert screen.focused is topic
        await pilot.press(*"bad topic!")
        assert "Unsaved changes" in text(app, "#prefs-status")
        await pilot.press("ctrl+s")
        error = editor.query_one(".field-error", Static)
        await until(pilot, lambda: error.display, "the rule's error")
        assert str(error.content) and topic.has_class("has-error")
        assert screen.focused is topic
        assert "rules[0].topic" in text(app, "#prefs-status")

        # a digest window out of range: the message under that channel's input
        topic.value = "ci/*"
        editor.query_one(".rule-priority", Select).value = 4
        editor.query_one(".rule-action", Select).value = "only"
        await pilot.pause()
        editor.query_one(".rule-channels", Input).value = "archive"
        screen.query_one("#digest-archive", Input).value = "30"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: shown(app, "#digest-archive-error"), "the digest's error")
        assert "60–86400" in text(app, "#digest-archive-error")
        assert not error.display and not topic.has_class("has-error")
        assert screen.focused is screen.query_one("#digest-archive")

        # quiet hours: a time that is not one
        screen.query_one("#digest-archive", Input).value = "600"
        screen.query_one("#quiet-start", Input).value = "25:00"
        screen.query_one("#quiet-end", Input).value = "07:00"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: shown(app, "#quiet-error"), "the quiet hours' error")
        assert "22:00" in text(app, "#quiet-error")
        assert screen.query_one("#quiet-start").has_class("has-error")
        with mdaemon.admin() as c:
            assert c.get("/v1/preferences").json() == before  # nothing saved so far

        # fixed: saved, and the daemon has exactly that
        screen.query_one("#quiet-start", Input).value = "22:00"
        screen.query_one("#timezone", Input).value = "Europe/Berlin"
        await pilot.press("ctrl+n")
        second = await until(
            pilot,
            lambda: len(screen.query(RuleEditor)) == 2 and screen.query(RuleEditor)[1],
            "a second rule",
        )
        second.query_one(".rule-topic", Input).value = "noisy/*"
        second.query_one(".rule-action", Select).value = "mute"
        second.query_one(".rule-topic", Input).focus()

        def topics() -> list[str]:
            return [e.query_one(".rule-topic", Input).value for e in screen.query(RuleEditor)]

        await pilot.press("ctrl+up")  # rules are checked in order: move, and back
        await until(pilot, lambda: topics() == ["noisy/*", "ci/*"], "the rule to move up")
        await pilot.press("ctrl+down")
        await until(pilot, lambda: topics() == ["ci/*", "noisy/*"], "the rule to move down")
        await pilot.press("ctrl+n")
        await until(pilot, lambda: topics() == ["ci/*", "noisy/*", ""], "a third rule")
        await pilot.press("ctrl+d")
        await until(pilot, lambda: topics() == ["ci/*", "noisy/*"], "the third rule to go")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: text(app, "#prefs-status") == "Saved.", "the save")

    drive(app, scenario)
    with mdaemon.admin() as c:
        doc = c.get("/v1/preferences").json()
    assert doc["rules"] == [
        {
            "topic": "ci/*",
            "category": None,
            "min_priority": 4,
            "channels": ["archive"],
            "mute": False,
        },
        {"topic": "noisy/*", "category": None, "min_priority": 1, "channels": None, "mute": True},
    ]
    assert doc["quiet_hours"] == {"start": "22:00", "end": "07:00"}
    assert doc["timezone"] == "Europe/Berlin"
    assert doc["digests"] == {"archive": 600}


# --- 3. deliveries ----------------------------------------------------------------


def test_deliveries_dead_with_error_and_retry(mdaemon: Daemon) -> None:
    with mdaemon.admin() as c:
        c.post("/v1/channels", json={"name": "archive", "kind": "memory", "config": {}})
        # each attempt takes a second, so a retried delivery stays pending long enough to see
        c.post(
            "/v1/channels",
            json={"name": "pager", "kind": "memory", "config": {"permanent": True, "latency": 1}},
        )
    mdaemon.publish("ci/main", title="build failed")

    def deliveries(state: str | None = None) -> list[dict]:
        with mdaemon.admin() as c:
            return c.get("/v1/deliveries", params={"state": state} if state else {}).json()[
                "deliveries"
            ]

    wait_for(lambda: {d["state"] for d in deliveries()} == {"sent", "dead"}, message="settled")
    (dead,) = deliveries("dead")
    app = make_app(socket_path=str(mdaemon.socket))

    async def scenario(pilot: Pilot) -> None:
        await open_mode(pilot, "deliveries", "#deliveries-table")
        screen = app.screen
        assert isinstance(screen, DeliveriesScreen)
        table = screen.query_one("#deliveries-table", DataTable)
        await until(pilot, lambda: len(rows(table)) == 2, "both deliveries")
        assert "1 sent" in text(app, "#stats-totals") and "1 dead" in text(app, "#stats-totals")

        await palette(pilot, "show dead")
        await until(pilot, lambda: list(rows(table)) == [str(dead["id"])], "only the dead one")
        row = rows(table)[str(dead["id"])]
        assert row[3:6] == ["pager", "dead", "1"] and row[7] == "refused for good"
        assert "refused for good" in text(app, "#delivery-detail")

        await pilot.press("r")
        seen: list[str] = []

        def retried() -> bool:
            (d,) = [d for d in deliveries() if d["id"] == dead["id"]]
            seen.append(d["state"])
            return d["state"] == "pending" or d["attempts"] > 1

        await until(pilot, retried, "the retry")
        assert "pending" in seen, seen

    drive(app, scenario)
    wait_for(
        lambda: deliveries("dead") and deliveries("dead")[0]["attempts"] == 2,
        message="the retried delivery to be attempted again",
    )


# --- 4. users, tokens, ACL --------------------------------------------------------


def test_users_tokens_and_grants(daemon: Daemon) -> None:
    app = make_app(socket_path=str(daemon.socket))
    secret: list[str] = []

    def api(path: str, **params: str) -> Any:
        with daemon.admin() as c:
            return c.get(path, params=params).json()

    async def scenario(pilot: Pilot) -> None:
        await open_mode(pilot, "users", "#users-table")
        screen = app.screen
        assert isinstance(screen, UsersScreen)
        users = screen.query_one("#users-table", DataTable)
        await until(pilot, lambda: "admin" in rows(users), "the admin user")

        # add a user; a taken name is refused under the name input
        await pilot.press("n")
        form = await dialog(pilot, FormDialog)
        form.query_one("#form-name", Input).value = "alice"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: app.screen is screen, "the form to close")
        await until(pilot, lambda: "alice" in rows(users), "alice in the table")
        await pilot.press("n")
        form = await dialog(pilot, FormDialog)
        form.query_one("#form-name", Input).value = "alice"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: shown(app, "#form-name-error"), "the conflict")
        assert "exists already" in text(app, "#form-name-error")
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is screen, "the form to close")
        assert [u["role"] for u in api("/v1/users")["users"] if u["name"] == "alice"] == ["user"]

        # a token for alice through the palette: its secret shown once, in a dialog
        await palette(pilot, "create a token")
        form = await dialog(pilot, FormDialog)
        form.query_one("#form-user", Select).value = "alice"
        form.query_one("#form-label", Input).value = "backup script"
        await pilot.press("ctrl+s")
        shown_secret = await dialog(pilot, TokenSecretDialog)
        secret.append(str(shown_secret.query_one("#token-secret", Static).content))
        assert secret[0].startswith("nfy_")
        await pilot.press("enter")
        tokens = screen.query_one("#tokens-table", DataTable)
        await until(
            pilot,
            lambda: app.screen is screen and any(r[1] == "alice" for r in rows(tokens).values()),
            "the token in the table",
        )
        assert secret[0] not in json.dumps(rows(tokens))
        with daemon.http(secret[0]) as h:
            assert h.get("/v1/me").json()["user"] == "alice"

        # grant alice read and write on home/*, then revoke it
        screen.action_show_tab("acl")
        await pilot.press("n")
        form = await dialog(pilot, FormDialog)
        form.query_one("#form-user", Select).value = "alice"
        form.query_one("#form-pattern", Input).value = "home/*"
        form.query_one("#form-permission", Select).value = "rw"
        await pilot.press("ctrl+s")
        acl = screen.query_one("#acl-table", DataTable)
        await until(pilot, lambda: len(rows(acl)) == 1, "the grant in the table")
        grants = api("/v1/acl", user="alice")["acl"]
        assert [(g["pattern"], g["read"], g["write"]) for g in grants] == [("home/*", True, True)]
        await pilot.press("d")
        await dialog(pilot, ConfirmDialog)
        await pilot.press("y")
        await until(pilot, lambda: not rows(acl), "the grant to go")
        assert api("/v1/acl", user="alice")["acl"] == []

        # revoke alice's token: refused from then on
        (tid,) = [k for k, r in rows(tokens).items() if r[1] == "alice"]
        screen.action_show_tab("tokens")
        select_row(tokens, tid)
        await pilot.press("d")
        await dialog(pilot, ConfirmDialog)
        await pilot.press("y")
        await until(pilot, lambda: tid not in rows(tokens), "the token to go")
        with daemon.http(secret[0]) as h:
            assert h.get("/v1/me").status_code == 401

        # remove alice
        screen.action_show_tab("users")
        select_row(users, "alice")
        await pilot.press("d")
        await dialog(pilot, ConfirmDialog)
        await pilot.press("y")
        await until(pilot, lambda: "alice" not in rows(users), "alice to go")
        assert [u["name"] for u in api("/v1/users")["users"]] == ["admin"]

    drive(app, scenario)


def test_users_screen_tells_a_non_admin_it_is_for_admins(daemon: Daemon) -> None:
    token = daemon.user("bob", grants={"home/*": "read"})
    app = make_app(url=daemon.url, token=token)
    toasts: list[str] = []
    notify = app.notify

    def record(message: str, **options: Any) -> None:
        toasts.append(message)
        notify(message, **options)

    app.notify = record  # type: ignore[method-assign]

    async def scenario(pilot: Pilot) -> None:
        await pilot.app.switch_mode("users")
        await until(pilot, lambda: shown(app, "#users-notice"), "the notice")
        notice = text(app, "#users-notice")
        assert "for admins only" in notice and "bob" in notice
        assert not shown(app, "#users-tabs")

        # "every user's channels" is for admins too: back to the own ones
        await open_mode(pilot, "channels", "#channels-table")
        screen = app.screen
        assert isinstance(screen, ChannelsScreen)
        await pilot.press("a")
        await until(pilot, lambda: any("Only admins" in n for n in toasts), "the refusal")
        assert not screen.show_all
        assert text(app, "#channels-title").startswith("Your channels")

    drive(app, scenario)


# --- 5. snapshots -----------------------------------------------------------------

FIXED_TIME = "2001-02-03T04:05:06.789Z"


class FixedTimes(httpx.BaseTransport):
    """The daemon's socket, with every timestamp and token prefix in its answers
    replaced by a fixed value: the snapshots show real daemon data that does not
    change from run to run."""

    def __init__(self, socket_path: str) -> None:
        self.inner = httpx.HTTPTransport(uds=socket_path)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        response.read()
        if "json" not in response.headers.get("content-type", "") or not response.content:
            return response
        return httpx.Response(response.status_code, json=self.fix(json.loads(response.content)))

    def fix(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.fix(v) for v in value]
        if not isinstance(value, dict):
            return value
        out = {}
        for key, v in value.items():
            if key.endswith("_at") and v is not None:
                v = FIXED_TIME
            elif key == "prefix" and isinstance(v, str):
                v = "nfy_Ab3d"
            out[key] = self.fix(v)
        return out

    def close(self) -> None:
        self.inner.close()


@pytest.fixture(scope="module")
def snapshot_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon with the same data every run, shared by the snapshot tests (they
    only read)."""
    d = Daemon(tmp_path_factory.mktemp("snapshots") / "data", extra_env=memory_env())
    d.data_dir.mkdir()
    d.start()
    try:
        with d.admin() as c:
            for name, config in (("archive", {}), ("pager", {"permanent": True})):
                body = {"name": name, "kind": "memory", "config": config}
                assert c.post("/v1/channels", json=body).status_code == 201
            d.publish("ci/main", title="build failed", priority=4)
            d.publish("home/door", title="front door open")
            wait_for(
                lambda: (
                    sorted(x["state"] for x in c.get("/v1/deliveries").json()["deliveries"])
                    == ["dead", "dead", "sent", "sent"]
                ),
                message="the deliveries to settle",
            )
            # added after the events, so they have no deliveries that could still change
            url = "mailtos://alerts:hunter2@smtp.example.org/ops@example.org"
            assert c.post("/v1/channels", json={"name": "mail", "url": url}).status_code == 201
            sub = push_subscription("http://127.0.0.1:9/push/phone")
            r = c.post("/v1/webpush/subscriptions", json=sub, headers={"User-Agent": FIREFOX})
            assert r.status_code == 201, r.text
            prefs = {
                "rules": [
                    {"topic": "ci/*", "min_priority": "high", "channels": ["pager"]},
                    {"topic": "noisy/*", "mute": True},
                    {"topic": "*", "category": "backup", "channels": []},
                ],
                "quiet_hours": {"start": "22:00", "end": "07:00"},
                "timezone": "Europe/Berlin",
                "digests": {"mail": 600},
                "rate_limit_per_minute": 20,
            }
            assert c.put("/v1/preferences", json=prefs).status_code == 200
        d.user("alice", grants={"home/*": "read", "ci/*": "rw"}, scopes=["publish"], topics="ci/*")
        d.user("ops", role="admin")
        yield d
    finally:
        d.stop()


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Times are shown in local time: make that the same everywhere."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def snapshot_app(d: Daemon) -> App:
    app = make_app(socket_path=str(d.socket))
    app.client.close()
    app.client = Client(str(d.socket), transport=FixedTimes(str(d.socket)))
    return app


def loaded_mode(mode: str, ready: Callable[[App], Any]) -> Callable[[Pilot], Awaitable[None]]:
    async def run_before(pilot: Pilot) -> None:
        await pilot.app.switch_mode(mode)
        await until(pilot, lambda: ready(pilot.app), f"the {mode} screen to load")

    return run_before


def table_rows(selector: str, count: int) -> Callable[[App], bool]:
    return lambda app: app.screen.query_one(selector, DataTable).row_count == count


def test_snapshot_channels(snapshot_daemon: Daemon, snap_compare: Any, utc: None) -> None:
    ready = loaded_mode(
        "channels",
        lambda app: table_rows("#channels-table", 4)(app) and table_rows("#webpush-table", 1)(app),
    )
    assert snap_compare(snapshot_app(snapshot_daemon), terminal_size=SIZE, run_before=ready)


def test_snapshot_preferences(snapshot_daemon: Daemon, snap_compare: Any, utc: None) -> None:
    ready = loaded_mode(
        "preferences",
        lambda app: len(app.screen.query(RuleEditor)) == 3 and app.screen.query("#digest-mail"),
    )
    assert snap_compare(snapshot_app(snapshot_daemon), terminal_size=SIZE, run_before=ready)


def test_snapshot_deliveries(snapshot_daemon: Daemon, snap_compare: Any, utc: None) -> None:
    ready = loaded_mode(
        "deliveries",
        lambda app: table_rows("#deliveries-table", 4)(app) and table_rows("#stats-table", 1)(app),
    )
    assert snap_compare(snapshot_app(snapshot_daemon), terminal_size=SIZE, run_before=ready)


def test_snapshot_users(snapshot_daemon: Daemon, snap_compare: Any, utc: None) -> None:
    ready = loaded_mode("users", table_rows("#users-table", 3))
    assert snap_compare(snapshot_app(snapshot_daemon), terminal_size=SIZE, run_before=ready)


def test_snapshot_tokens_tab(snapshot_daemon: Daemon, snap_compare: Any, utc: None) -> None:
    async def run_before(pilot: Pilot) -> None:
        await loaded_mode("users", table_rows("#tokens-table", 2))(pilot)
        screen = pilot.app.screen
        assert isinstance(screen, UsersScreen)
        screen.action_show_tab("tokens")

    assert snap_compare(snapshot_app(snapshot_daemon), terminal_size=SIZE, run_before=run_before)


def test_snapshot_channel_form_error(snapshot_daemon: Daemon, snap_compare: Any, utc: None) -> None:
    async def run_before(pilot: Pilot) -> None:
        await loaded_mode("channels", table_rows("#channels-table", 4))(pilot)
        await pilot.press("n")
        form = await dialog(pilot, FormDialog)
        form.query_one("#form-name", Input).value = "chat"
        form.query_one("#form-url", Input).value = "foo://nowhere"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: shown(pilot.app, "#form-url-error"), "the URL's error")

    assert snap_compare(snapshot_app(snapshot_daemon), terminal_size=SIZE, run_before=run_before)


@pytest.mark.parametrize(
    "screen", [ChannelsScreen, PreferencesScreen, DeliveriesScreen, UsersScreen]
)
def test_every_palette_entry_runs_an_action_of_its_screen(screen: type) -> None:
    (provider,) = screen.COMMANDS
    assert provider.ENTRIES
    for title, action, help_text in provider.ENTRIES:
        assert callable(getattr(screen, "action_" + action.split("(")[0], None)), title
        assert help_text, title
