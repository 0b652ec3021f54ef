"""The ``notifyd`` command: runs the daemon (``serve``) and talks to it (everything else).

Commands stay thin: HTTP lives in :mod:`notifyd.client`, formatting in
:mod:`notifyd.cli.format`. httpx is imported only when a command needs the daemon, so
shell completion and ``--help`` stay fast.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from notifyd import __version__
from notifyd.cli import format as clifmt
from notifyd.cli.admin import acl, tokens, users
from notifyd.cli.cluster import migrate_command
from notifyd.cli.config import config
from notifyd.cli.delivery import channels, deliveries, plugins, prefs, stats
from notifyd.cli.hooks import hooks
from notifyd.cli.ops import OPS_COMMANDS
from notifyd.cli.options import (
    CONNECTION,
    CONTEXT,
    checked,
    client_options,
    complete_priority,
    connection_params,
    from_command_line,
    output_options,
    print_json,
    print_table,
    report,
    use_color,
)

# --- the group ----------------------------------------------------------------


class PluginGroup(click.Group):
    """The ``notifyd`` group: plugins' ``register_commands`` hooks are consulted
    only when a command is not built in (or for the full list in ``--help``), so
    the common commands never pay for loading plugins."""

    _loaded = False

    def _load_plugins(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        from notifyd.core.plugins import Plugins

        modules = [m for m in os.environ.get("NOTIFYD_PLUGINS", "").split(",") if m]
        Plugins(modules=modules).call_safely("register_commands", cli=self)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None:
            self._load_plugins()
            command = super().get_command(ctx, cmd_name)
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_plugins()
        return super().list_commands(ctx)


@click.group(cls=PluginGroup, context_settings=CONTEXT)
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
@click.option(
    "--database-url",
    metavar="URL",
    help="Database: empty = SQLite in the data dir, sqlite:///PATH, postgresql://… "
    "(keep a password out of it: --database-password-file).",
)
@click.option(
    "--database-password-file",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="File holding the database password.",
)
@click.option("--node-name", metavar="NAME", help="This node's name in logs, /healthz, /metrics.")
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
    for key in ("database_url", "database_password_file", "node_name"):
        if flags[key] is not None:
            overrides[key] = flags[key]
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
    from notifyd.core.config import redact_url
    from notifyd.core.errors import StoreUnavailable

    try:
        run(config, reload=lambda: load_config(config_path, overrides))
    except StoreUnavailable as exc:  # PostgreSQL cannot be reached at start
        where = redact_url(config.database_url)
        raise click.ClickException(f"cannot open the database {where}: {exc}") from exc
    except OSError as exc:  # a listener that cannot be bound or was refused
        raise click.ClickException(f"cannot serve: {exc}") from exc
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
    callback=checked(clifmt.check_priority),
    shell_complete=complete_priority,
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
    callback=checked(clifmt.parse_action),
    help="Button (up to 3); 'LABEL=POST URL' sends a request instead.",
)
@click.option("--markdown", is_flag=True, help="The body is Markdown.")
@click.option("--sensitive", is_flag=True, help="Pushes and emails get only a generic line.")
@click.option("--collapse-key", metavar="KEY", help="Replaces earlier events with this key.")
@click.option(
    "--deliver-at",
    metavar="WHEN",
    callback=checked(clifmt.parse_when),
    help="Hold until: 30m, 2h, 1d, or a date-time (local unless it has a zone).",
)
@click.option(
    "--expires-at",
    metavar="WHEN",
    callback=checked(clifmt.parse_when),
    help="Hide from then on; like --deliver-at.",
)
@click.option("--idempotency-key", metavar="KEY", help="Makes retrying this send safe.")
@click.option(
    "--attach",
    metavar="FILE",
    type=click.Path(exists=True, dir_okay=False, readable=True),
    help="Upload FILE and attach it (images show inline in the web page and pushes).",
)
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
      notifyd send cameras "Someone at the door" --attach snapshot.jpg
      notifyd send reports "Weekly report" --attach report.pdf --title Reports
    """
    attach = opts.pop("attach")
    if body is None:
        if not sys.stdin.isatty():
            body = sys.stdin.read().rstrip("\n")
        elif not opts["title"] and not attach:
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
    if attach:
        uploaded = _upload(client, attach)
        event["attachment"] = {"id": uploaded["id"]}
        if not event.get("title") and not event.get("body"):
            event["title"] = uploaded.get("name") or os.path.basename(attach)
    stored = client.publish(event, idempotency_key=key)
    if as_json or stored.get("id") is not None:
        report(as_json, stored, str(stored.get("id")))
    else:
        # A scheduled event gets its id (its place in the stream) only when it is due.
        when = clifmt.short_time(stored.get("deliver_at"))
        click.echo(f"scheduled for {when} (schedule #{stored.get('scheduled_id')})", err=True)


def _upload(client: Any, path: str) -> dict:
    """Upload the file at ``path`` (streamed, with a progress line on a terminal for
    files over 1 MiB); returns the daemon's attachment object."""
    import mimetypes

    from notifyd.cli.ops import CHUNK, Progress

    name = os.path.basename(path)
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise click.BadParameter(
            f"cannot read {path}: {exc.strerror}", param_hint="--attach"
        ) from None
    with f:
        size = os.fstat(f.fileno()).st_size
        progress = Progress(f"upload {name}", size or None)
        progress.enabled = progress.enabled and size > 1024 * 1024

        def chunks() -> Any:
            while data := f.read(CHUNK):
                progress.advance(len(data))
                yield data
            progress.close()

        kind = mimetypes.guess_type(name)[0]
        return dict(client.upload_attachment(chunks(), name, size=size, content_type=kind))


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
    color = use_color()

    def on_retry(delay: float, reason: str) -> None:
        click.echo(f"notifyd: {reason}; reconnecting in {delay:.1f} s", err=True)

    try:
        for frame in client.follow(topics, start, on_retry=on_retry):
            event = frame.get("event")
            if frame.get("type") != "event" or not isinstance(event, dict):
                continue  # read-state changes matter to inbox views, not to a log of events
            if as_json:
                print_json(event, compact=True)
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
    callback=checked(clifmt.parse_priority),
    shell_complete=complete_priority,
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
        print_json(page)
        return
    events = page.get("events") or []
    unread_rows = [e.get("read") is False for e in events]
    print_table(clifmt.events_table(events), "no events match", bold_rows=unread_rows)
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
            print_json(result)
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
        print_json({"state": state, "updated": updated, "not_found": missing})
    elif updated:
        click.echo(f"marked {state}: " + " ".join(f"#{i}" for i in updated))
    if missing:
        listed = " ".join(f"#{i}" for i in missing)
        click.echo(f"not found (or not yours to see): {listed}", err=True)
        sys.exit(1)


# --- users --------------------------------------------------------------------


@main.command()
@connection_params
def tui(**connection: Any) -> None:
    """Open the terminal interface: inbox, history and read state.

    \b
    Examples:
      notifyd tui
      notifyd tui --url https://notify.example.com --token nfy_…
    """
    given = from_command_line(connection)
    # The TUI resolves its connection like every client does, from the environment.
    for name, var in zip(CONNECTION, ("SOCKET", "URL", "TOKEN"), strict=True):
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


main.add_command(users)
main.add_command(tokens)
main.add_command(acl)
main.add_command(channels)
main.add_command(deliveries)
main.add_command(stats)
main.add_command(plugins)
main.add_command(prefs)
main.add_command(hooks)
main.add_command(config)
for _command in OPS_COMMANDS:
    main.add_command(_command)
main.add_command(migrate_command(serve))  # with serve's own database options
