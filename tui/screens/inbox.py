"""The inbox: history newest first, live updates, filters, read state, links.

How the list stays complete without loading everything:

* On mount, one worker call asks for the newest visible id (the stream cursor) and
  then the first page; the live feed starts after that cursor, so an event is either
  in the page or on the stream (both, at worst: rows are keyed by id).
* Older pages come with ``before=<next>`` when the table says the cursor or the
  viewport is near the last loaded row (:class:`EventTable.NearEnd`).
* Stream frames are applied in small batches: new events go to the top when they
  match the filters, a ``collapse_key`` replaces the older event, ``state`` frames
  (this device's changes and other devices') update or remove rows.
* After a reconnect (a drop, a daemon restart, a ``resync``) the feed resumes with
  ``Last-Event-ID`` (nothing is missed, nothing doubled), and the read state of
  the loaded rows is fetched again, since state frames are not
  replayed.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.containers import Horizontal
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Header, Input, Static

from notifyd.client import Client, ClientError

from ..live import ConnectionStatus
from ..widgets.connection import ConnectionIndicator
from ..widgets.event_detail import EventDetail
from ..widgets.event_table import EventTable, parse_time
from ..widgets.filter_bar import PRIORITY_CHOICES, FilterBar, Filters

# what a state frame (or a local change) does to an event
CHANGES: dict[str, dict[str, bool]] = {
    "read": {"read": True},
    "click": {"read": True},
    "unread": {"read": False},
    "seen": {"seen": True},
    "archive": {"archived": True},
    "unarchive": {"archived": False},
}
EVENT_DEFAULTS = {"read": False, "seen": False, "archived": False, "clicked_at": None}
FRAME_BATCH_DELAY = 0.03  # seconds: a burst of frames (a replay) is applied at once
DETAIL_DELAY = 0.08  # seconds: scrolling fast (key repeat) does not render every body on the way
RECONCILE_PAGES = 10  # at most this many 500-event requests after a reconnect
COUNT_DELAY = 0.2  # seconds: a burst of changes asks for the unread count once


def newest_id(client: Client) -> int:
    """The newest event id the caller can see, archived ones included (0 if none)."""
    events = client.events(limit=1, archived="include").get("events") or []
    return int(events[0]["id"]) if events else 0


class InboxCommands(Provider):
    """Command palette entries for every inbox action."""

    def _commands(self) -> list[tuple[str, str, str]]:
        commands = [
            (
                "Mark read / unread",
                "toggle_read",
                "Toggle the read state of the selected notification (r)",
            ),
            ("Mark all read", "mark_all_read", "Everything matching the filters (R)"),
            (
                "Archive / unarchive",
                "toggle_archive",
                "Move the selected notification to the archive or back (a)",
            ),
            ("Open link", "open_link", "Open the click URL of the selected notification (o)"),
            (
                "Open attachment",
                "open_attachment",
                "Open (or show how to download) the selected notification's attachment (O)",
            ),
            ("Search", "search", "Full-text search over titles and bodies (/)"),
            ("Filter by topic", "focus_filters", "A topic name or pattern such as ci/* (f)"),
            ("Show unread only / all", "toggle_unread", "Toggle the unread filter (u)"),
            ("Show the archive / the inbox", "toggle_archive_view", "Toggle the archive view (A)"),
            ("Clear filters", "clear_filters", "Show everything again (x)"),
            ("Relative / absolute times", "toggle_times", "Toggle how times are shown (t)"),
            ("Reload", "reload", "Load the first page again (ctrl+r)"),
        ]
        commands.append(("Any priority", "min_priority(0)", "Remove the priority filter"))
        for label, value in PRIORITY_CHOICES:
            commands.append((f"Priority {label}", f"min_priority({value})", "Filter by priority"))
        return commands

    def _run(self, action: str) -> Callable[[], Any]:
        return partial(self.screen.run_action, action)

    async def discover(self) -> Hits:
        for name, action, help_text in self._commands():
            yield DiscoveryHit(name, self._run(action), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, action, help_text in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), self._run(action), help=help_text)


class InboxScreen(Screen):
    """Notifications, newest first, with a detail pane and live updates."""

    COMMANDS = {InboxCommands}
    BINDINGS = [
        Binding("r", "toggle_read", "Read/unread"),
        Binding("R", "mark_all_read", "All read"),
        Binding("a", "toggle_archive", "Archive"),
        Binding("o", "open_link", "Open"),
        # shown in the footer only while the selected notification has an attachment
        Binding("O", "open_attachment", "Attachment"),
        Binding("slash", "search", "Search"),
        Binding("u", "toggle_unread", "Unread"),
        Binding("f", "focus_filters", "Filter", show=False),
        Binding("A", "toggle_archive_view", "Archive view", show=False),
        Binding("x", "clear_filters", "Clear filters", show=False),
        Binding("t", "toggle_times", "Times", show=False),
        Binding("ctrl+r", "reload", "Reload", show=False),
        Binding("escape", "focus_table", "Back to the list", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.filters = Filters()
        self.next_before: int | None = None
        self.exhausted = False
        self.loaded = False
        self.fetching = False
        self.error = ""
        self.generation = 0
        self._pending_frames: list[dict] = []
        self._frame_timer: Timer | None = None
        self._detail_timer: Timer | None = None
        self._count_timer: Timer | None = None
        #: unread events matching the filters, from GET /v1/inbox/count (None: unknown)
        self.unread_count: int | None = None

    # --- layout --------------------------------------------------------------

    def compose(self) -> ComposeResult:
        clock = self.app.now  # type: ignore[attr-defined]
        yield Header()
        yield FilterBar(id="filters")
        yield EventTable(clock=clock, id="events")
        yield EventDetail(clock=clock, id="detail")
        with Horizontal(id="status-bar"):
            yield ConnectionIndicator(id="connection")
            yield Static("", id="inbox-status", markup=False)
        yield Footer()

    @property
    def table(self) -> EventTable:
        return self.query_one(EventTable)

    @property
    def detail(self) -> EventDetail:
        return self.query_one(EventDetail)

    @property
    def page_size(self) -> int:
        return int(self.app.config.page_size)  # type: ignore[attr-defined]

    def on_mount(self) -> None:
        self.app.live_frames.subscribe(self, self._on_frame)  # type: ignore[attr-defined]
        self.watch(self.app, "connection", self._on_connection, init=False)
        self.table.focus()
        self._show_status()
        self._start()

    # --- loading -------------------------------------------------------------

    @work(group="start")
    async def _start(self) -> None:
        """First page, then the live feed after the newest id seen at that time."""
        filters, limit = self.filters, self.page_size
        self.fetching = True
        self._show_status()
        try:
            cursor, page = await self.app.api(  # type: ignore[attr-defined]
                lambda c: (newest_id(c), c.events(**filters.params(), limit=limit))
            )
        except ClientError as exc:
            # the feed keeps trying; the first connection reloads (see _on_connection)
            self.fetching = False
            self.error = str(exc)
            self._show_status()
            self._show_detail()
            self.app.start_live(None)  # type: ignore[attr-defined]
            return
        if filters == self.filters:  # else a reload with the new filters is under way
            self._show_page(page, reset=True)
        self.app.start_live(cursor)  # type: ignore[attr-defined]

    def reload(self) -> None:
        """Load the first page again (new filters, or a first connection)."""
        self.generation += 1
        self.unread_count = None
        self.fetching = False
        self.workers.cancel_group(self, "history")
        self._load_page(reset=True)

    @work(group="history")
    async def _load_page(self, reset: bool = False) -> None:
        if not reset and (self.fetching or self.exhausted or not self.loaded):
            return
        generation = self.generation
        filters, limit = self.filters, self.page_size
        before = None if reset else self.next_before
        self.fetching = True
        self._show_status()
        try:
            page = await self.app.api(  # type: ignore[attr-defined]
                lambda c: c.events(**filters.params(), before=before, limit=limit)
            )
        except ClientError as exc:
            if generation == self.generation:
                self.fetching = False
                self.error = str(exc)
                if reset:  # the rows shown were for other filters
                    self.table.set_events([])
                    self._show_detail()
                self._show_status()
            return
        if generation == self.generation:
            self._show_page(page, reset=reset)

    def _show_page(self, page: dict, *, reset: bool) -> None:
        events = [{**EVENT_DEFAULTS, **ev} for ev in page.get("events") or []]
        self.fetching = False
        self.loaded = True
        self.error = ""
        self.next_before = page.get("next")
        self.exhausted = self.next_before is None
        if reset:
            self.table.set_events(events)
            self.table.move_cursor(row=0)
            self._show_detail()
            self._recount()
        else:
            self.table.append_events(events)
        self._show_status()

    @on(EventTable.NearEnd)
    def _near_end(self) -> None:
        self._load_page()

    @on(FilterBar.Changed)
    def _filters_changed(self, changed: FilterBar.Changed) -> None:
        self.filters = changed.filters
        self.reload()

    # --- live frames ---------------------------------------------------------

    def _on_frame(self, frame: dict) -> None:
        self._pending_frames.append(frame)
        if self._frame_timer is None:
            self._frame_timer = self.set_timer(FRAME_BATCH_DELAY, self._apply_frames)

    def _apply_frames(self) -> None:
        self._frame_timer = None
        frames, self._pending_frames = self._pending_frames, []
        if not self.query(EventTable) or not self.query("#inbox-status"):
            return  # frames for a screen being torn down (see _show_status)
        new: dict[int, dict] = {}
        for frame in frames:
            kind = frame.get("type")
            if kind == "event" and isinstance(frame.get("event"), dict):
                event = {**EVENT_DEFAULTS, **frame["event"]}
                if not isinstance(event.get("id"), int) or self._expired(event):
                    continue
                self._collapse(event, new)
                if self.loaded and self.filters.matches(event):
                    new[event["id"]] = event
            elif kind == "state" and frame.get("all"):
                self._read_all(frame.get("upto"), frame.get("filter") or {}, new)
            elif kind == "state" and isinstance(frame.get("id"), int):
                self._state(frame["id"], str(frame.get("state")), new)
        if new:
            self.table.insert_events(new.values())
        if frames:
            self._recount()
        self._show_status()
        self._refresh_detail()

    def _expired(self, event: dict) -> bool:
        expires = event.get("expires_at")
        if not expires:
            return False
        when = parse_time(expires)
        return when is not None and when <= self.app.now()  # type: ignore[attr-defined]

    def _collapse(self, event: dict, new: dict[int, dict]) -> None:
        """A newer event with the same topic and ``collapse_key`` replaces older ones."""
        key = event.get("collapse_key")
        if not key:
            return
        same = [
            eid
            for eid, other in [*self.table.events.items(), *new.items()]
            if eid < event["id"]
            and other.get("collapse_key") == key
            and other.get("topic") == event.get("topic")
        ]
        for eid in same:
            new.pop(eid, None)
        self.table.remove_events(same)

    def _state(self, event_id: int, state: str, new: dict[int, dict]) -> None:
        changes = CHANGES.get(state)
        if changes is None:
            return
        if event_id in new:
            new[event_id].update(changes)
            return
        event = self.table.events.get(event_id)
        if event is None:
            if state in ("unarchive", "unread"):
                self._fetch_and_show(event_id)
            return
        event = {**event, **changes}
        if state in ("archive", "unarchive") and not self.filters.matches(event):
            self.table.remove_events([event_id])
        else:
            self.table.update_event(event)

    def _read_all(self, upto: Any, flt: dict, new: dict[int, dict]) -> None:
        if not isinstance(upto, int):
            return
        scope = Filters(
            q=str(flt.get("q") or ""),
            topic=str(flt.get("topic") or ""),
            category=str(flt.get("category") or ""),
            min_priority=flt.get("min_priority"),
        )
        for event in [*self.table.events.values(), *new.values()]:
            if event["id"] <= upto and not event["read"] and scope.matches(event, archive=False):
                if event["id"] in new:
                    event["read"] = True
                else:
                    self.table.update_event({**event, "read": True})

    @work(group="fetch")
    async def _fetch_and_show(self, event_id: int) -> None:
        """An event that came back (unarchived, marked unread elsewhere): show it if it
        belongs in the list and inside the loaded range."""
        try:
            event = await self.app.api(  # type: ignore[attr-defined]
                lambda c: c.request("GET", f"/v1/events/{event_id}")
            )
        except ClientError:
            return
        oldest = self.table.oldest_id
        in_range = self.exhausted or (oldest is not None and event_id > oldest)
        if event and in_range and self.filters.matches(event):
            self.table.insert_events([{**EVENT_DEFAULTS, **event}])
            self._show_status()

    def _on_connection(self, status: ConnectionStatus) -> None:
        if status.state != "connected":
            return
        if not self.loaded:
            self.reload()
        elif status.connects > 1:
            self._reconcile()
            if self.error and not self.exhausted:
                self.table.rearm_near_end()  # a page that failed while we were away

    @work(group="reconcile", exclusive=True)
    async def _reconcile(self) -> None:
        """Fetch the read state of the loaded rows again: state frames sent while we
        were disconnected are not replayed."""
        oldest = self.table.oldest_id
        if oldest is None:
            return
        generation = self.generation
        params = {**self.filters.params(), "archived": "include", "since": oldest - 1}
        params.pop("unread", None)

        def fetch(client: Client) -> dict[int, dict]:
            found: dict[int, dict] = {}
            before = None
            for _ in range(RECONCILE_PAGES):
                page = client.events(**params, before=before, limit=500)
                found.update((ev["id"], ev) for ev in page.get("events") or [])
                before = page.get("next")
                if before is None:
                    break
            return found

        try:
            found = await self.app.api(fetch)  # type: ignore[attr-defined]
        except ClientError:
            return
        if generation != self.generation:
            return
        gone = []
        for eid, event in list(self.table.events.items()):
            fresh = found.get(eid)
            if fresh is None or (bool(fresh.get("archived")) != (self.filters.archived == "only")):
                gone.append(eid)
            elif any(fresh.get(k) != event.get(k) for k in ("read", "seen", "archived")):
                self.table.update_event({**event, **fresh})
        self.table.remove_events(gone)
        self._recount()
        self._show_status()
        self._refresh_detail()

    # --- detail --------------------------------------------------------------

    @on(DataTable.RowHighlighted, "#events")
    def _highlighted(self) -> None:
        if self._detail_timer is not None:
            self._detail_timer.stop()
        self._detail_timer = self.set_timer(DETAIL_DELAY, self._show_detail)

    def _show_detail(self) -> None:
        self._detail_timer = None
        event = self.table.current
        if event is None:
            if self.error:
                empty = f"Could not load the inbox: {self.error}"
            elif self.fetching or not self.loaded:
                empty = "Loading…"
            elif self.filters.active:
                empty = "Nothing matches the filters (x clears them)."
            else:
                empty = "No notifications yet."
            self.detail.show(None, empty)
        else:
            self.detail.show(event)
        self.refresh_bindings()  # the attachment key shows only with an attachment

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "open_attachment":
            event = self.table.current if self.query(EventTable) else None
            return event is not None and isinstance(event.get("attachment"), dict)
        return True

    def _refresh_detail(self) -> None:
        """Show the current event again if its state changed (or the list emptied)."""
        event = self.table.current
        shown = self.detail.event
        if event is None or shown is None or event is not shown:
            self._show_detail()

    @on(DataTable.RowSelected, "#events")
    def _selected(self) -> None:
        """Enter: mark the notification read and move into the detail pane."""
        event = self.table.current
        if event is not None and not event["read"]:
            self._set_state(event, "read")
        self.detail.focus()

    # --- actions -------------------------------------------------------------

    def action_toggle_read(self) -> None:
        event = self.table.current
        if event is not None:
            self._set_state(event, "unread" if event["read"] else "read")

    def action_toggle_archive(self) -> None:
        event = self.table.current
        if event is not None:
            self._set_state(event, "unarchive" if event["archived"] else "archive")

    def _set_state(self, event: dict, state: str) -> None:
        """Change the state here at once, then tell the daemon (undone on failure)."""
        before = dict(event)
        self._state(event["id"], state, {})
        self._refresh_detail()
        self._show_status()
        self._send_state(before, state)

    @work(group="state")
    async def _send_state(self, before: dict, state: str) -> None:
        eid = before["id"]
        try:
            await self.app.api(lambda c: c.set_state([eid], state))  # type: ignore[attr-defined]
        except ClientError as exc:
            self._recount()
            self.notify(f"Could not mark #{eid} {state}: {exc}", severity="error", timeout=8)
            if eid in self.table.events:
                self.table.update_event(before)
            elif state in ("archive", "unarchive"):
                self.table.insert_events([before])
            self._refresh_detail()
            return
        self._recount()

    @work(group="state")
    async def action_mark_all_read(self) -> None:
        params = {k: v for k, v in self.filters.params().items() if k not in ("unread", "archived")}
        try:
            result = await self.app.api(  # type: ignore[attr-defined]
                lambda c: c.request("POST", "/v1/inbox/read-all", params=params) or {}
            )
        except ClientError as exc:
            self.notify(f"Could not mark all read: {exc}", severity="error", timeout=8)
            return
        self._read_all(result.get("upto"), params, {})
        self._refresh_detail()
        self._recount()
        count = int(result.get("updated") or 0)
        self.notify(f"Marked {count} notification{'s' if count != 1 else ''} read", timeout=3)

    def action_open_link(self) -> None:
        event = self.table.current
        if event is None:
            return
        if event.get("click"):
            self._open(event, str(event["click"]), None)
            return
        for action in event.get("actions") or []:
            if not action.get("method"):
                self._open(event, str(action.get("url", "")), action)
                return
        if isinstance(event.get("attachment"), dict):
            self.action_open_attachment()
            return
        self.notify("This notification has no link", severity="warning", timeout=3)

    def action_open_attachment(self) -> None:
        event = self.table.current
        if event is not None:
            self._open_attachment(event)

    @on(EventDetail.OpenAttachment)
    def _attachment_chosen(self, message: EventDetail.OpenAttachment) -> None:
        self._open_attachment(message.event)

    def _open_attachment(self, event: dict) -> None:
        """Open the attachment in a browser (or show and copy its URL). Over the
        Unix socket an upload has no address a browser could reach: the TUI shows
        (and copies) a command that downloads it instead."""
        attachment = event.get("attachment")
        if not isinstance(attachment, dict):
            self.notify("This notification has no attachment", severity="warning", timeout=3)
            return
        expires = parse_time(attachment.get("expires_at"))
        if attachment.get("id") and expires is not None and expires <= self.app.now():  # type: ignore[attr-defined]
            self.notify("This attachment has expired", severity="warning", timeout=5)
            return
        client: Client = self.app.client  # type: ignore[attr-defined]
        url = client.attachment_url(attachment)
        if url:
            self.app.open_link(url)  # type: ignore[attr-defined]
            return
        command = client.attachment_fetch_hint(attachment)
        self.app.copy_to_clipboard(command)
        self.notify(
            command,
            title="No browser reaches the daemon's socket: download it with (copied)",
            timeout=20,
        )

    @on(EventDetail.OpenLink)
    def _open_link(self, message: EventDetail.OpenLink) -> None:
        self._open(message.event, message.url, message.action)

    def _open(self, event: dict, url: str, action: dict | None) -> None:
        """Record the click (which marks read) and open the URL. HTTP actions are
        recorded but not run, as in the web page."""
        label = (action or {}).get("label")
        if event["id"] in self.table.events and not event["read"]:
            self._state(event["id"], "read", {})
            self._refresh_detail()
        self._record_click(event["id"], label)
        if action and action.get("method"):
            self.notify(
                f"“{label}” recorded. HTTP actions ({action['method']} {url}) are not run "
                "from the terminal.",
                timeout=8,
            )
        elif url:
            self.app.open_link(url)  # type: ignore[attr-defined]

    @work(group="state")
    async def _record_click(self, event_id: int, label: str | None) -> None:
        body = {"action": label} if label else None
        try:
            await self.app.api(  # type: ignore[attr-defined]
                lambda c: c.request("POST", f"/v1/events/{event_id}/click", json_body=body)
            )
        except ClientError as exc:
            self.notify(f"Could not record the click: {exc}", severity="error", timeout=8)

    def action_search(self) -> None:
        self.query_one("#filter-q", Input).focus()

    def action_focus_filters(self) -> None:
        self.query_one("#filter-topic", Input).focus()

    def action_focus_table(self) -> None:
        self.table.focus()

    def action_toggle_unread(self) -> None:
        self.query_one(FilterBar).update(unread=not self.filters.unread)

    def action_toggle_archive_view(self) -> None:
        archived = "exclude" if self.filters.archived == "only" else "only"
        self.query_one(FilterBar).update(archived=archived)

    def action_min_priority(self, value: int) -> None:
        self.query_one(FilterBar).update(min_priority=value or None)

    def action_clear_filters(self) -> None:
        self.query_one(FilterBar).set_filters(Filters())

    def action_toggle_times(self) -> None:
        table = self.table
        table.time_mode = "absolute" if table.time_mode == "relative" else "relative"
        self.detail.time_mode = table.time_mode
        if self.detail.event is not None:
            self.detail.show(self.detail.event)

    def action_reload(self) -> None:
        self.reload()

    @on(Input.Submitted, "#filters Input")
    def _filter_submitted(self) -> None:
        self.table.focus()

    # --- status line ---------------------------------------------------------

    def _recount(self) -> None:
        """Ask for the unread count soon (changes come in bursts)."""
        if self._count_timer is None:
            self._count_timer = self.set_timer(COUNT_DELAY, self._fetch_count)

    @work(group="count", exclusive=True)
    async def _fetch_count(self) -> None:
        self._count_timer = None
        params = {**self.filters.params(), "unread": "true"}
        generation = self.generation
        try:
            result = await self.app.api(  # type: ignore[attr-defined]
                lambda c: c.request("GET", "/v1/inbox/count", params=params) or {}
            )
        except ClientError:
            return  # the status line falls back to the loaded rows
        if generation == self.generation:
            self.unread_count = int(result.get("count") or 0)
            self._show_status()

    def _show_status(self) -> None:
        tables = self.query(EventTable)
        statuses = self.query("#inbox-status").results(Static)
        status = next(statuses, None)
        if not tables or status is None:
            # a late answer (a count or state worker) for a screen being torn
            # down: its widgets leave one by one, in no order we can rely on
            return
        table = tables.first()
        if self.error:
            text = f"could not load: {self.error}"
        else:
            count = len(table.events)
            unread = self.unread_count
            if unread is None:
                unread = sum(1 for ev in table.events.values() if not ev["read"])
            parts = [f"{count} loaded", f"{unread:,} unread"]
            if self.fetching:
                parts.append("loading…")
            elif self.loaded:
                parts.append("end of history" if self.exhausted else "more below")
            if self.filters.active:
                parts.append(self.filters.describe())
            text = " · ".join(parts)
        status.update(text)
