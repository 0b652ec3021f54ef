"""One preference rule on one line: topic pattern, category, minimum priority → where.

"Where" is what the preferences document allows: every channel (``channels:
null``), only some channels (a list of names), the inbox only (``[]``), or mute.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Input, Label, Select, Static

PRIORITIES: list[tuple[str, int]] = [
    ("any priority", 1),
    ("low and up", 2),
    ("default and up", 3),
    ("high and up", 4),
    ("urgent only", 5),
]
ACTIONS: list[tuple[str, str]] = [
    ("all channels", "all"),
    ("only channels", "only"),
    ("inbox only", "inbox"),
    ("mute", "mute"),
]
#: the part of a rule a daemon error names (``rules[2].topic``) → the input showing it
PARTS = {
    "topic": ".rule-topic",
    "category": ".rule-category",
    "min_priority": ".rule-priority",
    "channels": ".rule-channels",
    "mute": ".rule-action",
}


class RuleEditor(Vertical):
    """Edits one rule; :meth:`rule` gives it back as the preferences document has it."""

    @dataclass
    class Changed(Message):
        """The user changed something in this rule."""

        editor: RuleEditor

        @property
        def control(self) -> RuleEditor:
            return self.editor

    def __init__(self, rule: dict[str, Any] | None = None) -> None:
        super().__init__(classes="rule")
        self.initial = dict(rule or {})
        self._ready = False

    def compose(self) -> ComposeResult:
        rule = self.initial
        channels = rule.get("channels")
        if rule.get("mute"):
            action = "mute"
        elif channels is None:
            action = "all"
        else:
            action = "only" if channels else "inbox"
        with Horizontal(classes="rule-row"):
            yield Label("", classes="rule-number")
            yield Input(
                rule.get("topic", "*"),
                placeholder="topic pattern",
                classes="rule-topic",
                compact=True,
            )
            yield Input(
                rule.get("category") or "",
                placeholder="any category",
                classes="rule-category",
                compact=True,
            )
            yield Select(
                PRIORITIES,
                value=_priority(rule.get("min_priority")),
                allow_blank=False,
                classes="rule-priority",
                compact=True,
            )
            yield Select(
                ACTIONS, value=action, allow_blank=False, classes="rule-action", compact=True
            )
            yield Input(
                ", ".join(channels or []),
                placeholder="channel names",
                classes="rule-channels",
                disabled=action != "only",
                compact=True,
            )
        yield Static("", classes="field-error", markup=False)

    def on_mount(self) -> None:
        self.query_one(".field-error").display = False
        # inputs report their initial values once mounted; those are not edits
        self.call_after_refresh(self._set_ready)

    def _set_ready(self) -> None:
        self._ready = True

    def set_number(self, number: int) -> None:
        self.query_one(".rule-number", Label).update(f"{number}.")

    # -- the rule -----------------------------------------------------------------

    def rule(self) -> dict[str, Any]:
        """The rule as JSON; what the user typed is passed on for the daemon to judge."""
        topic = self.query_one(".rule-topic", Input).value.strip()
        category = self.query_one(".rule-category", Input).value.strip()
        action = self.query_one(".rule-action", Select).value
        out: dict[str, Any] = {
            "topic": topic or "*",
            "category": category or None,
            "min_priority": self.query_one(".rule-priority", Select).value,
        }
        if action == "mute":
            out["mute"] = True
        elif action == "inbox":
            out["channels"] = []
        elif action == "only":
            names = self.query_one(".rule-channels", Input).value
            out["channels"] = [n.strip() for n in names.split(",") if n.strip()]
        else:
            out["channels"] = None
        return out

    # -- errors ---------------------------------------------------------------------

    def show_error(self, part: str | None, message: str) -> Widget:
        """Show the daemon's complaint about ``part`` (``topic``, …) under this rule;
        returns the input it concerns."""
        error = self.query_one(".field-error", Static)
        error.update(message)
        error.display = True
        target = self.query_one(PARTS.get(part or "", ".rule-topic"))
        target.add_class("has-error")
        return target

    def clear_error(self) -> None:
        error = self.query_one(".field-error", Static)
        error.update("")
        error.display = False
        for widget in self.query(".has-error"):
            widget.remove_class("has-error")

    # -- events ---------------------------------------------------------------------

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.has_class("rule-action"):
            self.query_one(".rule-channels", Input).disabled = event.value != "only"
        self._changed(event)

    def on_input_changed(self, event: Input.Changed) -> None:
        self._changed(event)

    def _changed(self, event: Message) -> None:
        event.stop()
        if self._ready:
            self.post_message(self.Changed(self))


def _priority(value: Any) -> int:
    return value if isinstance(value, int) and 1 <= value <= 5 else 1
