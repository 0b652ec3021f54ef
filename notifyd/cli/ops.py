"""Operations commands: backup, export, import, doctor.

``backup``, ``export`` and ``import`` go through the daemon (its socket, or an
admin token over HTTP), so that they are consistent with what it serves; the
formats and rules live in :mod:`notifyd.core.transfer` and the store's engine
(reached through :mod:`notifyd.core.storage`), documented in docs/operations.md. Progress
goes to stderr, and only when stderr is a terminal, so that stdout (``--json``,
``export -``) stays clean.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click

from notifyd.cli import format as clifmt
from notifyd.cli.options import (
    CONTEXT,
    client_options,
    connection_params,
    from_command_line,
    output_options,
    print_json,
)

CHUNK = 256 * 1024


# --- helpers --------------------------------------------------------------------


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


class Progress:
    """One line of progress on stderr, redrawn at most ten times a second, and
    only when stderr is a terminal (never in pipes, logs or cron mail)."""

    def __init__(self, label: str, total: int | None = None, *, unit: str = "bytes") -> None:
        self.label, self.total, self.unit = label, total, unit
        self.done = 0
        self.enabled = sys.stderr.isatty()
        self._drawn = 0.0

    def _fmt(self, n: int) -> str:
        return _size(n) if self.unit == "bytes" else f"{n:,} {self.unit}"

    def update(self, done: int, *, force: bool = False) -> None:
        self.done = done
        now = time.monotonic()
        if not self.enabled or (not force and now - self._drawn < 0.1):
            return
        self._drawn = now
        text = f"{self.label}: {self._fmt(done)}"
        if self.total:
            share = min(done / self.total, 1.0)
            bar = "#" * int(share * 30)
            text = f"{self.label}: [{bar:<30}] {share:4.0%}  {self._fmt(done)} of {self._fmt(self.total)}"
        click.echo("\r" + text + "\x1b[K", nl=False, err=True)

    def advance(self, n: int) -> None:
        self.update(self.done + n)

    def close(self) -> None:
        if self.enabled and self._drawn:
            self.update(self.done, force=True)
            click.echo("", err=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_target(path: Path, force: bool) -> None:
    if path.is_dir():
        raise click.ClickException(f"{path} is a directory: give a file name")
    if not path.parent.is_dir():
        raise click.ClickException(f"directory {path.parent} does not exist")
    if path.exists() and not force:
        raise click.ClickException(f"{path} exists already: pass --force to replace it")


@contextlib.contextmanager
def _atomic_file(path: Path, force: bool) -> Iterator[tuple[IO[bytes], Path]]:
    """A temporary file (mode 0600) next to ``path``, moved into place when the
    block ends without an error, removed otherwise. The caller may verify it before
    the block ends. Without ``force`` an existing ``path`` is never replaced, even
    one that appeared meanwhile."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f, tmp
            f.flush()
            os.fsync(f.fileno())
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise click.ClickException(
                    f"{path} appeared meanwhile: pass --force to replace it"
                ) from None
            except OSError:  # a filesystem without hard links
                if path.exists():
                    raise click.ClickException(f"{path} exists: pass --force") from None
                os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        tmp.unlink(missing_ok=True)


# --- backup ---------------------------------------------------------------------


@click.command(context_settings=CONTEXT)
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", "-f", is_flag=True, help="Replace FILE if it exists.")
@client_options
@output_options
def backup(client: Any, as_json: bool, file: Path, force: bool) -> None:
    """Save a consistent copy of the live database to FILE.

    The daemon copies its SQLite database with SQLite's online backup API while it
    keeps serving and publishing (the copy holds everything committed when the
    backup began), and streams it here. FILE is written next to its final name,
    checked with PRAGMA integrity_check, and only then moved into place (mode 0600:
    it holds password and token hashes and channel secrets). To restore, stop the
    daemon, copy FILE to <data_dir>/notifyd.db (removing notifyd.db-wal and
    notifyd.db-shm), and start it again.

    \b
    Examples:
      notifyd backup /var/backups/notifyd/notifyd-$(date +%F).db
      notifyd backup nightly.db --force --json
      notifyd backup copy.db --url https://notify.example.com --token nfy_…
    """
    from notifyd.core.storage import verify_backup

    _check_target(file, force)
    if sys.stderr.isatty():
        click.echo("backup: the daemon is copying a snapshot of its database…", err=True)
    with _atomic_file(file, force) as (out, tmp):
        with client.stream("GET", "/v1/admin/backup") as resp:
            total = int(resp.headers.get("content-length") or 0) or None
            written = 0
            with Progress("backup", total) as progress:
                for chunk in resp.iter_bytes(CHUNK):
                    out.write(chunk)
                    written += len(chunk)
                    progress.update(written)
            expected_last = resp.headers.get("x-notifyd-last-event-id")
            engine = resp.headers.get("x-notifyd-engine") or "sqlite"
        if total is not None and written != total:
            raise click.ClickException(
                f"the backup stopped after {_size(written)} of {_size(total)}: try again"
            )
        out.flush()
        report = verify_backup(tmp, engine)
        if not report.ok:
            raise click.ClickException(
                "the backup failed its integrity check, nothing was written: "
                + "; ".join(report.problems[:3])
            )
        if expected_last is not None and str(report.last_event_id) != expected_last:
            raise click.ClickException(
                f"the backup holds events up to #{report.last_event_id}, the daemon said "
                f"#{expected_last}: try again"
            )
    result = {
        "file": str(file),
        "bytes": written,
        "integrity": "ok",
        "events": report.events,
        "last_event_id": report.last_event_id,
        "schema_version": report.schema_version,
    }
    if as_json:
        print_json(result)
    else:
        click.echo(
            f"backup: {file} ({_size(written)}, {clifmt.plural(report.events or 0, 'event')} "
            f"up to #{report.last_event_id}), integrity ok"
        )


# --- export ---------------------------------------------------------------------


@click.command(context_settings=CONTEXT)
@click.argument("file", default="-", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--topic", help="Only this topic, or topics matching a '*' pattern.")
@click.option("--since", type=click.IntRange(min=0), metavar="ID", help="Only events after ID.")
@click.option(
    "--with-accounts",
    is_flag=True,
    help="Also the installation: users (with password hashes), tokens (their SHA-256 "
    "digests), ACL grants, channels and Web Push subscriptions (configs with their "
    "secrets), preferences and the Web Push (VAPID) private key. The file is then "
    "SECRET, like a backup. Without it: events and read state only (shareable history).",
)
@click.option("--force", "-f", is_flag=True, help="Replace FILE if it exists.")
@client_options
@output_options
def export(
    client: Any,
    as_json: bool,
    file: str,
    topic: str | None,
    since: int | None,
    with_accounts: bool,
    force: bool,
) -> None:
    """Write events with their read state (and, with --with-accounts, the whole
    installation) as JSON Lines to FILE (or stdout: -).

    Line 1 is a header (format version, source, time, counts); with
    --with-accounts the installation follows (users, tokens, grants, channels,
    preferences, the Web Push key); then one line per event, oldest first: every
    field of the event, plus its read state per user name. The export reads one
    snapshot of the database, so it is consistent while the daemon keeps
    publishing. Read it back with `notifyd import`, into the same engine or the
    other one (SQLite or PostgreSQL); the format is described in
    docs/operations.md. FILE is written mode 0600. With --with-accounts it holds
    password hashes, token digests (the tokens keep working wherever it is
    imported), channel secrets and the Web Push private key: keep it like a
    backup, delete it after the move. Without --with-accounts it holds events and
    read state only (format version 1). With --json, a summary is printed (FILE
    must then be a file).

    \b
    Examples:
      notifyd export events.jsonl
      notifyd export - --topic 'alerts/*' | gzip > alerts.jsonl.gz
      notifyd export recent.jsonl --since 12000 --force --json
    \b
    Moving a whole installation from SQLite to PostgreSQL (cluster mode):
      notifyd export /root/notifyd-move.jsonl --with-accounts    # on the old machine
      notifyd import /root/notifyd-move.jsonl --url https://node1.example.com --token nfy_…
      # then copy <data_dir>/vapid_private.pem of node1 to every other node
    """
    to_stdout = file == "-"
    if to_stdout and as_json:
        raise click.UsageError("--json prints a summary, so it needs a FILE (not -)")
    params: dict[str, Any] = {"topic": topic, "since": since}
    if with_accounts:
        params["accounts"] = "true"
    path = Path(file)
    if not to_stdout:
        _check_target(path, force)
    sink: contextlib.AbstractContextManager[tuple[IO[bytes], Path | None]] = (
        contextlib.nullcontext((sys.stdout.buffer, None))
        if to_stdout
        else _atomic_file(path, force)
    )
    try:
        with sink as (out, _tmp), client.stream("GET", "/v1/admin/export", params=params) as resp:
            head, events = _receive_export(resp, out)
    except BrokenPipeError:
        # the reader went away (`notifyd export - | head`): stop quietly, as cat does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)
    counts = head.get("counts") or {}
    users = counts.get("users", 0)
    summary: dict[str, Any] = {"file": file, "events": events, "users": users, "header": head}
    if with_accounts:
        summary["accounts"] = counts.get("accounts") or {}
    if as_json:
        print_json(summary)
        return
    where = "stdout" if to_stdout else file
    click.echo(
        f"exported {clifmt.plural(events, 'event')} "
        f"(read state of {clifmt.plural(users, 'user')}) to {where}",
        err=to_stdout,
    )
    if with_accounts:
        acc = counts.get("accounts") or {}
        parts = [clifmt.plural(acc.get(kind, 0), noun) for kind, noun in _RECORD_NOUNS]
        vapid = "the Web Push key" if acc.get("vapid_key") else "no Web Push key"
        click.echo(
            f"with the installation: {', '.join(parts)}, {vapid}. The file holds secrets "
            "(password hashes, token digests, channel secrets, webhook secrets, the Web Push "
            "private key): "
            "keep it private, delete it after the move.",
            err=True,
        )


def _receive_export(resp: Any, out: IO[bytes]) -> tuple[dict[str, Any], int]:
    """Copy the export to ``out``; check that it is whole. Returns (header, events)."""
    head: dict[str, Any] = {}
    lines = 0
    records = 0  # installation records before the events (version 2 with accounts)
    pending = b""
    with Progress("export", unit="events") as progress:
        for chunk in resp.iter_bytes(CHUNK):
            out.write(chunk)
            if not head:
                pending += chunk
                first, sep, _ = pending.partition(b"\n")
                if sep:
                    head = json.loads(first)
                    counts = head.get("counts") or {}
                    progress.total = counts.get("events")
                    records = sum((counts.get("accounts") or {}).values())
                    lines -= 1  # the header line
                    pending = b""
            lines += chunk.count(b"\n")
            progress.update(max(lines - records, 0))
    events = lines - records
    announced = (head.get("counts") or {}).get("events")
    if announced is not None and events != announced:
        raise click.ClickException(
            f"the export stopped after {max(events, 0)} of {announced} events: try again"
        )
    out.flush()
    return head, events


# --- import ---------------------------------------------------------------------


@click.command("import", context_settings=CONTEXT)
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, exists=True))
@click.option(
    "--create-users",
    is_flag=True,
    help="Create users named in the read state that do not exist here (no password). "
    "Not needed for an export --with-accounts: its users come with it.",
)
@click.option(
    "--replace-vapid-key",
    is_flag=True,
    help="Replace this daemon's Web Push key with the file's even though browser "
    "subscriptions here use it (they stop receiving pushes until they subscribe again).",
)
@click.option("--dry-run", is_flag=True, help="Check the whole file; write nothing.")
@client_options
@output_options
def import_cmd(
    client: Any,
    as_json: bool,
    file: str,
    create_users: bool,
    replace_vapid_key: bool,
    dry_run: bool,
) -> None:
    """Import a `notifyd export` file (or stdin: -): events with their read state
    and, from an export --with-accounts, the whole installation.

    Every line is checked before anything is written: a bad line fails the import
    with its line number, and nothing is imported. The installation comes first,
    in one transaction: users (their passwords keep working), tokens (they keep
    working), grants, channels, Web Push subscriptions and preferences; what this
    daemon already holds under the same name is left as it is (and listed as
    "kept" when it differs). The Web Push key is installed in the data directory
    when this daemon has none or no subscription uses its own; a different key
    that subscriptions here use is a conflict (exit 1, nothing written) unless
    --replace-vapid-key. Events keep their fields and created_at but get new ids,
    after the newest event here, in file order. Events already here (same
    created_at, topic, title and body) are skipped, so importing the same file
    again does nothing, and an interrupted import finishes when run again.
    Imported events are history: no pushes or emails are sent.

    \b
    Examples:
      notifyd import events.jsonl
      notifyd import events.jsonl --dry-run
      ssh old-box notifyd export - | notifyd import - --create-users --json
    \b
    SQLite (one machine) to PostgreSQL (a cluster), through any node:
      ssh old-box notifyd export - --with-accounts > move.jsonl   # mode 0600: secret
      notifyd import move.jsonl --dry-run --url https://node1.example.com --token nfy_…
      notifyd import move.jsonl --url https://node1.example.com --token nfy_…
      # copy node1's <data_dir>/vapid_private.pem to every other node, restart them
    """
    from_stdin = file == "-"
    if from_stdin:
        source: IO[bytes] = sys.stdin.buffer
        total = None
    else:
        source = open(file, "rb")  # noqa: SIM115 - closed below
        total = os.fstat(source.fileno()).st_size or None

    progress = Progress("import", total)

    def chunks() -> Iterator[bytes]:
        while data := source.read(CHUNK):
            progress.advance(len(data))
            yield data
        progress.close()
        if progress.enabled and not dry_run:
            click.echo("import: writing…", err=True)

    params = {"create_users": "true" if create_users else None,
              "replace_vapid_key": "true" if replace_vapid_key else None,
              "dry_run": "true" if dry_run else None}  # fmt: skip
    headers = {"Content-Type": "application/x-ndjson"}
    try:
        with client.stream(
            "POST", "/v1/admin/import", params=params, content=chunks(), headers=headers
        ) as resp:
            report = json.loads(resp.read())
    finally:
        if not from_stdin:
            source.close()
    if as_json:
        print_json(report)
        return
    _print_import(report)


_RECORD_NOUNS = (("user", "user"), ("token", "token"), ("grant", "grant"),
                 ("channel", "channel"), ("preferences", "preferences document"),
                 ("hook", "webhook"))  # fmt: skip


def _print_installation(r: dict[str, Any]) -> None:
    records = r.get("records") or {}
    acc = r.get("accounts")
    if r.get("dry_run") or acc is None:
        listed = ", ".join(clifmt.plural(records.get(k, 0), n) for k, n in _RECORD_NOUNS)
        click.echo(f"installation: {listed}")
    else:
        added, present = acc.get("added") or {}, acc.get("present") or {}
        listed = ", ".join(clifmt.plural(added.get(k, 0), n) for k, n in _RECORD_NOUNS)
        same = sum(present.values())
        click.echo(f"installation: added {listed}; {same} already here")
        if added.get("password"):
            click.echo(f"passwords set on {clifmt.plural(added['password'], 'user')} that had none")
        if acc.get("kept"):
            click.echo(
                "kept as they are here (the file's differ): "
                + ", ".join(acc["kept"][:20])
                + (f" and {len(acc['kept']) - 20} more" if len(acc["kept"]) > 20 else ""),
                err=True,
            )
    vapid = r.get("vapid_key")
    if vapid:
        said = {
            "installed": "installed in the data directory",
            "replaced": "replaced (subscriptions made with the old key must subscribe again)",
            "present": "already this daemon's",
            "not written": "not written",
        }.get(vapid, vapid)
        verb = "would be " if r.get("dry_run") and vapid in ("installed", "replaced") else ""
        click.echo(f"Web Push key: {verb}{said}")


def _print_import(r: dict[str, Any]) -> None:
    n = r.get("events", 0)
    if "accounts" in (r.get("parts") or ()):
        _print_installation(r)
    if r.get("dry_run"):
        click.echo(f"valid: {clifmt.plural(n, 'event')} (dry run: nothing written)")
    elif r.get("imported"):
        click.echo(
            f"imported {clifmt.plural(r['imported'], 'event')} as #{r['first_id']}–#{r['last_id']}"
            f" (new ids); {r.get('skipped', 0)} already here, skipped"
        )
    else:
        click.echo(f"nothing new: all {clifmt.plural(n, 'event')} are here already")
    if r.get("states"):
        entries = "1 entry" if r["states"] == 1 else f"{r['states']} entries"
        click.echo(f"read state: {entries} restored")
    if r.get("users_created"):
        click.echo("created users: " + ", ".join(r["users_created"]))
    if r.get("users_missing"):
        click.echo(
            f"not on this daemon, so their read state ({r.get('states_skipped', 0)} entries) was "
            "skipped: " + ", ".join(r["users_missing"]) + " (use --create-users, or create "
            "them before importing)",
            err=True,
        )
    soon = int(r.get("older_than_retention") or 0) + int(r.get("expired") or 0)
    if soon:
        click.echo(
            f"note: {clifmt.plural(soon, 'event')} are past retention_days or their expires_at; "
            "the daemon will prune them shortly",
            err=True,
        )


# --- doctor ---------------------------------------------------------------------

_STATUS_STYLE = {
    "ok": {"fg": "green"},
    "warn": {"fg": "yellow"},
    "fail": {"fg": "red", "bold": True},
}


@click.command(context_settings=CONTEXT)
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), help="TOML file, as for serve."
)
@click.option("--data-dir", type=click.Path(file_okay=False), help="As for serve.")
@click.option(
    "--test-channels",
    is_flag=True,
    help="Send a real test notification through every channel (their owners get it).",
)
@connection_params
@output_options
def doctor(
    as_json: bool,
    config_path: str | None,
    data_dir: str | None,
    test_channels: bool,
    **connection: Any,
) -> None:
    """Check the installation: each check prints ok, warn or fail and why.

    \b
    Checks:
      config      the configuration loads (the same rules as serve)
      disk        free space in data_dir (warn < 1 GiB or < 10 %, fail < 100 MiB)
      vapid       the Web Push private key exists with mode 0600
      socket      the Unix socket exists with mode 0660 (never open to others)
      daemon      the daemon answers /healthz
      database    SQLite quick_check (through the daemon; on the file if it is down);
                  on PostgreSQL notifyd's consistency checks (on the server if it is down)
      deliveries  dead deliveries in the outbox
      channels    each channel's last success or error (--test-channels: send a test)

    \b
    Cluster checks (database_url = postgresql://…, read on the server directly):
      connection  the server answers: its version, one round trip's time
      schema      the schema version: up to date, behind (notifyd migrate) or ahead
                  of this notifyd (fail: a newer version migrated it)
      nodes       every node's heartbeat; one not seen for over 60 s is a warning
      clock       each node's clock against the server's: warn beyond 1 s, fail
                  beyond 5 s (event times, schedules and leases rely on them)

    Exit status: 0 when nothing failed (warnings allowed), 1 otherwise.

    \b
    Examples:
      notifyd doctor
      notifyd doctor --config /etc/notifyd/notifyd.toml
      notifyd doctor --test-channels --json
      NOTIFYD_DATABASE_URL=postgresql://notifyd@db.internal/notifyd notifyd doctor
    """
    from notifyd.client import Client, ClientError
    from notifyd.core import doctor as checks

    overrides = {"data_dir": data_dir} if data_dir else {}
    given = from_command_line(connection)
    if given.get("socket_path"):
        overrides["socket"] = given["socket_path"]
    if not given and not (os.environ.get("NOTIFYD_SOCKET") or os.environ.get("NOTIFYD_URL")):
        # like serve: the socket the configuration names
        _, config = checks.check_config(config_path, overrides)
        if config is not None and config.socket_path is not None:
            given = {"socket_path": str(config.socket_path)}
    try:
        client = Client(**given)
    except ClientError as exc:
        raise click.ClickException(str(exc)) from exc
    with client:
        results = checks.run_checks(
            config_path,
            overrides,
            client.request,
            client.target,
            Path(client.socket_path) if client.socket_path else None,
            test_channels=test_channels,
        )
    status = checks.exit_status(results)
    if as_json:
        print_json({"ok": status == 0, "checks": [c.to_json() for c in results]})
    else:
        color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
        width = max(len(c.name) for c in results)
        for c in results:
            label = f"{c.status:<4}"
            if color:
                label = click.style(label, **_STATUS_STYLE[c.status])  # type: ignore[arg-type]
            click.echo(f"{label}  {c.name:<{width}}  {c.detail}")
        failed = sum(c.status == "fail" for c in results)
        warned = sum(c.status == "warn" for c in results)
        if failed or warned:
            click.echo(
                f"{clifmt.plural(failed, 'check')} failed, {clifmt.plural(warned, 'warning')}",
                err=True,
            )
    sys.exit(status)


#: registered on the main group by notifyd.cli.app
OPS_COMMANDS: list[click.Command] = [backup, export, import_cmd, doctor]
