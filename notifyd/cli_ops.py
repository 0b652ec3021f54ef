"""Operations commands: backup, export, import, doctor (being built)."""

from __future__ import annotations

import click

#: registered on the main group by notifyd.cli
OPS_COMMANDS: list[click.Command] = []
