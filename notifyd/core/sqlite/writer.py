"""The single SQLite writer, with group commit.

One OS thread owns the write connection. Trio tasks submit write functions
``fn(conn) -> result``; the thread takes every job that is waiting, runs each in
its own savepoint inside one transaction, commits once (one fsync for the whole
group with ``synchronous=FULL``), then hands the results back to the trio loop in
submission order. While one group is being committed the next one accumulates, so
the more publishers there are, the larger the groups and the cheaper durability
gets per event.

``on_commit`` callbacks run on the trio thread, in commit order, *before* the
submitting task wakes up: that is what lets the hub publish events strictly in id
order, and what guarantees that an event has been fanned out before its 201.

When the database refuses writes (disk full, locked by another process, I/O
error), every job of the group fails with ``StoreUnavailable`` (HTTP 503 with
``Retry-After``) and nothing of it is committed. The writer keeps running and
tries each new group afresh, so it recovers by itself once space is back or the
lock is released. One such stretch of failures is an *episode*: it is logged once
when it starts (and again only if the cause changes) and once when a commit
succeeds again, never once per failed commit. On a nearly full disk small commits
may pass while large ones fail; such flapping is logged at most once per
``LOG_QUIET`` seconds. During an episode the writer waits
only ``LOCK_WAIT_DEGRADED`` for a lock instead of ``LOCK_WAIT``, so that queued
publishers get their 503 quickly instead of queueing behind one wait each.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio

from ..errors import NotifydError, StoreUnavailable
from ..metrics import COMMIT_BATCH, COMMIT_SECONDS

T = TypeVar("T")
ItemT = TypeVar("ItemT")

log = logging.getLogger("notifyd.store")

MAX_GROUP = 512
#: seconds the writer waits for a lock another process holds before answering 503
LOCK_WAIT = 5.0
#: the same while an episode of refused writes lasts (see the module docstring)
LOCK_WAIT_DEGRADED = 0.5
#: a new episode with the same cause as one logged less than this ago is not logged
LOG_QUIET = 60.0


@dataclass(eq=False)
class _Job:
    fn: Callable[[sqlite3.Connection], Any]
    on_commit: Callable[[Any], None] | None
    #: jobs with the same ``merge`` function that sit next to each other in a group
    #: run as one call ``merge(conn, [item, ...]) -> [result, ...]``
    merge: Callable[[sqlite3.Connection, list[Any]], list[Any]] | None = None
    item: Any = None
    done: trio.Event = field(default_factory=trio.Event)
    result: Any = None
    error: BaseException | None = None


#: SQLite's primary result codes that mean "the storage refuses writes"
_CAUSES = {
    sqlite3.SQLITE_FULL: "the disk holding the database is full",
    sqlite3.SQLITE_BUSY: "the database is locked by another process",
    sqlite3.SQLITE_LOCKED: "the database is locked by another process",
    sqlite3.SQLITE_IOERR: "the database file cannot be written (I/O error or read-only)",
    sqlite3.SQLITE_READONLY: "the database file cannot be written (I/O error or read-only)",
}


def _cause(exc: sqlite3.Error) -> str | None:
    """What keeps the database from taking writes, or None if ``exc`` is not about that."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return _CAUSES.get(code & 0xFF)
    text = str(exc).lower()  # raised without a code (some Python-level errors)
    if "database or disk is full" in text:
        return "the disk holding the database is full"
    if "locked" in text or "busy" in text:
        return "the database is locked by another process"
    if "disk i/o" in text or "readonly" in text or "read-only" in text:
        return "the database file cannot be written (I/O error or read-only)"
    return None


def _translate(exc: sqlite3.Error) -> NotifydError:
    cause = _cause(exc)
    if cause is not None:
        return StoreUnavailable(
            f"{cause}, so nothing can be stored right now ({exc}); nothing was stored, "
            "try again later",
            retry_after=5,
        )
    return StoreUnavailable(f"database error: {exc}", retry_after=5)


def _job_error(exc: BaseException) -> BaseException:
    """What a failed job raises to its caller: database errors become StoreUnavailable."""
    return _translate(exc) if isinstance(exc, sqlite3.Error) else exc


def _runs(group: list[_Job]) -> list[list[_Job]]:
    """Split a group into runs of neighbouring jobs that share a merge function."""
    runs: list[list[_Job]] = []
    for job in group:
        if runs and job.merge is not None and runs[-1][0].merge is job.merge:
            runs[-1].append(job)
        else:
            runs.append([job])
    return runs


class Writer:
    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self.closed = False
        #: why writes are refused now (None when they are not); read on the trio thread
        self.trouble: str | None = None
        self._trouble_since = 0.0
        self._failed_groups = 0
        self._logged: tuple[str, float] | None = None  # (cause, when) of the last error line
        self._announced = False  # that line was written for the current episode

    async def start(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._thread = threading.Thread(target=self._main, name="notifyd-writer", daemon=True)
        self._thread.start()
        await trio.to_thread.run_sync(self._ready.wait)
        if self._startup_error is not None:
            raise self._startup_error

    async def stop(self) -> None:
        """Finish every job already submitted, then close the connection."""
        if self._thread is None or self.closed:
            return
        self.closed = True
        self._queue.put(None)
        await trio.to_thread.run_sync(self._thread.join)

    async def submit(
        self,
        fn: Callable[[sqlite3.Connection], T],
        on_commit: Callable[[T], None] | None = None,
    ) -> T:
        """Run ``fn(conn)`` in the next group transaction; return its result once committed.

        Raises what ``fn`` raised (its savepoint is rolled back, the rest of the group
        commits), or ``StoreUnavailable`` if the commit itself failed.

        Cancellation: the job is not withdrawn once submitted; if the caller is
        cancelled it may still commit.
        """
        result: T = await self._submit(_Job(fn, on_commit))
        return result

    async def submit_merged(
        self,
        merge: Callable[[sqlite3.Connection, list[ItemT]], list[T]],
        item: ItemT,
        on_commit: Callable[[T], None] | None = None,
    ) -> T:
        """Like :meth:`submit`, for work that can be merged with its neighbours:
        concurrent jobs with the same ``merge`` run as one ``merge(conn, items)``
        call (one insert for many publishes), falling back to one call per item if
        the merged call fails."""
        result: T = await self._submit(
            _Job(lambda conn: merge(conn, [item])[0], on_commit, merge, item)
        )
        return result

    async def _submit(self, job: _Job) -> Any:
        if self.closed:
            raise StoreUnavailable("the daemon is shutting down", retry_after=2)
        self._queue.put(job)
        await job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    # -- writer thread ------------------------------------------------------

    def _main(self) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:  # reported to start()
            self._startup_error = exc
            self._ready.set()
            return
        self._ready.set()
        self._set_lock_wait(conn, LOCK_WAIT)
        try:
            stop = False
            while not stop:
                first = self._queue.get()
                if first is None:
                    break
                group = [first]
                while len(group) < MAX_GROUP:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stop = True
                        break
                    group.append(nxt)
                try:
                    self._run_group(conn, group)
                except BaseException:  # a bug here must not leave publishers waiting forever
                    log.exception("the writer failed on a group of %d jobs", len(group))
                    self._fail(conn, group)
        finally:
            conn.close()

    def _run_group(self, conn: sqlite3.Connection, group: list[_Job]) -> None:
        started = time.perf_counter()
        failure: sqlite3.Error | None = None
        changes = conn.total_changes
        wrote = False
        try:
            conn.execute("BEGIN IMMEDIATE")
            if len(group) == 1:
                # alone in its transaction: a failure rolls back the whole thing
                job = group[0]
                try:
                    job.result = job.fn(conn)
                except BaseException as exc:
                    if conn.in_transaction:  # SQLite may have rolled back already
                        conn.execute("ROLLBACK")
                    job.error = _job_error(exc)
                    if isinstance(exc, sqlite3.Error) and _cause(exc):
                        failure = exc
            else:
                for run in _runs(group):
                    if len(run) > 1 and self._run_merged(conn, run):
                        continue
                    for job in run:
                        self._run_one(conn, job)
            if conn.in_transaction:
                conn.execute("COMMIT")
                wrote = conn.total_changes > changes
        except sqlite3.Error as exc:
            failure = exc
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            err = _translate(exc)
            for job in group:
                job.error, job.result = err, None
        if failure is not None:
            self._refused(conn, failure)
        elif self.trouble is not None and wrote:
            # (a commit that wrote nothing, such as the scheduler's idle check,
            # passes even on a full disk: it proves nothing)
            self._recovered(conn)
        COMMIT_SECONDS.observe(time.perf_counter() - started)
        COMMIT_BATCH.observe(len(group))
        assert self._token is not None
        try:
            self._token.run_sync_soon(self._finish, group)
        except trio.RunFinishedError:
            pass

    def _fail(self, conn: sqlite3.Connection, group: list[_Job]) -> None:
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        err = StoreUnavailable("the database writer failed; the daemon log has details",
                               retry_after=5)  # fmt: skip
        for job in group:
            job.error, job.result = err, None
        assert self._token is not None
        try:
            self._token.run_sync_soon(self._finish, group)
        except trio.RunFinishedError:
            pass

    # -- episodes of refused writes (on the writer thread) --------------------

    def _refused(self, conn: sqlite3.Connection, exc: sqlite3.Error) -> None:
        cause = _cause(exc) or f"database error: {exc}"
        now = time.monotonic()
        self._failed_groups += 1
        if self.trouble is None:
            self._trouble_since = now
            self._set_lock_wait(conn, LOCK_WAIT_DEGRADED)
        last = self._logged
        quiet = last is not None and last[0] == cause and now - last[1] < LOG_QUIET
        if cause != self.trouble and not quiet:
            self._logged, self._announced = (cause, now), True
            log.error(
                "the database refuses writes: %s (%s); publishing answers 503 with "
                "Retry-After, nothing is lost, and writes resume by themselves once "
                "this is fixed",
                cause, exc,
            )  # fmt: skip
        self.trouble = cause

    def _recovered(self, conn: sqlite3.Connection) -> None:
        if self._announced:
            log.warning(
                "the database takes writes again after %.1f s (%d failed commits; cause: %s)",
                time.monotonic() - self._trouble_since, self._failed_groups, self.trouble,
            )  # fmt: skip
        self.trouble, self._failed_groups, self._announced = None, 0, False
        self._set_lock_wait(conn, LOCK_WAIT)

    @staticmethod
    def _set_lock_wait(conn: sqlite3.Connection, seconds: float) -> None:
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(seconds * 1000)}")
        except sqlite3.Error:
            pass

    @staticmethod
    def _run_one(conn: sqlite3.Connection, job: _Job) -> None:
        conn.execute("SAVEPOINT job")
        try:
            job.result = job.fn(conn)
        except BaseException as exc:
            if isinstance(exc, sqlite3.Error) and _cause(exc):
                raise  # the storage refuses: fail the whole group (see _run_group)
            conn.execute("ROLLBACK TO job")
            job.error = _job_error(exc)
        conn.execute("RELEASE job")

    @staticmethod
    def _run_merged(conn: sqlite3.Connection, run: list[_Job]) -> bool:
        assert run[0].merge is not None
        conn.execute("SAVEPOINT merged")
        try:
            results = run[0].merge(conn, [job.item for job in run])
        except Exception as exc:
            if isinstance(exc, sqlite3.Error) and _cause(exc):
                raise  # the storage refuses: fail the whole group (see _run_group)
            conn.execute("ROLLBACK TO merged")
            conn.execute("RELEASE merged")
            return False  # retried one by one, so only the bad item fails
        conn.execute("RELEASE merged")
        for job, result in zip(run, results, strict=True):
            job.result = result
        return True

    @staticmethod
    def _finish(group: list[_Job]) -> None:
        # On the trio thread, in commit order.
        for job in group:
            if job.error is None and job.on_commit is not None:
                try:
                    job.on_commit(job.result)
                except Exception:
                    log.exception("commit listener failed")
            job.done.set()
