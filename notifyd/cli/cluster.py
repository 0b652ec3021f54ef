"""Commands that work on the database itself, with no daemon: ``notifyd migrate``.

``migrate`` takes the database options of ``serve`` (the same option objects, so
the two never drift apart) and loads the configuration the way ``serve`` does;
the work is :func:`notifyd.core.storage.migrate_database`, which knows the engines.
"""

from __future__ import annotations

from typing import Any, cast

import click

from notifyd.cli.options import CONTEXT, output_options, print_json, print_table

#: the options of ``serve`` that say which database, and how to reach it
DATABASE_OPTIONS = ("config_path", "data_dir", "database_url", "database_password_file")

MIGRATE_HELP = """Bring the database's schema up to date, then exit.

The database is the one `notifyd serve` would open with the same flags and
configuration: SQLite in the data dir (or database_url = sqlite:///PATH), or
PostgreSQL (database_url = postgresql://…, the password in
database_password_file). `serve` migrates by itself when it starts; run this
before an upgrade's nodes start, or to check. It is safe while nodes run and
when several migrate at once: on PostgreSQL one migration runs at a time (an
advisory lock), the others find nothing left to do. Running it again does
nothing.

A database whose schema is newer than this notifyd (a newer version migrated
it) is refused: nothing is changed, and the exit status is 1. So is a server
that cannot be reached (the message never shows the password).

\b
Examples:
  notifyd migrate --config /etc/notifyd/notifyd.toml
  notifyd migrate --database-url postgresql://notifyd@db.internal/notifyd \\
      --database-password-file /etc/notifyd/db-password
  notifyd migrate --data-dir /var/lib/notifyd --json
"""


def _migrate(as_json: bool, config_path: str | None, **flags: Any) -> None:
    from notifyd.config import ConfigError, load_config
    from notifyd.core.errors import StoreUnavailable
    from notifyd.core.storage import database_location, migrate_database

    # like serve: a flag not given leaves the file's and the environment's value
    try:
        config = load_config(config_path, flags)
    except ConfigError as exc:
        raise click.ClickException(f"bad configuration: {exc}") from exc
    try:
        report = migrate_database(config)
    except StoreUnavailable as exc:
        raise click.ClickException(f"cannot migrate {database_location(config)}: {exc}") from exc
    except ConfigError as exc:  # database_password_file unreadable since it was checked
        raise click.ClickException(str(exc)) from exc
    result = {
        "engine": report.engine,
        "database": report.location,
        "before": report.before,
        "after": report.after,
        "applied": report.applied,
    }
    if as_json:
        print_json(result)
        return
    before = "none" if report.before is None else str(report.before)
    print_table(
        (
            ["ENGINE", "DATABASE", "BEFORE", "AFTER", "APPLIED"],
            [[report.engine, report.location, before, report.after, report.applied]],
        ),
        "",
    )
    if not report.applied:
        click.echo("the schema was up to date: nothing to do", err=True)


def migrate_command(serve: click.Command) -> click.Command:
    """``notifyd migrate``, built with ``serve``'s own database options."""
    shared = [p for p in serve.params if p.name in DATABASE_OPTIONS]
    missing = set(DATABASE_OPTIONS) - {p.name for p in shared}
    assert not missing, f"serve has no option for {missing}"
    command = click.Command(
        "migrate",
        callback=_migrate,
        params=shared,
        help=MIGRATE_HELP,
        short_help="Bring the database's schema up to date.",
        context_settings=CONTEXT,
    )
    return cast(click.Command, output_options(command))
