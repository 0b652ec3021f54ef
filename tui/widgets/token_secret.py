"""Shows a new token's secret, the only time the daemon ever reveals it."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class TokenSecretDialog(ModalScreen[None]):
    """The secret, a copy key, and a reminder that it cannot be shown again.

    The secret lives only in this dialog: closing it forgets it.
    """

    BINDINGS = [
        Binding("c", "copy", "Copy"),
        Binding("escape,enter", "close", "Close"),
    ]

    def __init__(self, secret: str, owner: str) -> None:
        super().__init__()
        self.secret = secret
        self.owner = owner

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="token-dialog"):
            yield Static(f"New token for {self.owner}", classes="dialog-title", markup=False)
            yield Static(self.secret, id="token-secret", markup=False)
            yield Static(
                "Store it now: this is the only time it is shown. "
                "Only a digest is kept, so a lost token cannot be recovered — revoke it "
                "and create another.",
                classes="form-hint",
                markup=False,
            )
            with Horizontal(classes="dialog-buttons"):
                yield Button("Copy", id="token-copy")
                yield Button("Done", variant="primary", id="token-done")

    def on_mount(self) -> None:
        self.query_one("#token-done", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "token-copy":
            self.action_copy()
        else:
            self.dismiss(None)

    def action_copy(self) -> None:
        # OSC 52: works in most terminals, also over SSH
        self.app.copy_to_clipboard(self.secret)
        self.notify("Token copied to the clipboard")

    def action_close(self) -> None:
        self.dismiss(None)
