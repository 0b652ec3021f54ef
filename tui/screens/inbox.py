"""Placeholder: being built."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Header, Static


class InboxScreen(Screen):
    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("inbox")
        yield Footer()
