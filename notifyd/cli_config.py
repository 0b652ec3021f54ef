"""``notifyd config``: the effective configuration (being built)."""

from __future__ import annotations

import click


@click.group()
def config() -> None:
    """Inspect the configuration."""
