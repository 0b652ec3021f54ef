"""The detail pane under the event table: one notification in full.

Title, a meta line (id, topic, category, priority, time, tags, state), the body —
rendered with Textual's ``Markdown`` widget when the event's ``format`` is
``markdown``, as plain text otherwise — and a row of buttons for the click URL and
the event's actions. Choosing one posts :class:`EventDetail.OpenLink`; the inbox
records the click with the daemon and opens (or shows) the URL. An attachment is
described on a line of its own (name, type, size, expiry) and gets a button that
posts :class:`EventDetail.OpenAttachment`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Button, Markdown, Static

from .event_table import PRIORITY_NAMES, TimeMode, format_age_long, parse_time


class EventDetail(VerticalScroll):
    """Shows the event given to :meth:`show` (or a message when there is none)."""

    @dataclass
    class OpenLink(Message):
        """The user chose the click URL (``action`` is None) or one of the actions."""

        event_detail: EventDetail
        event: dict[str, Any]
        url: str
        action: dict[str, Any] | None = None

        @property
        def control(self) -> EventDetail:
            return self.event_detail

    @dataclass
    class OpenAttachment(Message):
        """The user chose the event's attachment."""

        event_detail: EventDetail
        event: dict[str, Any]

        @property
        def control(self) -> EventDetail:
            return self.event_detail

    def __init__(
        self, *, clock: Callable[[], datetime] | None = None, id: str | None = None
    ) -> None:
        super().__init__(id=id)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.event: dict[str, Any] | None = None
        self.time_mode: TimeMode = "relative"
        self._body_key: tuple[int, str] | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="detail-title", markup=False)
        yield Static(id="detail-meta", markup=False)
        yield Markdown(id="detail-markdown", open_links=False)
        yield Static(id="detail-text", markup=False)
        yield Horizontal(id="detail-links")

    def show(self, event: dict[str, Any] | None, empty: str = "") -> None:
        """Show ``event``; with None, show ``empty`` (e.g. "No notifications")."""
        same = event is not None and self.event is not None and event["id"] == self.event["id"]
        self.event = event
        title = self.query_one("#detail-title", Static)
        meta = self.query_one("#detail-meta", Static)
        markdown = self.query_one("#detail-markdown", Markdown)
        text = self.query_one("#detail-text", Static)
        links = self.query_one("#detail-links", Horizontal)
        if event is None:
            title.update(Text(empty, style="italic"))
            meta.update("")
            markdown.display = text.display = links.display = False
            self._body_key = None
            links.remove_children()
            return
        title.update(event.get("title") or "(no title)")
        meta.update(self._meta(event))
        body = event.get("body") or ""
        is_markdown = event.get("format") == "markdown"
        body_key = (event["id"], body)
        if body_key != self._body_key:
            self._body_key = body_key
            if is_markdown:
                markdown.update(body)
            else:
                text.update(body)
        markdown.display = is_markdown and bool(body)
        text.display = not is_markdown and bool(body)
        if not same:
            self.scroll_home(animate=False)
            links.remove_children()
            buttons = self._buttons(event)
            links.display = bool(buttons)
            if buttons:
                links.mount_all(buttons)

    def _meta(self, event: dict[str, Any]) -> Text:
        priority = int(event.get("priority") or 3)
        when = parse_time(event.get("created_at"))
        parts = [f"#{event['id']}", str(event.get("topic", "")), str(event.get("category", ""))]
        parts.append(PRIORITY_NAMES.get(priority) or "default priority")
        if when is not None:
            if self.time_mode == "relative":
                parts.append(format_age_long(when, self.clock()))
            else:
                parts.append(when.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"))
        state = "read" if event.get("read") else "unread"
        if event.get("archived"):
            state += ", archived"
        parts.append(state)
        if event.get("tags"):
            parts.append(" ".join(f"#{tag}" for tag in event["tags"]))
        if event.get("sensitive"):
            parts.append("sensitive")
        line = Text(" · ".join(parts), style="dim")
        for label in ("click", "image", "icon"):
            if event.get(label):
                line.append(f"\n{label}: {event[label]}", style="dim")
        described = describe_attachment(event.get("attachment"), self.clock())
        if described:
            line.append(f"\nattachment: {described}")
        return line

    def _buttons(self, event: dict[str, Any]) -> list[Button]:
        buttons = []
        if event.get("click"):
            buttons.append(Button("Open link (o)", name="open-click", compact=True))
        for index, action in enumerate(event.get("actions") or []):
            label = action.get("label") or action.get("url", "")
            if action.get("method"):
                label = f"{label} ({str(action['method']).upper()})"
            buttons.append(Button(label, name=f"action-{index}", compact=True))
        if isinstance(event.get("attachment"), dict):
            buttons.append(Button("Attachment (O)", name="open-attachment", compact=True))
        return buttons

    @on(Button.Pressed)
    def _pressed(self, pressed: Button.Pressed) -> None:
        pressed.stop()
        event = self.event
        name = pressed.button.name
        if event is None or name is None:
            return
        if name == "open-click":
            self.post_message(self.OpenLink(self, event, str(event["click"])))
            return
        if name == "open-attachment":
            self.post_message(self.OpenAttachment(self, event))
            return
        index = int(name.removeprefix("action-"))
        actions = event.get("actions") or []
        if index < len(actions):
            action = actions[index]
            self.post_message(self.OpenLink(self, event, str(action.get("url", "")), action))

    @on(Markdown.LinkClicked)
    def _link(self, clicked: Markdown.LinkClicked) -> None:
        clicked.stop()
        if self.event is not None:
            self.post_message(self.OpenLink(self, self.event, clicked.href))


def human_size(size: object) -> str:
    """``1536`` → ``1.5 KiB``; empty when unknown."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return ""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


def _until(when: datetime, now: datetime) -> str:
    seconds = (when - now).total_seconds()
    if seconds <= 0:
        return "expired"
    for limit, size, unit in ((3600, 60, "minute"), (86400, 3600, "hour")):
        if seconds < limit:
            n = max(1, int(seconds // size))
            return f"expires in {n} {unit}{'s' if n != 1 else ''}"
    n = int(seconds // 86400)
    if n < 7:
        return f"expires in {n} day{'s' if n != 1 else ''}"
    return "expires " + when.astimezone().strftime("%Y-%m-%d")


def describe_attachment(attachment: object, now: datetime) -> str:
    """``report.pdf · application/pdf · 1.2 MiB · expires in 3 days`` (what is known),
    ``… · external link`` for a file elsewhere; empty without an attachment."""
    if not isinstance(attachment, dict):
        return ""
    parts = [str(attachment.get("name") or "attachment")]
    if attachment.get("type"):
        parts.append(str(attachment["type"]))
    size = human_size(attachment.get("size"))
    if size:
        parts.append(size)
    expires = parse_time(attachment.get("expires_at"))
    if expires is not None:
        parts.append(_until(expires, now))
    if not attachment.get("id"):
        parts.append("external link")
    return " · ".join(parts)
