"""Preferences: rules, quiet hours, time zone, digests per channel and the rate limit.

The form edits the caller's preferences document (``docs/preferences.md``) and
saves it whole with ``PUT /v1/preferences``. The daemon validates it; a ``422``
names the field (``rules[1].topic``, ``quiet_hours.start``, ``digests.email`` …) and
its message is shown under the input that holds that field, which gets the focus.
"""

from __future__ import annotations

import re
import zoneinfo
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.suggester import SuggestFromList
from textual.widget import Widget
from textual.widgets import Footer, Header, Input, Label, Static

from notifyd.client import ClientError

from ..widgets.rule_editor import RuleEditor
from .admin_base import AdminScreen, ScreenCommands, error_text

UNSAVED = "Unsaved changes — ctrl+s saves, F5 discards."
RULE_FIELD = re.compile(r"^rules\[(\d+)\](?:\.(\w+))?$")


class PreferencesCommands(ScreenCommands):
    """Command palette entries of the preferences screen."""

    ENTRIES = (
        ("Preferences: save", "save", "Send the preferences to the daemon (PUT /v1/preferences)"),
        ("Preferences: add a rule", "add_rule", "A new rule after the focused one"),
        ("Preferences: remove the focused rule", "remove_rule", "Delete the rule being edited"),
        ("Preferences: move the focused rule up", "move_rule(-1)", "Rules are checked in order"),
        ("Preferences: move the focused rule down", "move_rule(1)", "Rules are checked in order"),
        (
            "Preferences: reload",
            "refresh",
            "Discard unsaved changes and load the saved preferences",
        ),
    )


class PreferencesScreen(AdminScreen):
    COMMANDS = {PreferencesCommands}
    BINDINGS = [
        Binding("ctrl+s", "save", "Save", priority=True),
        Binding("ctrl+n", "add_rule", "Add rule", priority=True),
        Binding("ctrl+d", "remove_rule", "Remove rule", priority=True),
        Binding("ctrl+up", "move_rule(-1)", "Rule up", show=False),
        Binding("ctrl+down", "move_rule(1)", "Rule down", show=False),
        Binding("f5", "refresh", "Reload"),
        # leave the inputs, so that the app's number keys switch screens again
        Binding("escape", "blur", "Leave field", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.saved: dict[str, Any] | None = None
        self.channel_names: list[str] = []

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="prefs-form"):
            yield Static(
                "Rules — the first that matches an event decides; no match: inbox and every channel",
                classes="section-title",
            )
            with Horizontal(classes="rule-head"):
                for text, cls in (
                    ("#", "rule-number"),
                    ("Topic pattern", "rule-topic"),
                    ("Category", "rule-category"),
                    ("Min priority", "rule-priority"),
                    ("Then", "rule-action"),
                    ("Channels", "rule-channels"),
                ):
                    yield Label(text, classes=cls)
            yield Vertical(id="rules")
            yield Static(
                "No rules: every event goes to the inbox and to every channel (ctrl+n adds one).",
                id="rules-empty",
                classes="form-hint",
            )
            yield Static(
                "Quiet hours — only urgent events pass; the rest follows as one digest",
                classes="section-title",
            )
            with Horizontal(classes="form-row"):
                yield Label("From", classes="form-label")
                yield Input(placeholder="22:00", id="quiet-start", compact=True)
                yield Label("to", classes="form-joiner")
                yield Input(placeholder="07:00", id="quiet-end", compact=True)
                yield Label("(empty: none)", classes="form-unit")
            yield Static("", id="quiet-error", classes="field-error", markup=False)
            with Horizontal(classes="form-row"):
                yield Label("Time zone", classes="form-label")
                yield Input(
                    placeholder="UTC",
                    id="timezone",
                    compact=True,
                    suggester=SuggestFromList(
                        sorted(zoneinfo.available_timezones()), case_sensitive=False
                    ),
                )
            yield Static("", id="timezone-error", classes="field-error", markup=False)
            yield Static(
                "Digests — a channel's notifications collected into one per window",
                classes="section-title",
            )
            yield Vertical(id="digests")
            yield Static("Rate limit", classes="section-title")
            with Horizontal(classes="form-row"):
                yield Label("At most", classes="form-label")
                yield Input(placeholder="no limit", id="rate-limit", compact=True)
                yield Label(
                    "per channel per minute; the rest waits for the next minute",
                    classes="form-unit",
                )
            yield Static("", id="rate-limit-error", classes="field-error", markup=False)
        yield Static("", id="prefs-status", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        for error in self.query(".field-error"):
            error.display = False
        self.query_one("#prefs-status").display = False

    # -- loading --------------------------------------------------------------------

    def on_screen_resume(self) -> None:
        if self.dirty:  # coming back to unsaved edits keeps them
            self.away = False
        super().on_screen_resume()

    async def load(self) -> None:
        def fetch(c: Any) -> tuple[dict, list[str]]:
            doc = c.request("GET", "/v1/preferences")
            chans = c.request("GET", "/v1/channels") or {}
            return doc, [ch["name"] for ch in chans.get("channels") or []]

        try:
            doc, names = await self.api(fetch)
        except ClientError as exc:
            self.set_status(f"Cannot load preferences: {exc}", "error")
            return
        self.channel_names = names
        await self.fill(doc)
        self.set_status("")

    async def fill(self, doc: dict[str, Any]) -> None:
        """Show ``doc`` in the form; it becomes what "unsaved" is measured against."""
        self.saved = doc
        self.clear_errors()
        rules = self.query_one("#rules", Vertical)
        await rules.remove_children()
        await rules.mount_all([RuleEditor(r) for r in doc.get("rules") or []])
        self._renumber()
        quiet = doc.get("quiet_hours") or {}
        self.query_one("#quiet-start", Input).value = quiet.get("start") or ""
        self.query_one("#quiet-end", Input).value = quiet.get("end") or ""
        self.query_one("#timezone", Input).value = doc.get("timezone") or ""
        limit = doc.get("rate_limit_per_minute")
        self.query_one("#rate-limit", Input).value = "" if limit is None else str(limit)
        digests = doc.get("digests") or {}
        box = self.query_one("#digests", Vertical)
        await box.remove_children()
        rows: list[Widget] = []
        names = self.channel_names + sorted(set(digests) - set(self.channel_names))
        for name in names:
            seconds = digests.get(name)
            unit = "seconds (60–86400; empty: send each at once)"
            if name not in self.channel_names:
                unit = "seconds — no channel has this name any more"
            rows.append(
                Horizontal(
                    Label(name, classes="form-label digest-label"),
                    Input(
                        "" if seconds is None else str(seconds),
                        placeholder="off",
                        id=f"digest-{name}",
                        classes="digest-input",
                        compact=True,
                    ),
                    Label(unit, classes="form-unit"),
                    classes="form-row",
                )
            )
            error = Static("", id=f"digest-{name}-error", classes="field-error", markup=False)
            error.display = False
            rows.append(error)
        if not names:
            rows.append(
                Static("No channels yet: add one on the Channels screen.", classes="form-hint")
            )
        await box.mount_all(rows)

    # -- the document ---------------------------------------------------------------

    def document(self) -> dict[str, Any]:
        """The form as a preferences document; values that are not numbers are passed
        on as typed, so that the daemon's message says what is wrong with them."""
        start = self.query_one("#quiet-start", Input).value.strip()
        end = self.query_one("#quiet-end", Input).value.strip()
        digests: dict[str, Any] = {}
        for field in self.query(".digest-input").results(Input):
            if field.value.strip():
                digests[(field.id or "")[len("digest-") :]] = _number(field.value)
        limit = self.query_one("#rate-limit", Input).value
        return {
            "rules": [editor.rule() for editor in self.query(RuleEditor)],
            "quiet_hours": {"start": start, "end": end} if start or end else None,
            "timezone": self.query_one("#timezone", Input).value.strip() or "UTC",
            "digests": digests,
            "rate_limit_per_minute": _number(limit) if limit.strip() else None,
        }

    @property
    def dirty(self) -> bool:
        if self.saved is None or not self.is_mounted:
            return False
        try:
            return _normal(self.document()) != _normal(self.saved)
        except NoMatches:  # a half-built form (during a reload) is not an edit
            return False

    def _renumber(self) -> None:
        editors = list(self.query(RuleEditor))
        for number, editor in enumerate(editors, 1):
            editor.set_number(number)
        self.query_one("#rules-empty").display = not editors

    # -- saving and errors ----------------------------------------------------------

    def action_save(self) -> None:
        self._save(self.document())

    @work(exclusive=True, group="prefs-save")
    async def _save(self, doc: dict[str, Any]) -> None:
        self.clear_errors()
        self.set_status("Saving…")
        try:
            stored = await self.api(lambda c: c.request("PUT", "/v1/preferences", json_body=doc))
        except ClientError as exc:
            if exc.status == 422:
                self.show_error(exc.field, error_text(exc))
                self.set_status(f"Not saved: {exc.message}", "error")
            else:
                self.set_status(f"Not saved: {exc}", "error")
                self.notify(f"Saving preferences: {exc}", severity="error", timeout=8)
            return
        await self.fill(stored)
        self.set_status("Saved.", "success")

    def show_error(self, field: str | None, message: str) -> None:
        """Show ``message`` next to the input holding ``field`` and focus it."""
        target: Widget | None = None
        error_id: str | None = None
        field = field or ""
        if m := RULE_FIELD.match(field):
            editors = list(self.query(RuleEditor))
            index = int(m.group(1))
            if index < len(editors):
                target = editors[index].show_error(m.group(2), message)
        elif field in ("quiet_hours", "quiet_hours.start", "quiet_hours.end"):
            target = self.query_one("#quiet-end" if field.endswith("end") else "#quiet-start")
            error_id = "quiet-error"
        elif field == "timezone":
            target, error_id = self.query_one("#timezone"), "timezone-error"
        elif field == "rate_limit_per_minute":
            target, error_id = self.query_one("#rate-limit"), "rate-limit-error"
        elif field.startswith("digests."):
            name = field[len("digests.") :]
            found = self.query(f"#digest-{name}") if re.fullmatch(r"[\w-]+", name) else None
            if found:
                target, error_id = found.first(), f"digest-{name}-error"
        if error_id is not None:
            error = self.query_one(f"#{error_id}", Static)
            error.update(message)
            error.display = True
        if target is None:
            self.set_status(f"Not saved: {field + ': ' if field else ''}{message}", "error")
            return
        target.add_class("has-error")
        target.focus()
        target.scroll_visible()

    def clear_errors(self) -> None:
        for editor in self.query(RuleEditor):
            editor.clear_error()
        for error in self.query("#prefs-form > .field-error, #digests > .field-error"):
            assert isinstance(error, Static)
            error.update("")
            error.display = False
        for widget in self.query(".has-error"):
            widget.remove_class("has-error")

    def set_status(self, text: str, kind: str = "") -> None:
        status = self.query_one("#prefs-status", Static)
        status.update(text)
        status.set_classes(kind)
        status.display = bool(text)

    # -- editing --------------------------------------------------------------------

    @on(RuleEditor.Changed)
    @on(Input.Changed)
    def _edited(self, event: Any) -> None:
        if self.saved is None:
            return
        status = self.query_one("#prefs-status", Static)
        if self.dirty:
            self.set_status(UNSAVED)
        elif str(status.content) == UNSAVED:  # edited back to what is saved
            self.set_status("")

    def _focused_rule(self) -> RuleEditor | None:
        node = self.focused
        while node is not None and not isinstance(node, RuleEditor):
            node = node.parent if isinstance(node.parent, Widget) else None
        return node

    async def action_add_rule(self) -> None:
        rules = self.query_one("#rules", Vertical)
        editor = RuleEditor({"topic": ""})
        current = self._focused_rule()
        if current is not None:
            await rules.mount(editor, after=current)
        else:
            await rules.mount(editor)
        self._renumber()
        editor.query_one(".rule-topic", Input).focus()
        self._edited(None)

    async def action_remove_rule(self) -> None:
        editor = self._focused_rule()
        if editor is None:
            self.notify("Focus a rule first (Tab to it), then remove it.", severity="warning")
            return
        editors = list(self.query(RuleEditor))
        index = editors.index(editor)
        await editor.remove()
        self._renumber()
        rest = list(self.query(RuleEditor))
        if rest:
            rest[min(index, len(rest) - 1)].query_one(".rule-topic", Input).focus()
        self._edited(None)

    def action_move_rule(self, delta: int) -> None:
        editor = self._focused_rule()
        if editor is None:
            return
        editors = list(self.query(RuleEditor))
        index = editors.index(editor) + delta
        if not 0 <= index < len(editors):
            return
        rules = self.query_one("#rules", Vertical)
        if delta < 0:
            rules.move_child(editor, before=editors[index])
        else:
            rules.move_child(editor, after=editors[index])
        self._renumber()
        editor.scroll_visible()
        self._edited(None)

    def action_blur(self) -> None:
        self.set_focus(None)


def _number(text: str) -> Any:
    text = text.strip()
    return int(text) if re.fullmatch(r"\d{1,9}", text) else text


def _normal(doc: dict[str, Any]) -> dict[str, Any]:
    """What matters when comparing documents: the daemon stores every rule with all
    its fields, and ``mute: false`` with ``channels`` as given."""
    rules = []
    for r in doc.get("rules") or []:
        mute = bool(r.get("mute"))
        rules.append(
            {
                "topic": r.get("topic") or "*",
                "category": r.get("category"),
                "min_priority": r.get("min_priority", 1),
                "channels": None if mute else r.get("channels"),
                "mute": mute,
            }
        )
    return {**doc, "rules": rules, "timezone": doc.get("timezone") or "UTC"}
