"""``notifyd config show``: the effective configuration, and where each value came from."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import click

#: key names whose values are never printed
SECRET_KEY = re.compile(r"password|secret|token|private|credential|api_?key", re.I)
#: user:password@ in URLs
#: (the lookbehind starts a scheme only where a run of scheme characters starts, so a
#: long run is tried once, not once per character: linear, not quadratic)
URL_AUTH = re.compile(r"(?<![a-z0-9+.-])(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<auth>[^/@\s]+)@", re.I)


def mask(key: str, value: Any) -> Any:
    """``value`` as it may be shown: secrets replaced by ``****``."""
    if isinstance(value, list):
        return [mask(key, v) for v in value]
    if SECRET_KEY.search(key) and value not in ("", None):
        return "****"
    if isinstance(value, str):
        return URL_AUTH.sub(lambda m: f"{m['scheme']}****@", value)
    return value


def _sources(path: str | None, keys: list[str]) -> dict[str, str]:
    in_file: set[str] = set()
    if path is not None:
        in_file = set(tomllib.loads(Path(path).read_text()))
    out = {}
    for key in keys:
        env = "NOTIFYD_" + key.upper()
        if env in os.environ:
            out[key] = f"environment {env}"
        elif key in in_file:
            out[key] = f"file {path}"
        else:
            out[key] = "default"
    return out


@click.group()
def config() -> None:
    """Inspect the configuration the daemon would run with.

    \b
    Examples:
      notifyd config show --config /etc/notifyd/notifyd.toml
    """


@config.command("show")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="TOML file, as given to `notifyd serve --config`.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="One JSON object: key → value.")
def show(config_path: str | None, as_json: bool) -> None:
    """Print the effective configuration: the file, then NOTIFYD_* variables, over the
    defaults, validated exactly as `notifyd serve` does. Secrets are masked.

    \b
    Examples:
      notifyd config show --config /etc/notifyd/notifyd.toml
      NOTIFYD_RETENTION_DAYS=90 notifyd config show
      notifyd config show --config notifyd.toml --json | jq .listen
    """
    from notifyd.config import ConfigError, load_config

    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(f"bad configuration: {exc}") from exc
    values = {k: mask(k, v) for k, v in dataclasses.asdict(cfg).items()}
    if as_json:
        click.echo(json.dumps(values, indent=2))
        return
    sources = _sources(config_path, list(values))
    for key, value in values.items():
        click.echo(f"{key} = {json.dumps(value)}  # {sources[key]}")
