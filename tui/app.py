"""The notifyd terminal interface: a Textual app that is a client of the HTTP API.

It never runs inside the daemon: it talks to it over the Unix socket (where it acts
as the socket's admin) or over TCP with a token, with the same synchronous
:class:`notifyd.client.Client` the CLI uses, called from worker threads so the UI
never blocks. Screens are Textual modes: one per area, switched with the number
keys or the command palette.

The live stream (:mod:`notifyd.tui.live`) is an async worker of the app on
``httpx.AsyncClient``; the app turns its messages into the ``connection`` reactive
(for the connection indicator) and the ``live_frames`` signal (for the screens that
show events), and cancels it (and waits for it) when it exits.

    make_app(TuiConfig(url="https://notify.example.org", token="nfy_…")).run()
"""

from __future__ import annotations

import asyncio
import webbrowser
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.reactive import reactive
from textual.screen import Screen
from textual.signal import Signal
from textual.worker import Worker, WorkerCancelled, WorkerFailed

from notifyd.client import Client, ClientError

from .live import ConnectionStatus, LiveFeed
from .screens.channels import ChannelsScreen
from .screens.deliveries import DeliveriesScreen
from .screens.inbox import InboxScreen
from .screens.preferences import PreferencesScreen
from .screens.users import UsersScreen

T = TypeVar("T")

LIVE_STOP_TIMEOUT = 5.0  # seconds the app waits on exit for the live feed to close


@dataclass
class TuiConfig:
    """Where the daemon is; empty fields fall back to NOTIFYD_SOCKET / NOTIFYD_URL /
    NOTIFYD_TOKEN and then to the default sockets, exactly as for the CLI."""

    socket_path: str | None = None
    url: str | None = None
    token: str | None = None
    #: seconds per HTTP request (the live stream has no read timeout)
    timeout: float = 10.0
    #: events per history page (the inbox loads the next page as you scroll)
    page_size: int = 100
    #: open links in a web browser when a graphical one is available; else show them
    browser: bool = True
    #: the current time, for relative times ("5m"); tests pin it
    clock: Callable[[], datetime] | None = None


class NotifydApp(App[None]):
    CSS_PATH = "notifyd.tcss"
    TITLE = "notifyd"
    MODES = {
        "inbox": InboxScreen,
        "channels": ChannelsScreen,
        "preferences": PreferencesScreen,
        "deliveries": DeliveriesScreen,
        "users": UsersScreen,
    }
    DEFAULT_MODE = "inbox"
    BINDINGS = [
        Binding("1", "switch_mode('inbox')", "Inbox"),
        Binding("2", "switch_mode('channels')", "Channels"),
        Binding("3", "switch_mode('preferences')", "Prefs"),
        Binding("4", "switch_mode('deliveries')", "Deliveries"),
        Binding("5", "switch_mode('users')", "Users"),
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "toggle_help", "Keys", show=False),
    ]

    #: the live stream's state, shown by every ConnectionIndicator
    connection: reactive[ConnectionStatus] = reactive(ConnectionStatus)

    def __init__(self, config: TuiConfig | None = None) -> None:
        super().__init__()
        self.config = config or TuiConfig()
        self.client = self.new_client()
        #: every stream frame (``event`` and ``state``), published on the app's thread
        self.live_frames: Signal[dict] = Signal(self, "live-frames")
        self.live = LiveFeed(self, self.client)
        self.live_worker: Worker[None] | None = None

    def new_client(self) -> Client:
        """A client for this app's daemon."""
        config = self.config
        return Client(config.socket_path, config.url, config.token, config.timeout)

    def now(self) -> datetime:
        return self.config.clock() if self.config.clock else datetime.now(UTC)

    def start_live(self, since: int | None) -> None:
        """Follow the stream after event ``since`` (None: from now on); once per app."""
        if self.live_worker is None:
            self.live_worker = self.run_worker(self.live.run(since), name="live feed", group="live")

    async def stop_live(self) -> None:
        """Cancel the live feed and wait (at most ``LIVE_STOP_TIMEOUT`` s, so that
        exiting never hangs) until it has closed its connection."""
        worker = self.live_worker
        if worker is None or worker.is_finished:
            return
        worker.cancel()
        try:
            await asyncio.wait_for(worker.wait(), LIVE_STOP_TIMEOUT)
        except (WorkerCancelled, WorkerFailed, TimeoutError):
            pass

    def on_live_feed_frame(self, message: LiveFeed.Frame) -> None:
        self.live_frames.publish(message.frame)

    def on_live_feed_status_changed(self, message: LiveFeed.StatusChanged) -> None:
        self.connection = message.status

    async def api(self, call: Callable[[Client], T]) -> T:
        """Run ``call(client)`` in a worker thread and return its result.

        Raises:
            ClientError: what the daemon (or the transport) said; screens show it.
        """
        return await asyncio.to_thread(call, self.client)

    async def api_or_notify(self, call: Callable[[Client], T], what: str) -> T | None:
        """Like :meth:`api`, but a failure becomes an error toast and None."""
        try:
            return await self.api(call)
        except ClientError as exc:
            self.notify(f"{what}: {exc}", severity="error", timeout=8)
            return None

    def open_link(self, url: str) -> None:
        """Open ``url`` in a graphical browser, or show it (and copy it) when there is
        none: a console browser would fight this app for the terminal."""
        if self.config.browser and _graphical_browser():
            try:
                if webbrowser.open(url):
                    self.notify(url, title="Opened in the browser", timeout=4)
                    return
            except webbrowser.Error:
                pass
        self.copy_to_clipboard(url)
        self.notify(url, title="Link (copied to the clipboard)", timeout=15)

    def action_toggle_help(self) -> None:
        if self.screen.query("HelpPanel"):
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for key, (mode, help_text) in enumerate(_MODE_HELP.items(), start=1):
            yield SystemCommand(
                f"Go to {mode}", f"{help_text} ({key})", lambda mode=mode: self.switch_mode(mode)
            )

    async def on_unmount(self) -> None:
        await self.stop_live()
        self.client.close()


_MODE_HELP = {
    "inbox": "Notifications, live",
    "channels": "Delivery channels",
    "preferences": "Delivery rules, quiet hours, digests",
    "deliveries": "The delivery outbox",
    "users": "Users, tokens and ACL",
}


def _graphical_browser() -> bool:
    """Whether webbrowser would start a browser that does not need this terminal."""
    try:
        browser = webbrowser.get()
    except webbrowser.Error:
        return False
    # console browsers (lynx, w3m, www-browser, elinks) run in the foreground
    if isinstance(browser, webbrowser.GenericBrowser):
        return isinstance(browser, webbrowser.BackgroundBrowser)
    if isinstance(browser, webbrowser.UnixBrowser):
        return bool(browser.background)
    return True


def make_app(config: TuiConfig | None = None, **options: Any) -> NotifydApp:
    """The app, for ``run()`` or for tests (``async with make_app(...).run_test()``)."""
    return NotifydApp(config or TuiConfig(**options))


def main() -> None:
    """Entry point of ``notifyd tui`` (the connection comes from the environment)."""
    from rich.console import Console

    app = make_app()
    if Console().color_system in ("standard", "windows"):
        # 16 colours: use the terminal's own palette rather than approximations
        app.theme = "ansi-dark"
    app.run()
