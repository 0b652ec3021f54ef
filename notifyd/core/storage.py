"""The one way to open a store: the engine named by the ``database_url`` setting.

* empty: SQLite, ``<data_dir>/notifyd.db`` (the embedded default, one machine);
* ``sqlite:///ABSOLUTE/PATH``: SQLite in that file;
* ``postgresql://…``: the cluster engine, any number of nodes on one database
  (the password may come from ``database_password_file``).

Nothing outside an engine's package constructs its store or imports its modules
(``tests/test_import_hygiene.py`` checks it); engines are imported here lazily, so
that loading this module costs nothing. Also here: the checks that look at data
no daemon has open (``notifyd doctor`` with the daemon stopped, a downloaded
backup), which only the engine knows how to read.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from .config import Config, ConfigError, database_engine
from .store import OfflineReport, Store

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
            pool_size=max(2, pool),
            clock=clock,
        )
    raise ConfigError(f"database_url: no engine {engine!r}")  # database_engine refused it


def node_name() -> str:
    """This machine's name in claim owners (``<node>/<process>``)."""
    return socket.gethostname() or "localhost"


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
    raise ConfigError(f"database_url: no engine {engine!r}")


def verify_backup(path: str | Path, engine: str = "sqlite") -> OfflineReport:
    """Check a backup that ``engine`` wrote (``BackupInfo.engine``; the backup
    route sends it as ``X-Notifyd-Engine``), fully, before it replaces anything."""
    if engine == "sqlite":
        from .sqlite.maintenance import check_file

        return check_file(path, full=True)
    return OfflineReport(str(path), [f"a backup of the {engine!r} engine cannot be checked here"])
