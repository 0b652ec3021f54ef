"""The inbox's filter bar: search, topic, category, minimum priority, unread, archive.

It posts :class:`FilterBar.Changed` with a :class:`Filters` value whenever what it
shows changes (typing is debounced, Enter applies at once). :class:`Filters` also
knows how to ask the API (:meth:`Filters.params`) and how to test a live event
against itself (:meth:`Filters.matches`), so that events arriving on the stream
are only shown when they belong in the list. The daemon's answer is the truth:
``matches`` gives the same answer as ``GET /v1/events`` with ``params()`` (checked by
tests/test_filter_semantics.py against the daemon, with the web page's function).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Checkbox, Input, Select

from notifyd.core.globs import glob_match
from notifyd.core.search import search_matches

PRIORITY_CHOICES = [("≥ low", 2), ("≥ default", 3), ("≥ high", 4), ("urgent", 5)]
SEARCH_DELAY = 0.3  # seconds of quiet typing before a search runs


@dataclass(frozen=True)
class Filters:
    """What the inbox lists; empty fields do not filter."""

    q: str = ""
    topic: str = ""
    category: str = ""
    min_priority: int | None = None
    unread: bool = False
    archived: Literal["exclude", "only", "include"] = "exclude"

    @property
    def active(self) -> bool:
        return self != Filters()

    def params(self) -> dict[str, Any]:
        """Query parameters for ``GET /v1/events`` (and ``POST /v1/inbox/read-all``)."""
        params: dict[str, Any] = {
            "q": self.q or None,
            "topic": self.topic or None,
            "category": self.category or None,
            "min_priority": self.min_priority,
            "unread": "true" if self.unread else None,
        }
        if self.archived != "exclude":
            params["archived"] = self.archived
        return {k: v for k, v in params.items() if v is not None}

    def matches(self, event: dict, *, archive: bool = True) -> bool:
        """Whether ``event`` (with its read state) belongs in a list with these
        filters: the same answer as the daemon's (see :mod:`notifyd.core.search` for
        the search). ``archive=False`` ignores the archive filter."""
        if self.topic and not topic_matches(self.topic, str(event.get("topic", ""))):
            return False
        if self.category and event.get("category") != self.category:
            return False
        if self.min_priority and int(event.get("priority") or 3) < self.min_priority:
            return False
        if self.unread and event.get("read"):
            return False
        archived = self.archived if archive else "include"
        if archived != "include" and bool(event.get("archived")) != (archived == "only"):
            return False
        return not self.q or search_matches(self.q, event.get("title"), event.get("body"))

    def describe(self) -> str:
        """A short line for the status bar: ``topic ci/* · unread · "disk"``."""
        parts = []
        if self.archived == "only":
            parts.append("archive")
        if self.topic:
            parts.append(f"topic {self.topic}")
        if self.category:
            parts.append(f"category {self.category}")
        if self.min_priority:
            parts.append(dict((v, k) for k, v in PRIORITY_CHOICES)[self.min_priority])
        if self.unread:
            parts.append("unread")
        if self.q:
            parts.append(f'"{self.q}"')
        return " · ".join(parts)


def topic_matches(pattern: str, topic: str) -> bool:
    """The API's topic filter: an exact name, or a glob where ``*`` spans ``/`` too
    (the daemon's own matcher, which never backtracks)."""
    return glob_match(pattern, topic)


class FilterBar(Horizontal):
    """One line of compact inputs above the event table."""

    @dataclass
    class Changed(Message):
        """The filters changed; the inbox reloads its first page."""

        filter_bar: FilterBar
        filters: Filters

        @property
        def control(self) -> FilterBar:
            return self.filter_bar

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.filters = Filters()
        self._timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield Input(placeholder="search  /", id="filter-q", compact=True)
        yield Input(placeholder="topic (ci/*)", id="filter-topic", compact=True)
        yield Input(placeholder="category", id="filter-category", compact=True)
        yield Select(
            PRIORITY_CHOICES,
            prompt="any priority",
            id="filter-priority",
            compact=True,
        )
        yield Checkbox("unread", id="filter-unread", compact=True)
        yield Checkbox("archive", id="filter-archive", compact=True)

    def set_filters(self, filters: Filters) -> None:
        """Show ``filters`` in the inputs and apply them now."""
        with self.prevent(Input.Changed, Select.Changed, Checkbox.Changed):
            self.query_one("#filter-q", Input).value = filters.q
            self.query_one("#filter-topic", Input).value = filters.topic
            self.query_one("#filter-category", Input).value = filters.category
            select: Select[int] = self.query_one("#filter-priority", Select)
            if filters.min_priority:
                select.value = filters.min_priority
            else:
                select.clear()
            self.query_one("#filter-unread", Checkbox).value = filters.unread
            self.query_one("#filter-archive", Checkbox).value = filters.archived == "only"
        self._apply(filters)

    def update(self, **changes: Any) -> None:
        """Change some filters (``unread=True``, ``min_priority=4``…) and apply them."""
        self.set_filters(replace(self.filters, **changes))

    def _read(self) -> Filters:
        priority = self.query_one("#filter-priority", Select).value
        return Filters(
            q=self.query_one("#filter-q", Input).value.strip(),
            topic=self.query_one("#filter-topic", Input).value.strip(),
            category=self.query_one("#filter-category", Input).value.strip(),
            min_priority=priority if isinstance(priority, int) else None,
            unread=self.query_one("#filter-unread", Checkbox).value,
            archived="only" if self.query_one("#filter-archive", Checkbox).value else "exclude",
        )

    def _apply(self, filters: Filters | None = None) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        filters = filters if filters is not None else self._read()
        if filters != self.filters:
            self.filters = filters
            self.post_message(self.Changed(self, filters))

    @on(Input.Changed)
    def _typed(self, event: Input.Changed) -> None:
        event.stop()
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(SEARCH_DELAY, self._apply)

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._apply()
        self.screen.focus_next("EventTable")

    @on(Select.Changed)
    @on(Checkbox.Changed)
    def _toggled(self, event: Message) -> None:
        event.stop()
        self._apply()
