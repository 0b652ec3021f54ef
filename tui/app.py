"""The notifyd terminal interface: a Textual app that is a client of the HTTP API.

It never runs inside the daemon: it talks to it over the Unix socket (where it acts
as the socket's admin) or over TCP with a token, with the same synchronous
:class:`notifyd.client.Client` the CLI uses, called from worker threads so the UI
never blocks. Screens are Textual modes: one per area, switched with the number
keys or the command palette.

    make_app(TuiConfig(url="https://notify.example.org", token="nfy_…")).run()
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from textual.app import App
from textual.binding import Binding

from notifyd.client import Client, ClientError

from .screens.channels import ChannelsScreen
from .screens.deliveries import DeliveriesScreen
from .screens.inbox import InboxScreen
from .screens.preferences import PreferencesScreen
from .screens.users import UsersScreen

T = TypeVar("T")


@dataclass
class TuiConfig:
    """Where the daemon is; empty fields fall back to NOTIFYD_SOCKET / NOTIFYD_URL /
    NOTIFYD_TOKEN and then to the default sockets, exactly as for the CLI."""

    socket_path: str | None = None
    url: str | None = None
    token: str | None = None
    #: seconds per HTTP request (the live stream has no read timeout)
    timeout: float = 10.0


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
    ]

    def __init__(self, config: TuiConfig | None = None) -> None:
        super().__init__()
        self.config = config or TuiConfig()
        self.client = Client(
            self.config.socket_path, self.config.url, self.config.token, self.config.timeout
        )

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

    def on_unmount(self) -> None:
        self.client.close()


def make_app(config: TuiConfig | None = None, **options: Any) -> NotifydApp:
    """The app, for ``run()`` or for tests (``async with make_app(...).run_test()``)."""
    return NotifydApp(config or TuiConfig(**options))


def main() -> None:
    """Entry point of ``notifyd tui`` (the connection comes from the environment)."""
    make_app().run()
