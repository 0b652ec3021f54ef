"""The inbox's table of notifications, newest first.

One row per event, keyed by the event id: a marker (● unread), time, priority,
topic, category and title. Unread rows are bold, read rows muted, urgent rows
take the theme's error colour and high ones its warning colour; every colour
comes from the stylesheet (component classes), so themes — including the ANSI
ones for 16-colour terminals — restyle the table.

The table never decides what to load: when the cursor or the viewport comes near
the last loaded row it posts :class:`EventTable.NearEnd`, and the inbox fetches the
next page (``before=<cursor>``) and appends it. Live events go to the top with
:meth:`EventTable.insert_events`, which keeps the cursor on the event it was on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.coordinate import Coordinate
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import DataTable

from notifyd.core.priority import PRIORITY_LABELS

#: the priority column: the labels, with the default left blank
PRIORITY_NAMES = {n: "" if n == 3 else label for n, label in PRIORITY_LABELS.items()}
TimeMode = Literal["relative", "absolute"]

# fixed column widths; the title takes what is left
WIDTHS = {"marker": 1, "priority": 6, "topic": 18, "category": 10}
TIME_WIDTHS = {"relative": 5, "absolute": 12}
MIN_TITLE = 12


def parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 timestamp from the API as an aware datetime (None if absent/bad)."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_age(when: datetime, now: datetime) -> str:
    """A compact age: ``now``, ``5m``, ``3h``, ``2d``, then ``Jun 05``, ``2023-06``."""
    seconds = (now - when).total_seconds()
    if seconds < 60:
        return "now"
    if seconds < 3600:
        return f"{int(seconds // 60)}m"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h"
    if seconds < 7 * 86400:
        return f"{int(seconds // 86400)}d"
    local = when.astimezone()
    if local.year == now.astimezone().year:
        return local.strftime("%b %d")
    return local.strftime("%Y-%m")


def format_age_long(when: datetime, now: datetime) -> str:
    """``just now``, ``5 minutes ago``, ``3 hours ago``, ``2 days ago`` or a date."""
    seconds = (now - when).total_seconds()
    if seconds < 60:
        return "just now"
    for limit, size, unit in (
        (3600, 60, "minute"),
        (86400, 3600, "hour"),
        (7 * 86400, 86400, "day"),
    ):
        if seconds < limit:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return when.astimezone().strftime("%Y-%m-%d")


def format_time(when: datetime | None, now: datetime, mode: TimeMode) -> str:
    if when is None:
        return ""
    if mode == "relative":
        return format_age(when, now)
    return when.astimezone().strftime("%b %d %H:%M")


def event_title(event: dict) -> str:
    """The title, or the body's first line when there is none."""
    title = (event.get("title") or "").strip()
    if title:
        return title
    body = (event.get("body") or "").strip()
    return body.splitlines()[0] if body else "(no title)"


class IdText(Text):
    """A cell that knows the id of its row's event, so rows can be sorted by id."""

    def __init__(self, text: str, event_id: int, style: Style | str = "") -> None:
        super().__init__(text, style=style, no_wrap=True, overflow="ellipsis", end="")
        self.event_id = event_id


class EventTable(DataTable[Text]):
    """Notifications, newest first; ``events`` maps each row's id to its event."""

    COMPONENT_CLASSES: ClassVar[set[str]] = DataTable.COMPONENT_CLASSES | {
        "event-table--unread",
        "event-table--read",
        "event-table--urgent",
        "event-table--high",
        "event-table--marker",
    }

    BINDINGS = [
        # rows, not columns, are what home/end move through here
        Binding("home", "scroll_top", "First", show=False),
        Binding("end", "scroll_bottom", "Last loaded", show=False),
    ]

    DEFAULT_CSS = """
    EventTable {
        overflow-x: hidden;
    }
    """

    time_mode: reactive[TimeMode] = reactive("relative", init=False)

    @dataclass
    class NearEnd(Message):
        """The cursor or the viewport is within a few screens of the last loaded row."""

        event_table: EventTable

        @property
        def control(self) -> EventTable:
            return self.event_table

    def __init__(
        self, *, clock: Callable[[], datetime] | None = None, id: str | None = None
    ) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.events: dict[int, dict[str, Any]] = {}
        self._near_end_posted = False

    def on_mount(self) -> None:
        self.add_column("", width=WIDTHS["marker"], key="marker")
        self.add_column("time", width=TIME_WIDTHS[self.time_mode], key="time")
        self.add_column("prio", width=WIDTHS["priority"], key="priority")
        self.add_column("topic", width=WIDTHS["topic"], key="topic")
        self.add_column("category", width=WIDTHS["category"], key="category")
        self.add_column("title", width=MIN_TITLE, key="title")
        self.watch(self.app, "theme", self._restyle, init=False)
        self.set_interval(30, self.refresh_times)

    # --- reading -------------------------------------------------------------

    @property
    def current(self) -> dict[str, Any] | None:
        """The event under the cursor."""
        if not self.row_count:
            return None
        try:
            key = self.coordinate_to_cell_key(Coordinate(self.cursor_row, 0)).row_key
        except Exception:  # noqa: BLE001 - an empty or shrinking table
            return None
        return self.events.get(int(key.value or 0))

    @property
    def oldest_id(self) -> int | None:
        return min(self.events) if self.events else None

    def ordered_ids(self) -> list[int]:
        """Ids in display order (for tests and the benchmark)."""
        return [int(row.key.value or 0) for row in self.ordered_rows]

    # --- changing ------------------------------------------------------------

    def set_events(self, events: Iterable[dict]) -> None:
        """Replace every row (a reload with new filters)."""
        self.clear()
        self.events.clear()
        self._near_end_posted = False
        self.append_events(events)

    def append_events(self, events: Iterable[dict]) -> int:
        """Add an older page at the bottom; events already shown are skipped."""
        added = 0
        for event in events:
            eid = event["id"]
            if eid in self.events:
                continue
            self.events[eid] = event
            self.add_row(*self._cells(event), key=str(eid))
            added += 1
        self._near_end_posted = False
        self.call_after_refresh(self.check_near_end)
        return added

    def insert_events(self, events: Iterable[dict]) -> int:
        """Add newer events (live ones) in id order, keeping the cursor on its event
        and, when scrolled down, the viewport on what it showed."""
        new = [ev for ev in events if ev["id"] not in self.events]
        if not new:
            return 0
        current = self.current
        old_index = self.cursor_row
        old_scroll = self.scroll_y
        for event in new:
            self.events[event["id"]] = event
            self.add_row(*self._cells(event), key=str(event["id"]))
        self.sort("marker", key=lambda cell: cell.event_id, reverse=True)
        if current is not None:
            index = self.get_row_index(str(current["id"]))
            shift = index - old_index
            self.move_cursor(row=index, scroll=False)
            if old_scroll > 0 and shift:
                self.scroll_to(y=old_scroll + shift, animate=False, immediate=True)
        return len(new)

    def update_event(self, event: dict) -> None:
        """Redraw the row of ``event`` (after its read state changed)."""
        eid = event["id"]
        if eid not in self.events:
            return
        self.events[eid] = event
        for column, cell in zip(self.columns, self._cells(event), strict=True):
            self.update_cell(str(eid), column, cell)

    def remove_events(self, ids: Iterable[int]) -> None:
        for eid in ids:
            if self.events.pop(eid, None) is not None:
                self.remove_row(str(eid))
        self.call_after_refresh(self.check_near_end)

    def refresh_times(self) -> None:
        """Relative times age: redraw the time cells that changed."""
        now = self.clock()
        for eid, event in self.events.items():
            text = format_time(parse_time(event.get("created_at")), now, self.time_mode)
            cell = self.get_cell(str(eid), "time")
            if cell.plain != text:
                self.update_cell(str(eid), "time", Text(text, style=cell.style, end=""))

    def watch_time_mode(self) -> None:
        if not self.columns:
            return
        self.columns["time"].width = TIME_WIDTHS[self.time_mode]  # type: ignore[index]
        self._fit_title()
        self.refresh_times()

    # --- infinite scroll -----------------------------------------------------

    def rearm_near_end(self) -> None:
        """Allow :class:`NearEnd` again (after a failed fetch) and check at once."""
        self._near_end_posted = False
        self.call_after_refresh(self.check_near_end)

    def check_near_end(self) -> None:
        """Post :class:`NearEnd` when fewer than about three screens of rows remain
        below: holding PageDown then rarely reaches rows that are not loaded yet."""
        if self._near_end_posted or not self.is_mounted:
            return
        visible = max(self.scrollable_content_region.height - 1, 1)
        bottom = int(self.scroll_y) + visible
        remaining = self.row_count - max(self.cursor_row, bottom)
        if remaining <= max(3 * visible, 30):
            self._near_end_posted = True
            self.post_message(self.NearEnd(self))

    def watch_cursor_coordinate(self, old: Coordinate, new: Coordinate) -> None:
        super().watch_cursor_coordinate(old, new)
        if new.row > old.row:
            self.check_near_end()

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        if new > old:
            self.check_near_end()

    # --- layout and style ----------------------------------------------------

    def on_resize(self) -> None:
        self._fit_title()

    def _fit_title(self) -> None:
        """Give the title column the width the other columns leave."""
        if "title" not in self.columns:
            return
        others = sum(
            column.get_render_width(self) for key, column in self.columns.items() if key != "title"
        )
        width = max(
            MIN_TITLE, self.scrollable_content_region.width - others - 2 * self.cell_padding
        )
        title = self.columns["title"]  # type: ignore[index]
        if title.width != width:
            title.width = width
            self.virtual_size = Size(
                others + title.get_render_width(self), self.virtual_size.height
            )
            self.notify_style_update()

    def _restyle(self) -> None:
        # after the refresh, when the new theme's styles are in place
        self.call_after_refresh(self._restyle_rows)

    def _restyle_rows(self) -> None:
        for event in list(self.events.values()):
            self.update_event(event)

    def _cells(self, event: dict) -> list[Text]:
        eid = event["id"]
        priority = int(event.get("priority") or 3)
        unread = not event.get("read")
        style = self.get_component_rich_style(
            "event-table--unread" if unread else "event-table--read", partial=True
        )
        if priority >= 5:
            style += self.get_component_rich_style("event-table--urgent", partial=True)
        elif priority == 4:
            style += self.get_component_rich_style("event-table--high", partial=True)
        marker_style = self.get_component_rich_style("event-table--marker", partial=True)
        when = parse_time(event.get("created_at"))

        def cell(value: str) -> Text:
            return Text(value, style=style, no_wrap=True, overflow="ellipsis", end="")

        return [
            IdText("●" if unread else " ", eid, style=style + marker_style),
            cell(format_time(when, self.clock(), self.time_mode)),
            cell(PRIORITY_NAMES.get(priority, str(priority))),
            cell(str(event.get("topic", ""))),
            cell(str(event.get("category", ""))),
            cell(event_title(event)),
        ]
