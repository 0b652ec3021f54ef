"""Deliveries: the outbox by state, with errors, retries and the stats summary.

``GET /v1/deliveries?state=`` fills the table (admins see every user's), ``GET
/v1/stats`` the summary by channel kind; a retry (``POST
/v1/deliveries/{id}/retry``) makes a pending or dead delivery due now.
"""

from __future__ import annotations

from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Static, Tab, Tabs

from notifyd.cli.format import plural, short_time
from notifyd.client import Client

from .admin_base import AdminScreen, ScreenCommands, fill_table, plain, selected_key

STATES = ("all", "pending", "sent", "dead")
STATE_COLOURS = {"pending": "warning", "sent": "success", "dead": "error"}
LIMIT = 200


class DeliveriesCommands(ScreenCommands):
    """Command palette entries of the deliveries screen."""

    ENTRIES = (
        ("Deliveries: show all", "filter('all')", "Every state"),
        ("Deliveries: show pending", "filter('pending')", "Due, held for a digest, or in flight"),
        ("Deliveries: show sent", "filter('sent')", "Delivered"),
        ("Deliveries: show dead", "filter('dead')", "Failed for good or out of attempts"),
        ("Deliveries: retry the selected delivery", "retry", "Make it due now"),
        ("Deliveries: retry every dead delivery shown", "retry_dead", "Make them all due now"),
        ("Deliveries: refresh", "refresh", "Load deliveries and stats again"),
    )


class DeliveriesScreen(AdminScreen):
    COMMANDS = {DeliveriesCommands}
    BINDINGS = [
        Binding("f", "next_filter", "Filter"),
        Binding("r", "retry", "Retry"),
        Binding("R", "retry_dead", "Retry dead"),
        Binding("f5", "refresh", "Refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.state = "all"
        self.deliveries: dict[str, dict[str, Any]] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("Delivery stats", classes="section-title")
        yield DataTable(id="stats-table", cursor_type="none", show_cursor=False)
        yield Static("", id="stats-totals", markup=False)
        yield Tabs(*(Tab(s.capitalize(), id=f"state-{s}") for s in STATES), id="state-tabs")
        yield DataTable(id="deliveries-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="delivery-detail", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#deliveries-table", DataTable).focus()

    # -- loading --------------------------------------------------------------------

    async def load(self) -> None:
        state = None if self.state == "all" else self.state

        def fetch(c: Client) -> tuple[list[dict], dict]:
            found = c.request("GET", "/v1/deliveries", params={"state": state, "limit": LIMIT})
            stats = c.request("GET", "/v1/stats")
            return (found or {}).get("deliveries") or [], stats or {}

        found = await self.api_or_notify(fetch, "Loading deliveries")
        if found is None:
            return
        self.show_deliveries(found[0])
        self.show_stats(found[1])

    def show_stats(self, stats: dict[str, Any]) -> None:
        totals = {"pending": 0, "sent": 0, "dead": 0}
        rows = []
        for kind, row in sorted((stats.get("by_channel") or {}).items()):
            for state in totals:
                totals[state] += int(row.get(state) or 0)
            rate = row.get("read_rate")
            cells = [
                plain(kind),
                *(plain(row.get(k) or 0) for k in ("pending", "sent", "dead", "read", "clicked")),
                plain("-" if rate is None else f"{rate:.0%}"),
            ]
            rows.append((None, cells))
        if not rows:
            rows.append((None, [plain("(no deliveries yet)"), *(plain("") for _ in range(6))]))
        headers = ["Channel kind", "Pending", "Sent", "Dead", "Read", "Clicked", "Read rate"]
        fill_table(self.query_one("#stats-table", DataTable), headers, rows)
        self.query_one("#stats-totals", Static).update(
            " · ".join(f"{n} {state}" for state, n in totals.items())
        )

    def show_deliveries(self, deliveries: list[dict[str, Any]]) -> None:
        self.deliveries = {}
        rows = []
        for d in deliveries:
            key = str(d["id"])
            self.deliveries[key] = d
            when = d.get("sent_at") if d["state"] == "sent" else d.get("next_attempt_at")
            cells = [
                plain(d["id"]),
                plain(d["event_id"]),
                plain(d["user"]),
                plain(d.get("channel") or "(removed)"),
                self.themed(d["state"], STATE_COLOURS.get(d["state"], "foreground")),
                plain(d.get("attempts")),
                plain(short_time(when) if when and d["state"] != "dead" else "-"),
                plain(d.get("last_error") or "", 32),
            ]
            rows.append((key, cells))
        headers = ["ID", "Event", "User", "Channel", "State", "Tries", "Next / sent", "Error"]
        fill_table(self.query_one("#deliveries-table", DataTable), headers, rows)
        self._show_detail()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "deliveries-table":
            self._show_detail()

    def _show_detail(self) -> None:
        detail = self.query_one("#delivery-detail", Static)
        d = self.selected()
        if d is None:
            which = "" if self.state == "all" else f"{self.state} "
            detail.update(f"No {which}deliveries.")
            return
        text = (
            f"Delivery {d['id']} of event {d['event_id']} to {d['user']}/"
            f"{d.get('channel') or '(removed)'} ({d.get('kind') or '-'}): {d['state']} after "
            f"{plural(int(d.get('attempts') or 0), 'attempt')}"
        )
        if d.get("last_error"):
            text += f"\n{d['last_error']}"
        detail.update(text)

    def selected(self) -> dict[str, Any] | None:
        key = selected_key(self.query_one("#deliveries-table", DataTable))
        return self.deliveries.get(key) if key else None

    # -- filter ---------------------------------------------------------------------

    def on_tabs_tab_activated(self, event: Tabs.TabActivated) -> None:
        state = (event.tab.id or "state-all").removeprefix("state-")
        if state != self.state:
            self.state = state
            self.reload()

    def action_filter(self, state: str) -> None:
        self.query_one("#state-tabs", Tabs).active = f"state-{state}"

    def action_next_filter(self) -> None:
        self.action_filter(STATES[(STATES.index(self.state) + 1) % len(STATES)])

    # -- retry ----------------------------------------------------------------------

    def action_retry(self) -> None:
        d = self.selected()
        if d is None:
            self.notify("No delivery selected.", severity="warning")
            return
        self._retry([d["id"]])

    def action_retry_dead(self) -> None:
        dead = [d["id"] for d in self.deliveries.values() if d["state"] == "dead"]
        if not dead:
            self.notify("No dead deliveries shown.", severity="warning")
            return
        self._retry(dead)

    @work(group="deliveries-retry")
    async def _retry(self, ids: list[int]) -> None:
        def retry(c: Client) -> list[int]:
            return [c.request("POST", f"/v1/deliveries/{i}/retry")["id"] for i in ids]

        done = await self.api_or_notify(retry, "Retrying")
        if done:
            which = f"Delivery {done[0]}" if len(done) == 1 else f"{len(done)} deliveries"
            self.notify(f"{which} queued again.")
        self.reload()
