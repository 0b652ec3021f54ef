"""The one way to open a store: the engine named by the ``database_url`` setting.

* empty: SQLite, ``<data_dir>/notifyd.db`` (the embedded default, one machine);
* ``sqlite:///ABSOLUTE/PATH``: SQLite in that file;
* ``postgresql://…``: the cluster engine, any number of nodes on one database
  (the password may come from ``database_password_file``).

Nothing outside an engine's package constructs its store or imports its modules
(``tests/test_import_hygiene.py`` checks it); engines are imported here lazily, so
that loading this module costs nothing. Also here: the checks that look at data
no daemon has open (``notifyd doctor`` with the daemon stopped, a downloaded
backup), which only the engine knows how to read, and the commands that work on
the database itself: ``notifyd migrate`` (:func:`migrate_database`) and the
cluster checks of ``notifyd doctor`` (:func:`inspect_cluster`).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from .config import Config, ConfigError, database_engine, redact_url
from .errors import StoreUnavailable
from .store import OfflineReport, Store

if TYPE_CHECKING:
    from .postgres.nodes import ClusterState

#: who opens the store: the daemon (the writer, every reader it is configured
#: for) or the delivery worker (reads; its writes go through the daemon)
Role = Literal["daemon", "worker"]

#: read connections of the delivery worker's store
WORKER_READERS = 2


def engine_name(config: Config) -> str:
    """``sqlite`` (or ``postgresql``): the engine ``database_url`` selects."""
    return database_engine(config.database_url)


def open_store(
    config: Config, role: Role = "daemon", *, clock: Callable[[], float] | None = None
) -> Store:
    """An unstarted store for ``config`` (``await store.start()`` opens it).
    ``clock``: the wall clock that stamps events (tests pass a fake one).

    Raises:
        ConfigError: ``database_url`` names an engine this version cannot open.
    """
    engine = engine_name(config)
    if engine == "sqlite":
        from .sqlite.store import SQLiteStore

        readers = config.readers if role == "daemon" else WORKER_READERS
        if clock is None:
            return SQLiteStore(config.db_path, config.synchronous, readers=readers)
        return SQLiteStore(config.db_path, config.synchronous, readers=readers, clock=clock)
    if engine == "postgresql":
        from .postgres.store import PostgresStore

        pool = config.readers if role == "daemon" else WORKER_READERS
        return PostgresStore(
            config.database_url,
            password=config.database_password(),
            # the worker hears of commits from its daemon (the link), not from the server
            listen=role == "daemon",
            pool_size=max(2, pool),
            clock=clock,
            # the daemon is the node (its heartbeat); its delivery worker is not one
            node=config.node_name if role == "daemon" else None,
        )
    raise ConfigError(f"database_url: no engine {engine!r}")  # database_engine refused it


def node_name() -> str:
    """This machine's name in claim owners (``<node>/<process>``)."""
    return socket.gethostname() or "localhost"


def claim_node(config: Config) -> str:
    """The node part of this daemon's delivery claims. On PostgreSQL it is
    ``node_name``: the name of the node's heartbeat, by which the other nodes tell
    a live node's claims from a dead one's. On SQLite one daemon owns the
    database, and its claims are named by the host, which stays the same across
    restarts (the default ``node_name`` carries the process id), so that a
    restarted daemon ends its predecessor's claims at start."""
    if engine_name(config) == "postgresql":
        return config.node_name
    return node_name()


def claim_owner(node: str) -> str:
    """A claim owner unique to this process: ``<node>/<pid>.<random>``."""
    return f"{node}/{os.getpid()}.{os.urandom(4).hex()}"


def check_offline(config: Config) -> OfflineReport:
    """Check the database of a daemon that is not running, read-only (blocking).
    ``exists`` is False when there is no database yet."""
    engine = engine_name(config)
    if engine == "sqlite":
        from .sqlite.maintenance import check_file

        path = config.db_path
        if not path.exists():
            return OfflineReport(str(path), ["no database yet"], exists=False)
        return check_file(path, full=False)
    if engine == "postgresql":
        return _check_postgres(config)
    raise ConfigError(f"database_url: no engine {engine!r}")


def _check_postgres(config: Config) -> OfflineReport:
    """``check_offline`` on PostgreSQL: the checks of ``integrity_check``
    (read-only) on a connection of its own. Problems are in the report."""
    import psycopg

    from .postgres import nodes
    from .postgres.operations import check_database
    from .postgres.schema import schema_version

    where = database_location(config)
    url, password = config.database_url, config.database_password()
    try:
        with nodes.connect(url, password) as conn:
            version = schema_version(conn)
            if version is None:
                return OfflineReport(where, ["no notifyd schema yet"], exists=False,
                                     check="consistency")  # fmt: skip
            report = OfflineReport(where, check_database(conn, full=False), check="consistency",
                                   schema_version=version)  # fmt: skip
            if report.ok:
                row = conn.execute(
                    "SELECT (SELECT count(*) FROM events), "
                    "(SELECT last_id FROM event_sequencer WHERE id = 1)"
                ).fetchone()
                if row is not None:
                    report.events, report.last_event_id = int(row[0]), int(row[1] or 0)
            return report
    except StoreUnavailable as exc:
        return OfflineReport(where, [f"cannot connect: {exc}"])
    except psycopg.Error as exc:
        return OfflineReport(where, [nodes.scrub(str(exc), url, password)])


def database_location(config: Config) -> str:
    """Where the database is, as messages may show it (never a password)."""
    if engine_name(config) == "sqlite":
        return str(config.db_path)
    return redact_url(config.database_url)


@dataclass
class MigrationReport:
    """What ``notifyd migrate`` did: the schema version before (None: no database,
    or one notifyd never migrated) and after."""

    engine: str
    location: str
    before: int | None
    after: int

    @property
    def applied(self) -> int:
        return self.after - (self.before or 0)


def migrate_database(config: Config) -> MigrationReport:
    """Bring the database ``config`` names up to date, as ``serve`` does when it
    starts (blocking). Safe beside running daemons and other migrations: on
    PostgreSQL one migration runs at a time (an advisory lock), on SQLite each step
    is one write transaction.

    Raises:
        StoreUnavailable: the server cannot be reached, the migration failed, or
            the schema is newer than this notifyd (nothing is changed then).
    """
    engine = engine_name(config)
    where = database_location(config)
    if engine == "sqlite":
        import sqlite3

        from .sqlite.schema import MIGRATIONS, migrate
        from .sqlite.store import connect

        path = config.db_path
        before: int | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            existed = path.exists()
            conn = connect(str(path), config.synchronous)
            try:
                if existed:
                    before = int(conn.execute("PRAGMA user_version").fetchone()[0])
                if (before or 0) > len(MIGRATIONS):
                    raise StoreUnavailable(
                        f"its schema is version {before}, newer than this notifyd knows "
                        f"({len(MIGRATIONS)}): run the newer notifyd that migrated it"
                    )
                after = migrate(conn)
            finally:
                conn.close()
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"migration failed: {exc}") from exc
        return MigrationReport(engine, where, before or None, after)
    if engine == "postgresql":
        import psycopg

        from .postgres import nodes

        password = config.database_password()
        with nodes.connect(config.database_url, password) as pg:
            try:
                pg_before, after = nodes.migrate_with_report(pg)
            except psycopg.Error as exc:
                detail = nodes.scrub(str(exc), config.database_url, password)
                raise StoreUnavailable(f"migration failed: {detail}") from None
        return MigrationReport(engine, where, pg_before, after)
    raise ConfigError(f"database_url: no engine {engine!r}")


def inspect_cluster(config: Config) -> ClusterState:
    """The server, schema version and nodes of a PostgreSQL ``database_url``, read
    on a connection of its own (blocking; ``notifyd doctor``).

    Raises:
        StoreUnavailable: the server cannot be reached (no password in the message).
        ConfigError: ``database_url`` is not PostgreSQL.
    """
    if engine_name(config) != "postgresql":
        raise ConfigError("the nodes of a cluster live in PostgreSQL: database_url is not one")
    import psycopg

    from .postgres import nodes

    password = config.database_password()
    with nodes.connect(config.database_url, password) as conn:
        try:
            return nodes.read_cluster(conn)
        except psycopg.Error as exc:
            raise StoreUnavailable(nodes.scrub(str(exc), config.database_url, password)) from None


def verify_backup(path: str | Path, engine: str = "sqlite") -> OfflineReport:
    """Check a backup that ``engine`` wrote (``BackupInfo.engine``; the backup
    route sends it as ``X-Notifyd-Engine``), fully, before it replaces anything."""
    if engine == "sqlite":
        from .sqlite.maintenance import check_file

        return check_file(path, full=True)
    return OfflineReport(str(path), [f"a backup of the {engine!r} engine cannot be checked here"])
