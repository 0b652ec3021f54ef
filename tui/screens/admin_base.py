"""What the admin screens (channels, preferences, deliveries, users) share.

:class:`AdminScreen` gives each of them a reload whenever the screen is shown (and
on F5) and helpers that run client calls through the app's worker threads, so the
UI never waits on the daemon. :class:`ScreenCommands` turns a screen's actions into
command palette entries, so that everything a key does can also be found by name.
:func:`fill_table` refills a DataTable with plain cells and settled column widths.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text
from textual.color import Color, ColorParseError
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.screen import Screen
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, RowDoesNotExist

from notifyd.client import Client, ClientError

if TYPE_CHECKING:
    from ..app import NotifydApp

T = TypeVar("T")
LOAD_GROUP = "admin-load"


class ScreenCommands(Provider):
    """Command palette entries for the actions of the screen the palette was opened on.

    Subclasses list ``(title, action, help)`` in :attr:`ENTRIES`; choosing an entry
    runs the action on the screen, as its key binding would.
    """

    ENTRIES: ClassVar[tuple[tuple[str, str, str], ...]] = ()

    def _entries(self) -> Iterator[tuple[str, Callable[[], Any], str]]:
        screen = self.screen
        for title, action, help_text in self.ENTRIES:
            yield title, partial(screen.run_action, action), help_text

    async def discover(self) -> Hits:
        for title, command, help_text in self._entries():
            yield DiscoveryHit(title, command, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, command, help_text in self._entries():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), command, text=title, help=help_text)


class AdminScreen(Screen):
    """Base of the admin screens: reload when shown, client calls off the UI thread.

    Subclasses bind F5 to ``refresh`` (last, so it comes last in the footer)."""

    @property
    def notifyd(self) -> NotifydApp:
        return cast("NotifydApp", self.app)

    async def api(self, call: Callable[[Client], T]) -> T:
        """Run ``call(client)`` in a worker thread; raises :class:`ClientError`."""
        return await self.notifyd.api(call)

    async def api_or_notify(self, call: Callable[[Client], T], what: str) -> T | None:
        """Run ``call(client)`` in a worker thread; a failure becomes an error toast and None."""
        return await self.notifyd.api_or_notify(call, what)

    #: whether the screen was away (or never shown) since it last loaded
    away = True

    def on_screen_suspend(self) -> None:
        self.away = True

    def on_screen_resume(self) -> None:
        # Textual resumes a mode's screen twice when it is first shown: load once
        if self.away:
            self.away = False
            self.reload()

    def action_refresh(self) -> None:
        self.reload()

    def reload(self) -> None:
        """Start :meth:`load` in a worker, cancelling a load still waiting for its answer."""
        self.run_worker(self.load(), group=LOAD_GROUP, exclusive=True)

    async def load(self) -> None:
        """Fetch what the screen shows and show it (subclasses)."""

    # -- rendering helpers ------------------------------------------------------

    def themed(self, text: str, variable: str, bold: bool = False) -> Text:
        """``text`` in the colour of a theme variable (``error``, ``success``, …), so
        table cells follow the theme as the stylesheet does."""
        value = self.app.theme_variables.get(variable)
        try:
            color = Color.parse(value).rich_color if value else None
        except ColorParseError:
            color = None
        return Text(text, style=Style(color=color, bold=bold), end="")


def plain(value: object, width: int | None = None) -> Text:
    """A table cell shown as it is: DataTable reads plain strings as Rich markup,
    and daemon messages may hold brackets (``rules[0]``, ``[Errno 111]``)."""
    text = "" if value is None else str(value)
    text = " ".join(text.split())
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return Text(text, end="")


def selected_key(table: DataTable) -> str | None:
    """The key of the row under the table's cursor, or None for an empty table."""
    if table.row_count == 0:
        return None
    try:
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
    except CellDoesNotExist:
        return None


def fill_table(
    table: DataTable, headers: Sequence[str], rows: Iterable[tuple[str | None, Sequence[Text]]]
) -> None:
    """Replace the table's columns and rows, keeping the cursor on the same row.

    Column widths are measured here rather than left to DataTable: its automatic
    widths are settled on a later idle pass that does not repaint, so a table
    filled just before a repaint could show clipped columns until the next one.
    """
    rows = list(rows)
    current = selected_key(table)
    table.clear(columns=True)
    for index, header in enumerate(headers):
        width = max([cell_len(header), *(cells[index].cell_len for _, cells in rows)])
        table.add_column(header, width=width)
    for key, cells in rows:
        table.add_row(*cells, key=key)
    keep_cursor(table, current)


def keep_cursor(table: DataTable, key: str | None) -> None:
    """Put the cursor back on the row with ``key`` after the table was refilled."""
    if key is None:
        return
    try:
        table.move_cursor(row=table.get_row_index(key))
    except RowDoesNotExist:
        pass  # the row is gone: the cursor stays where it is


def error_text(exc: ClientError) -> str:
    """A daemon error for display: its message, without repeating the field name."""
    message = exc.message
    if exc.field and message.startswith(f"{exc.field}: "):
        message = message[len(exc.field) + 2 :]
    return message
