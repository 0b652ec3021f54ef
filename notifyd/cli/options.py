"""Option bundles and output helpers shared by the ``notifyd`` commands."""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource

from notifyd.cli import format as clifmt

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
CONNECTION = ("socket_path", "url", "token")


# --- option bundles ---------------------------------------------------------


def connection_params(f: Callable) -> Callable:
    def env_option(*decls: str, var: str, **kw: Any) -> Callable:
        return click.option(*decls, envvar=f"NOTIFYD_{var}", show_envvar=True, **kw)

    f = env_option("--token", var="TOKEN", metavar="TOKEN", help="Bearer token for --url.")(f)
    f = env_option(
        "--url",
        var="URL",
        metavar="URL",
        help="Daemon's HTTP address, e.g. http://127.0.0.1:8780 (with --token).",
    )(f)
    return env_option(
        "--socket",
        "socket_path",
        var="SOCKET",
        metavar="PATH",
        help="Daemon's Unix socket (you act as its admin user).  "
        "[default: ./var/notifyd.sock if present, else /run/notifyd/notifyd.sock]",
    )(f)


def client_options(f: Callable) -> Callable:
    """Add ``--socket/--url/--token`` and pass the command a ``client``.

    The client connects on first use; its errors become ClickExceptions carrying
    the client's advice on how to fix them.
    """

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from notifyd.client import Client, ClientError

        given = from_command_line({name: kwargs.pop(name) for name in CONNECTION})
        try:
            with Client(**given) as client:
                return f(*args, client=client, **kwargs)
        except ClientError as exc:
            raise click.ClickException(str(exc)) from exc

    return connection_params(wrapper)


def output_options(f: Callable) -> Callable:
    """Add ``--json``: output for scripts instead of people."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(f)


def from_command_line(values: dict) -> dict:
    # Values click took from the environment are left for Client to resolve, so that
    # `--url X` on the command line beats NOTIFYD_SOCKET in the environment.
    ctx = click.get_current_context()
    return {
        name: value
        for name, value in values.items()
        if value and ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE
    }


# --- small helpers ----------------------------------------------------------


def use_color() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def print_json(value: Any, *, compact: bool = False) -> None:
    if compact:
        click.echo(json.dumps(value, ensure_ascii=False, separators=(",", ":")))
    else:
        click.echo(json.dumps(value, ensure_ascii=False, indent=2))


def print_table(table: clifmt.Table, empty: str, **kwargs: Any) -> None:
    if not table[1]:
        click.echo(empty, err=True)  # stderr, so that a pipe sees no stray header either
        return
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    for line in clifmt.render_table(*table, color=use_color(), width=width, **kwargs):
        click.echo(line)


def report(as_json: bool, data: Any, text: str) -> None:
    if as_json:
        print_json(data)
    else:
        click.echo(text)


def checked(parse: Callable[[Any], Any], *, whole: bool = False) -> Callable:
    """Wrap a notifyd.cli.format parser as a click callback that turns ValueError into a usage error.

    A repeated option's values are parsed one by one unless ``whole`` is set.
    """

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None or value == ():
            return value
        try:
            if isinstance(value, tuple) and not whole:
                return tuple(parse(v) for v in value)
            return parse(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None

    return callback


def complete_priority(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    return [name for name in clifmt.PRIORITY_LABELS.values() if name.startswith(incomplete)]


def read_password() -> str:
    if sys.stdin.isatty():
        return click.prompt("Password", hide_input=True, confirmation_prompt=True)
    password = sys.stdin.read()
    for ending in ("\r\n", "\n"):
        if password.endswith(ending):
            password = password[: -len(ending)]
            break
    if not password:
        raise click.ClickException(
            "no password on stdin: pipe one in, e.g. printf '%s' \"$PW\" | notifyd users passwd NAME"
        )
    return password
