"""The ``notifyd`` command: runs the daemon (``serve``) and talks to it (everything else).

Commands stay thin: HTTP lives in :mod:`notifyd.client`, formatting in
:mod:`notifyd.clifmt`. httpx is imported only when a command needs the daemon, so
shell completion and ``--help`` stay fast.
"""

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

from notifyd import __version__, clifmt

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
_CONNECTION = ("socket_path", "url", "token")


# --- option bundles ---------------------------------------------------------


def _connection_params(f: Callable) -> Callable:
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

        given = _from_command_line({name: kwargs.pop(name) for name in _CONNECTION})
        try:
            with Client(**given) as client:
                return f(*args, client=client, **kwargs)
        except ClientError as exc:
            raise click.ClickException(str(exc)) from exc

    return _connection_params(wrapper)


def output_options(f: Callable) -> Callable:
    """Add ``--json``: output for scripts instead of people."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(f)


def _from_command_line(values: dict) -> dict:
    # Values click took from the environment are left for Client to resolve, so that
    # `--url X` on the command line beats NOTIFYD_SOCKET in the environment.
    ctx = click.get_current_context()
    return {
        name: value
        for name, value in values.items()
        if value and ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE
    }


# --- small helpers ----------------------------------------------------------


def _color() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def _print_json(value: Any, *, compact: bool = False) -> None:
    if compact:
        click.echo(json.dumps(value, ensure_ascii=False, separators=(",", ":")))
    else:
        click.echo(json.dumps(value, ensure_ascii=False, indent=2))


def _print_table(table: clifmt.Table, empty: str, **kwargs: Any) -> None:
    if not table[1]:
        click.echo(empty, err=True)  # stderr, so that a pipe sees no stray header either
        return
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    for line in clifmt.render_table(*table, color=_color(), width=width, **kwargs):
        click.echo(line)


def _report(as_json: bool, data: Any, text: str) -> None:
    if as_json:
        _print_json(data)
    else:
        click.echo(text)


def _checked(parse: Callable[[Any], Any], *, whole: bool = False) -> Callable:
    """Wrap a clifmt parser as a click callback that turns ValueError into a usage error.

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


def _complete_priority(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    return [name for name in clifmt.PRIORITY_LABELS.values() if name.startswith(incomplete)]


def _read_password() -> str:
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


# --- the group ----------------------------------------------------------------


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="notifyd")
def main() -> None:
    """notifyd: a self-hosted notification daemon and its command-line client.

    `notifyd serve` runs the daemon; every other command talks to a running daemon
    over its Unix socket (as the admin user) or over HTTP with --url and --token.
    NOTIFYD_SOCKET, NOTIFYD_URL and NOTIFYD_TOKEN set the same. Add --json to any
    client command for output that scripts can parse.

    \b
    Examples:
      notifyd serve --config notifyd.toml
      notifyd send backups "nightly backup done" --priority low
      notifyd tail alerts --since all
      notifyd history --unread --limit 20
      NOTIFYD_URL=https://notify.example.com NOTIFYD_TOKEN=nfy_… notifyd send alerts hi

    \b
    Shell completion (add to your shell's startup file):
      bash:  eval "$(_NOTIFYD_COMPLETE=bash_source notifyd)"
      zsh:   eval "$(_NOTIFYD_COMPLETE=zsh_source notifyd)"
      fish:  _NOTIFYD_COMPLETE=fish_source notifyd | source
    """


# --- daemon -------------------------------------------------------------------


@main.command()
@click.option(
    "--config", "config_path", type=click.Path(exists=True, dir_okay=False), help="TOML file."
)
@click.option("--data-dir", type=click.Path(file_okay=False), help="Where the database lives.")
@click.option("--listen", multiple=True, metavar="HOST:PORT", help="HTTP address; repeatable.")
@click.option("--socket", "socket_path", metavar="PATH", help="Unix socket to listen on.")
def serve(config_path: str | None, **flags: Any) -> None:
    """Run the daemon in the foreground.

    Flags override the --config file (TOML, see notifyd.toml); NOTIFYD_* environment
    variables override both. Under systemd, socket activation and sd_notify are used.

    \b
    Examples:
      notifyd serve --config notifyd.toml
      notifyd serve --data-dir /var/lib/notifyd --listen 0.0.0.0:8780
      notifyd serve --listen 127.0.0.1:8780 --socket /run/notifyd/notifyd.sock
    """
    overrides: dict[str, Any] = {}
    if flags["data_dir"] is not None:
        overrides["data_dir"] = flags["data_dir"]
    if flags["listen"]:
        overrides["listen"] = list(flags["listen"])
    if flags["socket_path"] is not None:
        overrides["socket"] = flags["socket_path"]
    try:
        from notifyd.config import ConfigError, load_config
        from notifyd.daemon import run
    except ModuleNotFoundError as exc:
        if exc.name not in ("notifyd.config", "notifyd.daemon"):
            raise
        raise click.ClickException(f"this installation has no daemon ({exc.name})") from exc
    try:
        config = load_config(config_path, overrides)
    except ConfigError as exc:
        raise click.ClickException(f"bad configuration: {exc}") from exc
    try:
        run(config)
    except KeyboardInterrupt:
        sys.exit(130)


# --- events -------------------------------------------------------------------


@main.command()
@click.argument("topic")
@click.argument("body", required=False)
@click.option("--title", "-t", help="Title line.")
@click.option(
    "--priority",
    "-p",
    callback=_checked(clifmt.check_priority),
    shell_complete=_complete_priority,
    help="1–5 or min, low, default, high, urgent.  [default: default]",
)
@click.option("--category", help="Short slug used by preferences.  [default: general]")
@click.option("--tag", "tags", multiple=True, help="Tag slug; repeat or comma-separate.")
@click.option("--click", "click_url", metavar="URL", help="Opened on click.")
@click.option("--icon", metavar="URL", help="Icon shown with the notification.")
@click.option("--image", metavar="URL", help="Image attached to the notification.")
@click.option(
    "--action",
    "actions",
    multiple=True,
    metavar="LABEL=URL",
    callback=_checked(clifmt.parse_action),
    help="Button (up to 3); 'LABEL=POST URL' sends a request instead.",
)
@click.option("--markdown", is_flag=True, help="The body is Markdown.")
@click.option("--sensitive", is_flag=True, help="Pushes and emails get only a generic line.")
@click.option("--collapse-key", metavar="KEY", help="Replaces earlier events with this key.")
@click.option(
    "--deliver-at",
    metavar="WHEN",
    callback=_checked(clifmt.parse_when),
    help="Hold until: 30m, 2h, 1d, or a date-time (local unless it has a zone).",
)
@click.option(
    "--expires-at",
    metavar="WHEN",
    callback=_checked(clifmt.parse_when),
    help="Hide from then on; like --deliver-at.",
)
@click.option("--idempotency-key", metavar="KEY", help="Makes retrying this send safe.")
@client_options
@output_options
def send(client: Any, as_json: bool, topic: str, body: str | None, **opts: Any) -> None:
    """Publish an event to TOPIC and print its id.

    BODY is read from stdin when it is not given (on a terminal, --title alone is
    enough). The id is printed once the daemon has stored the event durably.

    \b
    Examples:
      notifyd send alerts "Disk /var is 95% full" --priority high --tag disk
      df -h | notifyd send reports/disk --title "Disk usage"
      notifyd send deploys "v2.3 is live" --click https://example.com/releases \\
          --action "Roll back=POST https://ci.example.com/rollback"
      notifyd send reminders "Stand-up" --deliver-at 10m --expires-at 1h
      notifyd send cron "backup failed" --idempotency-key backup-2026-01-02
    """
    if body is None:
        if not sys.stdin.isatty():
            body = sys.stdin.read().rstrip("\n")
        elif not opts["title"]:
            raise click.UsageError(
                "no BODY: give it as an argument, pipe it on stdin "
                "(echo hi | notifyd send TOPIC), or give at least --title"
            )
    key = opts.pop("idempotency_key")
    event: dict[str, Any] = {"topic": topic}
    if body:
        event["body"] = body
    if opts.pop("markdown"):
        event["format"] = "markdown"
    event["tags"] = clifmt.split_csv(opts.pop("tags"))
    event["click"] = opts.pop("click_url")
    event["actions"] = list(opts.pop("actions"))
    event["sensitive"] = opts.pop("sensitive") or None
    event.update(opts)
    event = {k: v for k, v in event.items() if v not in (None, [])}
    stored = client.publish(event, idempotency_key=key)
    if as_json or stored.get("id") is not None:
        _report(as_json, stored, str(stored.get("id")))
    else:
        # A scheduled event gets its id (its place in the stream) only when it is due.
        when = clifmt.short_time(stored.get("deliver_at"))
        click.echo(f"scheduled for {when} (schedule #{stored.get('scheduled_id')})", err=True)


@main.command()
@click.argument("topics", nargs=-1)
@click.option("--since", metavar="ID|all", help="First replay events after ID (all: every one).")
@client_options
@output_options
def tail(client: Any, as_json: bool, topics: tuple[str, ...], since: str | None) -> None:
    """Follow events as they arrive, on every topic or only on TOPICs.

    Reconnects by itself after a restart or a dropped connection and resumes where
    it left off, so nothing is missed. With --json, prints one event object per
    line (NDJSON). Stop with Ctrl-C.

    \b
    Examples:
      notifyd tail
      notifyd tail alerts deploys
      notifyd tail backups --since all
      notifyd tail --since 1200 --json | jq -r .title
    """
    start: int | None = None
    if since is not None:
        if since.lower() == "all":
            start = 0
        elif since.isdigit():
            start = int(since)
        else:
            raise click.BadParameter("use an event id or 'all'", param_hint="--since")
    color = _color()

    def on_retry(delay: float, reason: str) -> None:
        click.echo(f"notifyd: {reason}; reconnecting in {delay:.1f} s", err=True)

    try:
        for frame in client.follow(topics, start, on_retry=on_retry):
            event = frame.get("event")
            if frame.get("type") != "event" or not isinstance(event, dict):
                continue  # read-state changes matter to inbox views, not to a log of events
            if as_json:
                _print_json(event, compact=True)
            else:
                click.echo(clifmt.event_line(event, color=color))
    except KeyboardInterrupt:
        return


@main.command()
@click.option("--topic", help="Only this topic.")
@click.option("--category", help="Only this category.")
@click.option(
    "--min-priority",
    metavar="P",
    callback=_checked(clifmt.parse_priority),
    shell_complete=_complete_priority,
    help="Only events at least this urgent (1–5 or a name).",
)
@click.option("--unread", is_flag=True, help="Only events you have not read.")
@click.option("--search", metavar="TEXT", help="Full-text search in titles and bodies.")
@click.option("--since", type=int, metavar="ID", help="Only events newer than ID.")
@click.option("--before", type=int, metavar="ID", help="Only events older than ID (paging).")
@click.option("--limit", type=click.IntRange(1, 500), help="At most N events.  [default: 50]")
@client_options
@output_options
def history(client: Any, as_json: bool, unread: bool, search: str | None, **filters: Any) -> None:
    """List past events in your inbox, newest first; unread ones are marked *.

    \b
    Examples:
      notifyd history
      notifyd history --unread --min-priority high
      notifyd history --topic backups --search failed --limit 10
      notifyd history --before 1200      # the next page of older events
      notifyd history --json | jq '.events[].id'
    """
    page = client.events(**filters, q=search, unread="true" if unread else None) or {}
    if as_json:
        _print_json(page)
        return
    events = page.get("events") or []
    unread_rows = [e.get("read") is False for e in events]
    _print_table(clifmt.events_table(events), "no events match", bold_rows=unread_rows)
    if page.get("next") is not None:
        click.echo(f"more: repeat with --before {page['next']}", err=True)


@main.command("read")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "all_", is_flag=True, help="The whole inbox (or --topic/--category).")
@click.option("--unread", is_flag=True, help="Mark as unread instead.")
@click.option("--topic", help="With --all: only this topic.")
@click.option("--category", help="With --all: only this category.")
@client_options
@output_options
def read_cmd(client: Any, as_json: bool, ids: tuple[int, ...], all_: bool, **opts: Any) -> None:
    """Mark events as read (or, with --unread, unread) on every device.

    Exits with status 1 when some IDs are unknown or not visible to you.

    \b
    Examples:
      notifyd read 1201 1202
      notifyd read --unread 1201
      notifyd read --all
      notifyd read --all --topic backups
    """
    unread, topic, category = opts["unread"], opts["topic"], opts["category"]
    if all_ == bool(ids):
        raise click.UsageError("give event IDs to mark, or --all for the whole inbox")
    if all_ and unread:
        raise click.UsageError("--unread works with IDs only")
    if (topic or category) and not all_:
        raise click.UsageError("--topic and --category only narrow --all")
    if all_:
        result = client.read_all(topic=topic, category=category)
        if as_json:
            _print_json(result)
        elif result.get("updated"):
            n = result["updated"]
            click.echo(f"marked {clifmt.plural(n, 'event')} read (up to #{result.get('upto')})")
        else:
            click.echo("nothing to mark: no unread events", err=True)
        return
    wanted = clifmt.dedupe_ids(ids)
    state = "unread" if unread else "read"
    updated = client.set_state(wanted, state)
    done = set(updated)
    missing = [i for i in wanted if i not in done]
    if as_json:
        _print_json({"state": state, "updated": updated, "not_found": missing})
    elif updated:
        click.echo(f"marked {state}: " + " ".join(f"#{i}" for i in updated))
    if missing:
        listed = " ".join(f"#{i}" for i in missing)
        click.echo(f"not found (or not yours to see): {listed}", err=True)
        sys.exit(1)


# --- users --------------------------------------------------------------------


@main.group(context_settings=CONTEXT)
def users() -> None:
    """Manage users (admin only).

    \b
    Examples:
      notifyd users add alice
      printf '%s' "$PW" | notifyd users add bob --admin --password-stdin
      notifyd users list
    """


@users.command("add")
@click.argument("name")
@click.option("--admin", is_flag=True, help="Give the user the admin role.")
@click.option("--password-stdin", is_flag=True, help="Read a web password from stdin.")
@client_options
@output_options
def users_add(client: Any, as_json: bool, name: str, admin: bool, password_stdin: bool) -> None:
    """Create user NAME, optionally with a password for the web page.

    Without --password-stdin the user has no password and uses tokens only. On a
    terminal, --password-stdin prompts without echoing.

    \b
    Examples:
      notifyd users add alice
      notifyd users add ops --admin --password-stdin
      printf '%s' "$PW" | notifyd users add bob --password-stdin
    """
    password = _read_password() if password_stdin else None
    user = client.add_user(name, "admin" if admin else "user", password)
    _report(as_json, user, f"added user {user.get('name', name)} ({user.get('role', 'user')})")


@users.command("list")
@client_options
@output_options
def users_list(client: Any, as_json: bool) -> None:
    """List users.

    \b
    Examples:
      notifyd users list
      notifyd users list --json | jq -r '.users[].name'
    """
    found = client.users()
    if as_json:
        _print_json({"users": found})
    else:
        _print_table(clifmt.users_table(found), "no users")


@users.command("remove")
@click.argument("name")
@client_options
@output_options
def users_remove(client: Any, as_json: bool, name: str) -> None:
    """Delete user NAME.

    \b
    Examples:
      notifyd users remove alice
    """
    client.remove_user(name)
    _report(as_json, {"user": name, "removed": True}, f"removed user {name}")


@users.command("passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin (default).")
@client_options
@output_options
def users_passwd(client: Any, as_json: bool, name: str, password_stdin: bool) -> None:
    """Set the web password of user NAME, read from stdin.

    On a terminal it prompts twice without echoing.

    \b
    Examples:
      notifyd users passwd alice
      printf '%s' "$PW" | notifyd users passwd alice --password-stdin
    """
    client.set_password(name, _read_password())
    _report(as_json, {"user": name, "password_set": True}, f"password set for {name}")


# --- tokens -------------------------------------------------------------------


@main.group(context_settings=CONTEXT)
def tokens() -> None:
    """Manage API tokens (admin only).

    \b
    Examples:
      notifyd tokens create --user alice --scope publish --topics 'alerts/*'
      notifyd tokens list --user alice
      notifyd tokens revoke 7
    """


@tokens.command("create")
@click.option("--user", required=True, help="Owner of the token.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    metavar="SCOPES",
    callback=_checked(clifmt.parse_scopes, whole=True),
    help="Comma-separated: publish, subscribe, admin.  [default: the server's]",
)
@click.option("--topics", metavar="PATTERN", help="Limit the token to topics matching PATTERN.")
@click.option("--label", help="A note on what the token is for.")
@client_options
@output_options
def tokens_create(client: Any, as_json: bool, user: str, scopes: Any, **opts: Any) -> None:
    """Create a token and print it alone on stdout. It is shown only this once.

    \b
    Examples:
      notifyd tokens create --user alice
      notifyd tokens create --user ci --scope publish --topics 'deploys/*' --label CI
      export NOTIFYD_TOKEN=$(notifyd tokens create --user phone --scope subscribe)
    """
    created = client.create_token(user, list(scopes or ()) or None, opts["topics"], opts["label"])
    _report(as_json, created, str(created.get("token")))
    if not as_json and sys.stdout.isatty():
        click.echo("store it now: notifyd keeps only a hash and cannot show it again", err=True)


@tokens.command("list")
@click.option("--user", help="Only tokens of this user.")
@client_options
@output_options
def tokens_list(client: Any, as_json: bool, user: str | None) -> None:
    """List tokens; never their secrets, the prefix identifies each.

    \b
    Examples:
      notifyd tokens list
      notifyd tokens list --user alice --json
    """
    found = client.tokens(user)
    if as_json:
        _print_json({"tokens": found})
    else:
        _print_table(clifmt.tokens_table(found), "no tokens")


@tokens.command("revoke")
@click.argument("token_id", metavar="ID", type=int)
@client_options
@output_options
def tokens_revoke(client: Any, as_json: bool, token_id: int) -> None:
    """Revoke token ID (see `notifyd tokens list`); it stops working at once.

    \b
    Examples:
      notifyd tokens revoke 7
    """
    client.revoke_token(token_id)
    _report(as_json, {"id": token_id, "revoked": True}, f"revoked token {token_id}")


# --- ACL ----------------------------------------------------------------------


@main.group(context_settings=CONTEXT)
def acl() -> None:
    """Manage who may read and write which topics (admin only).

    Patterns are topics where * matches any run of characters, / included. Admins
    may read and write every topic without entries.

    \b
    Examples:
      notifyd acl grant alice 'alerts/*' read
      notifyd acl list --user alice
      notifyd acl revoke alice 'alerts/*'
    """


@acl.command("grant")
@click.argument("user")
@click.argument("pattern")
@click.argument("permission", type=click.Choice(["read", "write", "rw"]))
@client_options
@output_options
def acl_grant(client: Any, as_json: bool, user: str, pattern: str, permission: str) -> None:
    """Let USER read, write or both (rw) on topics matching PATTERN.

    \b
    Examples:
      notifyd acl grant alice 'alerts/*' read
      notifyd acl grant ci 'deploys/*' write
      notifyd acl grant bob backups rw
    """
    entry = client.grant(user, pattern, permission)
    may = {"rw": "read and write", "none": "no longer access"}.get(clifmt.permission_of(entry))
    _report(as_json, entry, f"{user} may now {may or clifmt.permission_of(entry)} {pattern}")


@acl.command("list")
@click.option("--user", help="Only entries of this user.")
@client_options
@output_options
def acl_list(client: Any, as_json: bool, user: str | None) -> None:
    """List ACL entries.

    \b
    Examples:
      notifyd acl list
      notifyd acl list --user alice
    """
    found = client.acl(user)
    if as_json:
        _print_json({"acl": found})
    else:
        _print_table(clifmt.acl_table(found), "no ACL entries (admins need none)")


@acl.command("revoke")
@click.argument("user")
@click.argument("pattern")
@client_options
@output_options
def acl_revoke(client: Any, as_json: bool, user: str, pattern: str) -> None:
    """Remove USER's entry for PATTERN (exactly as `acl list` shows it).

    \b
    Examples:
      notifyd acl revoke alice 'alerts/*'
    """
    client.revoke(user, pattern)
    done = {"user": user, "pattern": pattern, "revoked": True}
    _report(as_json, done, f"revoked {user}'s access to {pattern}")


# --- TUI ----------------------------------------------------------------------


@main.command()
@_connection_params
def tui(**connection: Any) -> None:
    """Open the terminal interface: inbox, history and read state.

    \b
    Examples:
      notifyd tui
      notifyd tui --url https://notify.example.com --token nfy_…
    """
    given = _from_command_line(connection)
    # The TUI resolves its connection like every client does, from the environment.
    for name, var in zip(_CONNECTION, ("SOCKET", "URL", "TOKEN"), strict=True):
        if name in given:
            os.environ[f"NOTIFYD_{var}"] = given[name]
    if "url" in given and "socket_path" not in given:
        os.environ.pop("NOTIFYD_SOCKET", None)
    try:
        from notifyd.tui.app import main as tui_main
    except ImportError as exc:
        if exc.name == "textual":
            raise click.ClickException("the TUI needs textual: pip install textual") from exc
        raise click.ClickException("the TUI is not built yet") from exc
    tui_main()
