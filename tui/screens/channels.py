"""Channels: where notifications are delivered, and the Web Push devices.

The table shows what ``GET /v1/channels`` answers — secrets already masked by the
daemon — with a state derived from the last success and the last error. Adding a
channel takes an Apprise URL, checked by the daemon (its ``422`` message is shown
under the field it names); a test is sent at once and its outcome shown; removing
asks first. Below, the caller's Web Push subscriptions, one per browser or phone.
Phone apps registered at ``/v1/devices`` are channels of kinds ``fcm``/``apns``:
they are in the channels table, named by their label and app (the daemon shows
their push token shortened, never in full).
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Static

from notifyd.cli.format import short_time
from notifyd.client import Client, ClientError

from ..widgets.confirm import ConfirmDialog
from ..widgets.form_dialog import FormDialog, FormField
from .admin_base import AdminScreen, ScreenCommands, fill_table, plain, selected_key


class ChannelsCommands(ScreenCommands):
    """Command palette entries of the channels screen."""

    ENTRIES = (
        ("Channels: add a channel", "add", "An Apprise URL: mailto://, tgram://, ntfys://, …"),
        ("Channels: send a test notification", "test", "To the selected channel, now"),
        ("Channels: remove the selected channel", "remove_channel", "Its pending deliveries die"),
        ("Channels: remove the selected Web Push device", "remove_device", "Unsubscribe it"),
        ("Channels: show every user's channels / only mine", "toggle_all", "Admins only"),
        ("Channels: refresh", "refresh", "Load the channels again"),
    )


class ChannelsScreen(AdminScreen):
    COMMANDS = {ChannelsCommands}
    BINDINGS = [
        Binding("n", "add", "Add"),
        Binding("t", "test", "Test"),
        Binding("d,delete", "remove", "Remove"),
        Binding("a", "toggle_all", "All users"),
        Binding("f5", "refresh", "Refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.show_all = False
        self.channels: dict[str, dict[str, Any]] = {}
        self.devices: dict[str, dict[str, Any]] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("Channels", id="channels-title", classes="section-title")
        yield DataTable(id="channels-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="channels-detail", markup=False)
        yield Static("", id="channels-status", markup=False)
        yield Static("Web Push devices", id="webpush-title", classes="section-title")
        yield DataTable(id="webpush-table", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#channels-status").display = False
        self.query_one("#channels-table", DataTable).focus()

    # -- loading --------------------------------------------------------------------

    async def load(self) -> None:
        params = {"all": "true"} if self.show_all else None

        def fetch(c: Client) -> tuple[list[dict], list[dict] | None]:
            chans = c.request("GET", "/v1/channels", params=params) or {}
            try:
                subs = c.request("GET", "/v1/webpush/subscriptions") or {}
            except ClientError as exc:
                if exc.status != 404:  # 404: the webpush plugin is not loaded
                    raise
                return chans.get("channels") or [], None
            return chans.get("channels") or [], subs.get("subscriptions") or []

        try:
            found = await self.api(fetch)
        except ClientError as exc:
            if exc.status == 403 and self.show_all:
                self.show_all = False
                self.notify("Only admins see every user's channels.", severity="warning")
                self.reload()
            else:
                self.notify(f"Loading channels: {exc}", severity="error", timeout=8)
            return
        self.show_channels(found[0])
        self.show_devices(found[1])

    def _key(self, ch: dict[str, Any]) -> str:
        return f"{ch['user']}/{ch['name']}"

    def show_channels(self, channels: list[dict[str, Any]]) -> None:
        table = self.query_one("#channels-table", DataTable)
        columns = ["Name", "Kind", "State", "Target", "Last success", "Last error"]
        if self.show_all:
            columns.insert(1, "User")
        self.channels = {}
        rows = []
        for ch in channels:
            key = self._key(ch)
            self.channels[key] = ch
            row: list[Text] = [
                plain(ch["name"]),
                plain(ch["kind"]),
                self._state(ch),
                plain(_target(ch), 24),
                plain(short_time(ch.get("last_success_at")) if ch.get("last_success_at") else "-"),
                plain(ch.get("last_error") or "", 20),
            ]
            if self.show_all:
                row.insert(1, plain(ch["user"]))
            rows.append((key, row))
        fill_table(table, columns, rows)
        whose = "Every user's channels" if self.show_all else "Your channels"
        self.query_one("#channels-title", Static).update(f"{whose} ({len(channels)})")
        if not channels:
            self.query_one("#channels-detail", Static).update(
                "No channels yet: press n to add one (an Apprise URL such as "
                "mailto://…, tgram://…, ntfys://…)."
            )
        else:
            self._show_detail()

    def _state(self, ch: dict[str, Any]) -> Text:
        if not ch.get("available", True):
            return self.themed("unavailable", "error")
        if not ch.get("enabled", True):
            return self.themed("disabled", "warning")
        ok, err = ch.get("last_success_at"), ch.get("last_error_at")
        if err and (not ok or err > ok):
            return self.themed("failing", "error", bold=True)
        if ok:
            return self.themed("ok", "success")
        return plain("untested")

    def show_devices(self, subs: list[dict[str, Any]] | None) -> None:
        table = self.query_one("#webpush-table", DataTable)
        headers = ["Device", "Push service", "Channel", "Subscribed", "Last error"]
        self.devices = {}
        title = self.query_one("#webpush-title", Static)
        if subs is None:
            fill_table(table, headers, [])
            title.update("Web Push devices — the webpush plugin is not loaded")
            return
        rows = []
        for sub in subs:
            key = str(sub["id"])
            self.devices[key] = sub
            cells = [
                plain(_device(sub.get("user_agent") or ""), 28),
                plain(sub.get("endpoint_origin") or "", 30),
                plain(sub.get("name")),
                plain(short_time(sub.get("created_at"))),
                plain(sub.get("last_error") or "", 24),
            ]
            rows.append((key, cells))
        fill_table(table, headers, rows)
        title.update(
            f"Web Push devices ({len(subs)}) — subscribe a browser from the web page"
            if subs
            else "Web Push devices — none: subscribe a browser from the web page"
        )

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "channels-table":
            self._show_detail()

    def _show_detail(self) -> None:
        ch = self.selected_channel()
        detail = self.query_one("#channels-detail", Static)
        if ch is None:
            detail.update("")
            return
        parts = [f"{ch['name']} ({ch['kind']}, {ch['user']}): {_target(ch) or '-'}"]
        if ch.get("last_error"):
            when = short_time(ch.get("last_error_at"))
            parts.append(f"last error {when}: {ch['last_error']}")
        detail.update("\n".join(parts))

    # -- selection ------------------------------------------------------------------

    def selected_channel(self) -> dict[str, Any] | None:
        key = selected_key(self.query_one("#channels-table", DataTable))
        return self.channels.get(key) if key else None

    def selected_device(self) -> dict[str, Any] | None:
        key = selected_key(self.query_one("#webpush-table", DataTable))
        return self.devices.get(key) if key else None

    def _owner(self, ch: dict[str, Any]) -> dict[str, str] | None:
        """``?user=`` for a channel of another user (shown with 'all users')."""
        return {"user": ch["user"]} if self.show_all else None

    def set_status(self, text: str, kind: str = "") -> None:
        status = self.query_one("#channels-status", Static)
        status.update(text)
        status.set_classes(kind)
        status.display = bool(text)

    # -- actions --------------------------------------------------------------------

    def action_add(self) -> None:
        fields = [
            FormField("name", "Name", placeholder="e.g. email, phone, chat"),
            FormField(
                "url",
                "Apprise URL",
                placeholder="mailtos://user:pass@smtp.example.org/to@example.org",
                hint="Any service Apprise knows; secrets are stored, never shown again.",
            ),
        ]
        if self.show_all:
            fields.append(FormField("user", "For user", placeholder="(yourself)"))

        async def submit(values: dict[str, Any]) -> dict:
            body = {k: v for k, v in values.items() if v}
            body.setdefault("name", "")
            body.setdefault("url", "")
            return await self.api(lambda c: c.request("POST", "/v1/channels", json_body=body))

        def added(channel: dict | None) -> None:
            if channel:
                self.set_status(f"Added channel {channel['name']}: press t to send it a test.")
                self.reload()

        self.app.push_screen(FormDialog("Add a channel", fields, submit), added)

    def action_test(self) -> None:
        ch = self.selected_channel()
        if ch is None:
            self.notify("No channel selected.", severity="warning")
            return
        self._test(ch)

    @work(group="channels-test")
    async def _test(self, ch: dict[str, Any]) -> None:
        name, params = ch["name"], self._owner(ch)
        self.set_status(f"Sending a test to {name}…")
        result = await self.api_or_notify(
            lambda c: c.request("POST", f"/v1/channels/{name}/test", params=params),
            f"Testing {name}",
        )
        if result is None:
            self.set_status("")
            return
        if result.get("ok"):
            self.set_status(f"Test sent to {name}.", "success")
        else:
            again = "a retry may succeed" if result.get("retryable") else "it will not work as is"
            self.set_status(f"Test of {name} failed ({again}): {result.get('error')}", "error")
        self.reload()

    def action_remove(self) -> None:
        if self.focused is self.query_one("#webpush-table"):
            self.action_remove_device()
        else:
            self.action_remove_channel()

    def action_remove_channel(self) -> None:
        ch = self.selected_channel()
        if ch is None:
            self.notify("No channel selected.", severity="warning")
            return
        name, params = ch["name"], self._owner(ch)

        async def remove() -> None:
            done = await self.api_or_notify(
                lambda c: c.request("DELETE", f"/v1/channels/{name}", params=params) or True,
                f"Removing {name}",
            )
            if done:
                self.set_status(f"Removed channel {name}.")
                self.reload()

        self._confirm(
            f"Remove the channel {name} of {ch['user']}? Its pending deliveries become dead.",
            remove,
        )

    def action_remove_device(self) -> None:
        sub = self.selected_device()
        if sub is None:
            self.notify("No Web Push device selected.", severity="warning")
            return
        sid = sub["id"]

        async def remove() -> None:
            done = await self.api_or_notify(
                lambda c: c.request("DELETE", f"/v1/webpush/subscriptions/{sid}") or True,
                "Removing the device",
            )
            if done:
                self.set_status(f"Removed Web Push device {sub['name']}.")
                self.reload()

        device = _device(sub.get("user_agent") or "") or sub["name"]
        self._confirm(f"Stop pushing to {device} ({sub.get('endpoint_origin')})?", remove)

    def _confirm(self, question: str, then: Any) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                self.run_worker(then(), group="channels-remove")

        self.app.push_screen(ConfirmDialog(question), answered)

    def action_toggle_all(self) -> None:
        self.show_all = not self.show_all
        self.reload()


def _target(channel: dict[str, Any]) -> str:
    """Where a channel sends to, as the daemon shows it (secrets masked)."""
    cfg = channel.get("config") or {}
    # a registered app: "Pixel 8 · Example (ab12cd…ef34)"
    if channel.get("kind") in ("fcm", "apns"):
        named = " · ".join(str(cfg[k]) for k in ("label", "app") if cfg.get(k))
        return f"{named} ({cfg['token']})" if cfg.get("token") else named
    if cfg.get("url") or cfg.get("endpoint_origin"):
        return str(cfg.get("url") or cfg.get("endpoint_origin"))
    return ", ".join(f"{k}={v}" for k, v in cfg.items())


def _device(user_agent: str) -> str:
    """A short name for a browser from its user agent: "Firefox on Linux"."""
    ua = user_agent
    browser = next(
        (
            name
            for key, name in (
                ("Edg/", "Edge"),
                ("OPR/", "Opera"),
                ("Firefox/", "Firefox"),
                ("Chrome/", "Chrome"),
                ("Safari/", "Safari"),
            )
            if key in ua
        ),
        "",
    )
    system = next(
        (
            name
            for key, name in (
                ("Android", "Android"),
                ("iPhone", "iOS"),
                ("iPad", "iPadOS"),
                ("Windows", "Windows"),
                ("Mac OS X", "macOS"),
                ("Linux", "Linux"),
                ("CrOS", "ChromeOS"),
            )
            if key in ua
        ),
        "",
    )
    if browser and system:
        return f"{browser} on {system}"
    return browser or system or ua or "unknown device"
