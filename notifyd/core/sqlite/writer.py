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
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from ..errors import NotifydError, StoreUnavailable
from ..metrics import COMMIT_BATCH, COMMIT_SECONDS

log = logging.getLogger("notifyd.store")

MAX_GROUP = 512


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


def _translate(exc: sqlite3.Error) -> NotifydError:
    text = str(exc).lower()
    if "full" in text or "locked" in text or "busy" in text or "disk i/o" in text:
        return StoreUnavailable(
            f"the database cannot take writes right now ({exc}); try again shortly",
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
        fn: Callable[[sqlite3.Connection], Any],
        on_commit: Callable[[Any], None] | None = None,
    ) -> Any:
        """Run ``fn(conn)`` in the next group transaction; return its result once committed.

        Raises what ``fn`` raised (its savepoint is rolled back, the rest of the group
        commits), or ``StoreUnavailable`` if the commit itself failed.

        Cancellation: the job is not withdrawn once submitted; if the caller is
        cancelled it may still commit.
        """
        return await self._submit(_Job(fn, on_commit))

    async def submit_merged(
        self,
        merge: Callable[[sqlite3.Connection, list[Any]], list[Any]],
        item: Any,
        on_commit: Callable[[Any], None] | None = None,
    ) -> Any:
        """Like :meth:`submit`, for work that can be merged with its neighbours:
        concurrent jobs with the same ``merge`` run as one ``merge(conn, items)``
        call (one insert for many publishes), falling back to one call per item if
        the merged call fails."""
        return await self._submit(_Job(lambda conn: merge(conn, [item])[0], on_commit, merge, item))

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
                self._run_group(conn, group)
        finally:
            conn.close()

    def _run_group(self, conn: sqlite3.Connection, group: list[_Job]) -> None:
        started = time.perf_counter()
        try:
            conn.execute("BEGIN IMMEDIATE")
            if len(group) == 1:
                # alone in its transaction: a failure rolls back the whole thing
                job = group[0]
                try:
                    job.result = job.fn(conn)
                except BaseException as exc:
                    conn.execute("ROLLBACK")
                    job.error = _job_error(exc)
            else:
                for run in _runs(group):
                    if len(run) > 1 and self._run_merged(conn, run):
                        continue
                    for job in run:
                        self._run_one(conn, job)
            if conn.in_transaction:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            log.error("commit failed: %s", exc)
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            err = _translate(exc)
            for job in group:
                job.error, job.result = err, None
        COMMIT_SECONDS.observe(time.perf_counter() - started)
        COMMIT_BATCH.observe(len(group))
        assert self._token is not None
        try:
            self._token.run_sync_soon(self._finish, group)
        except trio.RunFinishedError:
            pass

    @staticmethod
    def _run_one(conn: sqlite3.Connection, job: _Job) -> None:
        conn.execute("SAVEPOINT job")
        try:
            job.result = job.fn(conn)
        except BaseException as exc:
            conn.execute("ROLLBACK TO job")
            job.error = _job_error(exc)
        conn.execute("RELEASE job")

    @staticmethod
    def _run_merged(conn: sqlite3.Connection, run: list[_Job]) -> bool:
        assert run[0].merge is not None
        conn.execute("SAVEPOINT merged")
        try:
            results = run[0].merge(conn, [job.item for job in run])
        except Exception:
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
