"""The connection indicator: is the live stream connected, and if not, why.

It watches the app's ``connection`` reactive (a :class:`~notifyd.tui.live.ConnectionStatus`
that the live feed updates) and shows one line: ``● connected``, ``○ connecting…``,
``◌ reconnecting in 2 s — <reason>`` or ``✕ disconnected — <reason>``. The state is
also a CSS class (``-connected``, ``-reconnecting``…) so the stylesheet colours it
with the theme's success/warning/error colours.
"""

from __future__ import annotations

from textual.widgets import Static

from ..live import ConnectionStatus

STATES = ("idle", "connecting", "connected", "reconnecting", "failed")


def describe(status: ConnectionStatus) -> str:
    """The indicator's text for ``status``."""
    if status.state == "connected":
        return "● connected" + (" (resumed)" if status.connects > 1 else "")
    if status.state == "connecting":
        return "○ connecting…"
    if status.state == "reconnecting":
        wait = f" in {status.retry_in:.0f} s" if status.retry_in and status.retry_in >= 1 else ""
        return f"◌ reconnecting{wait} — {status.reason}"
    if status.state == "failed":
        return f"✕ disconnected — {status.reason}"
    return "○ not connected"


class ConnectionIndicator(Static):
    """One line showing the live stream's state; the full reason is in the tooltip."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(describe(ConnectionStatus()), id=id, markup=False)

    def on_mount(self) -> None:
        self.watch(self.app, "connection", self._show, init=True)

    def _show(self, status: ConnectionStatus) -> None:
        self.update(describe(status))
        target = getattr(getattr(self.app, "client", None), "target", "the daemon")
        self.tooltip = status.reason or f"live stream from {target}"
        for state in STATES:
            self.set_class(state == status.state, f"-{state}")
