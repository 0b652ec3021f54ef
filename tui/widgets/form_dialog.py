"""A modal form that sends itself to the daemon and shows what the daemon refused.

The screens describe the fields and pass a ``submit`` coroutine; the dialog stays
open until it succeeds. A ``422`` whose ``field`` names one of the form's fields
(``url``, ``name``, ``scopes.0`` …) is shown right under that input, which gets the
focus; any other error is shown at the bottom of the form. The daemon is the one
source of truth for validation: the form checks nothing itself.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Button, Checkbox, Input, Label, Select, Static

from notifyd.client import ClientError


@dataclass(frozen=True)
class FormField:
    """One input of a :class:`FormDialog`.

    ``kind``: ``text``, ``password``, ``select`` (one of ``options``) or ``checks``
    (any of ``options``, a list). ``value`` is the initial value.
    """

    name: str
    label: str
    kind: Literal["text", "password", "select", "checks"] = "text"
    placeholder: str = ""
    value: Any = None
    options: Sequence[tuple[str, Any]] = ()
    hint: str = ""


Submit = Callable[[dict[str, Any]], Awaitable[Any]]


class FormDialog(ModalScreen[Any]):
    """Dismissed with what ``submit`` returned, or None when cancelled."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "submit", "Save", priority=True),
    ]

    def __init__(
        self, title: str, fields: Sequence[FormField], submit: Submit, action: str = "Add"
    ) -> None:
        super().__init__()
        self.title_text = title
        self.fields = list(fields)
        self.submit = submit
        self.action_label = action

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog form-dialog"):
            yield Static(self.title_text, classes="dialog-title", markup=False)
            for field in self.fields:
                with Horizontal(classes="form-row"):
                    yield Label(field.label, classes="form-label")
                    yield self._input(field)
                if field.hint:
                    yield Static(field.hint, classes="form-hint", markup=False)
                yield Static("", id=f"form-{field.name}-error", classes="field-error", markup=False)
            yield Static("", id="form-error", classes="field-error", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.action_label, variant="primary", id="form-submit")
                yield Button("Cancel", id="form-cancel")

    def _input(self, field: FormField) -> Widget:
        wid = f"form-{field.name}"
        if field.kind == "select":
            value = field.value if field.value is not None else Select.NULL
            return Select(
                list(field.options),
                value=value,
                allow_blank=field.value is None,
                id=wid,
                compact=True,
            )
        if field.kind == "checks":
            chosen = set(field.value or ())
            boxes = [
                Checkbox(label, value in chosen, name=str(value), classes="form-check")
                for label, value in field.options
            ]
            return Horizontal(*boxes, id=wid, classes="form-checks")
        return Input(
            value=field.value or "",
            placeholder=field.placeholder,
            password=field.kind == "password",
            id=wid,
            compact=True,
        )

    def on_mount(self) -> None:
        for error in self.query(".field-error"):
            error.display = False

    # -- values and errors --------------------------------------------------------

    def values(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field in self.fields:
            widget = self.query_one(f"#form-{field.name}")
            if isinstance(widget, Input):
                out[field.name] = widget.value if field.kind == "password" else widget.value.strip()
            elif isinstance(widget, Select):
                out[field.name] = None if widget.value is Select.NULL else widget.value
            else:
                out[field.name] = [
                    value
                    for (_, value), box in zip(field.options, widget.query(Checkbox), strict=True)
                    if box.value
                ]
        return out

    def show_error(self, field: str | None, message: str) -> None:
        """Show ``message`` under the input of ``field`` (a daemon field path), or at
        the bottom when no input matches."""
        names = {f.name for f in self.fields}
        name = re.split(r"[.\[]", field or "", maxsplit=1)[0]
        target = f"#form-{name}-error" if name in names else "#form-error"
        label = self.query_one(target, Static)
        label.update(message)
        label.display = True
        if name in names:
            widget = self.query_one(f"#form-{name}")
            widget.add_class("has-error")
            (widget.query(Checkbox).first() if not widget.focusable else widget).focus()

    def clear_errors(self) -> None:
        for error in self.query(".field-error"):
            assert isinstance(error, Static)
            error.update("")
            error.display = False
        for widget in self.query(".has-error"):
            widget.remove_class("has-error")

    # -- actions ------------------------------------------------------------------

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "form-submit":
            self.action_submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_submit(self) -> None:
        self._send(self.values())

    @work(exclusive=True, group="form-submit")
    async def _send(self, values: dict[str, Any]) -> None:
        button = self.query_one("#form-submit", Button)
        button.disabled = True
        self.clear_errors()
        try:
            result = await self.submit(values)
        except ClientError as exc:
            message = exc.message
            if exc.field and message.startswith(f"{exc.field}: "):
                message = message[len(exc.field) + 2 :]
            self.show_error(exc.field, message)
            button.disabled = False
            return
        self.dismiss(result)
