"""Online backup and consistency checks of SQLite database files.

A backup copies the database with SQLite's online backup API from a dedicated
read-only connection that first opens a read transaction: in WAL mode that
transaction is a snapshot, so the copy is consistent as of its start, the writer
never waits for it, and copying in steps never restarts however fast events are
published meanwhile (a backup without the transaction starts over each time
another connection writes). The price: while the copy runs, checkpoints cannot
move the WAL past the snapshot, so the WAL may grow until it ends.

Also here: deleting events with everything that belongs to them (retention and
expiry), and giving the WAL's space back after a large delete.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import orjson

from ..store import OfflineReport

SQLITE_MAGIC = b"SQLite format 3\x00"
#: FTS5 index pages merged after each batch of deleted events
FTS_MERGE_PAGES = 100


#: what an offline check of an SQLite file is (see :class:`OfflineReport`)
FileReport = OfflineReport


def _last_id(conn: sqlite3.Connection) -> int:
    try:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    except sqlite3.DatabaseError:
        return 0
    return row[0] if row else 0


def backup_file(
    source: str,
    dest: str,
    pages: int = 1024,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, int]:
    """Copy the database ``source`` into the new file ``dest`` (blocking; run it in
    a thread). Returns (last event id, number of events) of the copied snapshot.

    The copy is left in rollback-journal mode, so that it is one self-contained
    file; the daemon switches it back to WAL when it opens it after a restore.
    """
    src = sqlite3.connect(source, isolation_level=None, check_same_thread=False, timeout=10)
    try:
        src.execute("PRAGMA query_only = ON")
        src.execute("BEGIN")
        # the first read fixes the snapshot that every step below copies
        last_id = _last_id(src)
        events = src.execute("SELECT count(*) FROM events").fetchone()[0]
        dst = sqlite3.connect(dest, isolation_level=None)
        try:

            def step(status: int, remaining: int, total: int) -> None:
                if progress is not None:
                    progress(total - remaining, total)

            src.backup(dst, pages=pages, progress=step, sleep=0)
            dst.execute("PRAGMA journal_mode = DELETE")
        finally:
            dst.close()
        src.execute("COMMIT")
    finally:
        src.close()
    fd = os.open(dest, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return last_id, events


def delete_events(conn: sqlite3.Connection, ids: list[int]) -> None:
    """Delete the events ``ids`` and what belongs to them, in the caller's transaction.

    The full-text index is updated with one statement for the whole batch (an FTS5
    'delete' needs the indexed text, so it runs before the rows go): a trigger firing
    once per row cost about three times as much, and the pruner deletes millions.
    """
    arg = (orjson.dumps(ids).decode(),)
    inside = "IN (SELECT value FROM json_each(?))"
    conn.execute(
        "INSERT INTO events_fts (events_fts, rowid, title, body) "
        f"SELECT 'delete', id, title, body FROM events WHERE id {inside}",
        arg,
    )
    for table in ("receipts", "deliveries", "event_extras"):
        conn.execute(f"DELETE FROM {table} WHERE event_id {inside}", arg)
    conn.execute(f"DELETE FROM events WHERE id {inside}", arg)
    # Each batch leaves a segment of delete markers in the FTS index. Merge a bounded
    # amount here, in the pruner's own job, so that segments never pile up to FTS5's
    # 'crisismerge' threshold, which merges a whole level at once inside some
    # publish's commit (measured: 0.5-0.7 s stalls while a million events went).
    conn.execute(
        "INSERT INTO events_fts (events_fts, rank) VALUES ('merge', ?)", (FTS_MERGE_PAGES,)
    )


def checkpoint(path: str) -> tuple[int, int]:
    """Copy what the WAL holds into the database (blocking; run it in a thread).

    Passive: it never holds up the writer or waits for readers (a truncating
    checkpoint blocks new writes until every reader has moved to the newest
    snapshot, which during a long count or export means seconds without
    publishing). The writer's ``journal_size_limit`` then shrinks the file the next
    time the WAL starts over. Returns (WAL frames, frames checkpointed).
    """
    conn = sqlite3.connect(path, isolation_level=None, timeout=10)
    try:
        row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        conn.close()
    return row[1], row[2]


def quick_check(conn: sqlite3.Connection, full: bool = False) -> list[str]:
    pragma = "integrity_check" if full else "quick_check"
    return [row[0] for row in conn.execute(f"PRAGMA {pragma}")]


def check_file(path: str | Path, full: bool = True) -> FileReport:
    """Open the database file ``path`` read-only and check it (blocking).

    Used on backups before they replace anything, and by ``notifyd doctor`` on
    the database of a daemon that is not running. Never raises for a bad file: the
    problems are in the report.
    """
    path = str(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(len(SQLITE_MAGIC))
    except OSError as exc:
        missing = isinstance(exc, FileNotFoundError)
        return FileReport(path, [f"cannot read {path}: {exc.strerror}"], exists=not missing)
    if magic != SQLITE_MAGIC:
        return FileReport(path, [f"{path} is not an SQLite database"])
    try:
        conn = sqlite3.connect(f"file:{Path(path).absolute()}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error as exc:
        return FileReport(path, [f"cannot open {path}: {exc}"])
    try:
        problems = quick_check(conn, full)
        report = FileReport(path, problems, check="integrity_check" if full else "quick_check")
        if report.ok:
            report.schema_version = conn.execute("PRAGMA user_version").fetchone()[0]
            try:
                report.events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
            except sqlite3.DatabaseError:
                report.problems = ["the file has no events table: not a notifyd database"]
                return report
            report.last_event_id = _last_id(conn)
        return report
    except sqlite3.DatabaseError as exc:
        return FileReport(path, [f"{path}: {exc}"])
    finally:
        conn.close()
