"""Export and import of events with their read state: the JSON Lines format.

An export is UTF-8 JSON Lines. Line 1 is a header::

    {"type": "header", "format": "notifyd-export", "version": 1,
     "exported_at": "2026-01-02T03:04:05.678Z",
     "source": {"notifyd": "0.1.0", "host": "box", "last_event_id": 1234},
     "filters": {"topic": null, "since": null},
     "counts": {"events": 1200, "users": 2},
     "users": [{"name": "alice", "role": "user"}, ...]}

then one line per event, oldest first: the API's event object (``id`` … ``created_at``)
plus ``"type": "event"``, ``superseded`` (a newer event with the same collapse key
replaced it) and ``state``: ``{user name: {read, seen_at, read_at, archived_at,
clicked_at, action}}`` with only the keys that are set, for users whose state is not
plain unread. A user's "mark all read" watermark is written out as ``read: true``
on each event it covers and that user may read, because ids change on import.

Importing validates every line before anything is written (a bad line fails the
whole import, naming its line number), then writes in transactions of
:data:`BATCH` events, so that publishers never wait long for the writer. Events
get new ids at the end of the stream, in file order; ``created_at`` and every
other field are kept; no deliveries are created. An event is skipped when the
target already holds it: the same (created_at, topic, title, body) — counted, so
that identical events published together all come through once. That makes a
re-import a no-op and an interrupted import resumable: run it again.

This module is the format and the rules; SQL lives behind the store.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
import trio

from .. import __version__
from .accounts import NAME_RE, Accounts
from .errors import NotifydError, StoreUnavailable, ValidationFailed
from .models import validate_events
from .store import Event, EventExport, ImportItem, Store
from .timeutil import format_ts, normalize_rfc3339, now_rfc3339

FORMAT = "notifyd-export"
VERSION = 1
#: events per write transaction on import, and per page on export
BATCH = 500
MAX_LINE = 1024 * 1024
STATE_KEYS = ("read", "seen_at", "read_at", "archived_at", "clicked_at", "action")
_TIME_KEYS = ("seen_at", "read_at", "archived_at", "clicked_at")
_EVENT_META = ("type", "id", "created_at", "superseded", "state")
_dumps = orjson.dumps


# --- export -------------------------------------------------------------------


def header(export: EventExport, topic: str | None, since: int | None) -> dict[str, Any]:
    s = export.summary
    return {
        "type": "header",
        "format": FORMAT,
        "version": VERSION,
        "exported_at": now_rfc3339(),
        "source": {
            "notifyd": __version__,
            "host": socket.gethostname(),
            "last_event_id": s.last_event_id,
        },  # fmt: skip
        "filters": {"topic": topic, "since": since},
        "counts": {"events": s.events, "users": len(s.users)},
        "users": [{"name": name, "role": role} for name, role in s.users],
    }


def event_record(event: Event) -> dict[str, Any]:
    return {"type": "event", **event}


async def export_lines(
    store: Store, topic: str | None, since: int | None
) -> AsyncGenerator[bytes, None]:
    """The export as chunks of JSON Lines (one chunk per page of events), read from
    one snapshot of the store. Memory stays constant whatever the size."""
    export = await store.open_export(topic, since)
    try:
        yield _dumps(header(export, topic, since)) + b"\n"
        while page := await export.next_page(BATCH):
            yield b"".join(_dumps(event_record(ev)) + b"\n" for ev in page)
    finally:
        with trio.CancelScope(shield=True):
            await export.aclose()


# --- validation -----------------------------------------------------------------


def _bad(line: int, message: str, field: str | None = None) -> ValidationFailed:
    return ValidationFailed(f"line {line}: {message}", field=field)


def _time(line: int, value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise _bad(line, f"{name}: expected an RFC 3339 timestamp", name)
    try:
        return normalize_rfc3339(value)
    except (ValueError, OverflowError, OSError) as exc:
        raise _bad(line, f"{name}: not an RFC 3339 timestamp ({exc})", name) from None


def parse_header(line: int, obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict) or obj.get("type") != "header":
        raise _bad(line, 'expected the header line ({"type": "header", ...}) first', "type")
    if obj.get("format") != FORMAT:
        raise _bad(line, f"format is {obj.get('format')!r}, expected {FORMAT!r}", "format")
    version = obj.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _bad(line, "version: expected a positive integer", "version")
    if version > VERSION:
        raise _bad(
            line,
            f"the file is format version {version}, this notifyd reads version {VERSION}: "
            "upgrade notifyd here",
            "version",
        )
    counts = obj.get("counts")
    if counts is not None and (
        not isinstance(counts, dict) or not isinstance(counts.get("events", 0), int)
    ):
        raise _bad(line, 'counts: expected {"events": N, ...}', "counts")
    users = obj.get("users") or []
    if not isinstance(users, list) or not all(
        isinstance(u, dict) and isinstance(u.get("name"), str) for u in users
    ):
        raise _bad(line, 'users: expected a list of {"name": ..., "role": ...}', "users")
    return obj


def parse_state(line: int, value: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict):
        raise _bad(line, "state: expected an object {user name: {read, seen_at, ...}}", "state")
    out: dict[str, dict[str, Any]] = {}
    for name, entry in value.items():
        where = f"state.{name}"
        if not NAME_RE.fullmatch(name):
            raise _bad(line, f"{where}: {name!r} is not a valid user name", where)
        if not isinstance(entry, dict):
            raise _bad(line, f"{where}: expected an object", where)
        unknown = set(entry) - set(STATE_KEYS)
        if unknown:
            key = sorted(unknown)[0]
            raise _bad(line, f"{where}: unknown field {key!r}", f"{where}.{key}")
        clean: dict[str, Any] = {}
        read = entry.get("read")
        if read is not None:
            if not isinstance(read, bool):
                raise _bad(line, f"{where}.read: expected true or false", f"{where}.read")
            clean["read"] = read
        for key in _TIME_KEYS:
            if entry.get(key) is not None:
                clean[key] = _time(line, entry[key], f"{where}.{key}")
        action = entry.get("action")
        if action is not None:
            if not isinstance(action, str) or len(action) > 256:
                raise _bad(line, f"{where}.action: expected a string", f"{where}.action")
            clean["action"] = action
        if clean:
            out[name] = clean
    return out


def parse_event(line: int, obj: Any) -> ImportItem:
    """Validate one event line into what the store imports. Raises ValidationFailed
    whose message starts with ``line N:``."""
    if not isinstance(obj, dict):
        raise _bad(line, "expected a JSON object")
    kind = obj.get("type")
    if kind != "event":
        what = "a second header" if kind == "header" else f"type {kind!r}"
        raise _bad(line, f'{what}: expected an event ({{"type": "event", ...}})', "type")
    if "created_at" not in obj:
        raise _bad(line, "created_at: this field is required", "created_at")
    created_at = _time(line, obj["created_at"], "created_at")
    source_id = obj.get("id")
    if source_id is not None and (not isinstance(source_id, int) or isinstance(source_id, bool)):
        raise _bad(line, "id: expected an integer (the event's id at the source)", "id")
    superseded = obj.get("superseded", False)
    if not isinstance(superseded, bool):
        raise _bad(line, "superseded: expected true or false", "superseded")
    state = parse_state(line, obj.get("state") or {})
    fields = {k: v for k, v in obj.items() if k not in _EVENT_META}
    try:
        (ev,), _ = validate_events(fields)
    except NotifydError as exc:
        raise _bad(line, exc.message, exc.field) from None
    event = ev.model_dump(exclude={"actions"})
    event["actions"] = [a.model_dump(exclude_none=True) for a in ev.actions]
    return ImportItem(event=event, created_at=created_at, superseded=superseded, state=state)


# --- import -------------------------------------------------------------------


@dataclass
class ImportReport:
    """What an import did (or, with ``dry_run``, would do); ``--json`` prints it."""

    format_version: int = VERSION
    source: dict[str, Any] = field(default_factory=dict)
    #: events in the file
    events: int = 0
    imported: int = 0
    #: already on this daemon (same created_at, topic, title, body)
    skipped: int = 0
    first_id: int | None = None
    last_id: int | None = None
    #: per-user state entries written
    states: int = 0
    #: users named in the file that do not exist here: their state was not imported
    users_missing: list[str] = field(default_factory=list)
    users_created: list[str] = field(default_factory=list)
    states_skipped: int = 0
    #: events that the retention or their expires_at will remove soon
    older_than_retention: int = 0
    expired: int = 0
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _Parser:
    """Phase 1, in a worker thread: split the body into lines, validate each, and
    spool the validated records to a temporary file (constant memory)."""

    def __init__(self, spool: IO[bytes], now: float, retention_days: int | None) -> None:
        self.spool = spool
        self.line = 0
        self.buf = b""
        self.header: dict[str, Any] | None = None
        self.events = 0
        self.user_entries: dict[str, int] = {}
        self.expired = 0
        self.old = 0
        self._now = format_ts(now)
        self._retention = format_ts(now - retention_days * 86400) if retention_days else None
        self._run_at: str | None = None
        self._run: dict[tuple[str, str, str], int] = {}

    def feed(self, data: bytes) -> None:
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        for raw in lines:
            self._line(raw)
        if len(self.buf) > MAX_LINE:
            raise _bad(self.line + 1, f"longer than {MAX_LINE // 1024} KiB: is this JSON Lines?")

    def finish(self) -> None:
        if self.buf:
            self._line(self.buf)
            self.buf = b""
        if self.header is None:
            raise _bad(1, "the file is empty: expected a notifyd export (a header line first)")
        announced = (self.header.get("counts") or {}).get("events")
        if announced is not None and announced != self.events:
            raise _bad(
                self.line,
                f"the file ends after {self.events} events but its header announces {announced}: "
                "it is incomplete (was the export interrupted?)",
            )
        self.spool.flush()

    def _line(self, raw: bytes) -> None:
        self.line += 1
        if len(raw) > MAX_LINE:
            raise _bad(self.line, f"longer than {MAX_LINE // 1024} KiB")
        if not raw.strip():
            return
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _bad(self.line, f"not valid JSON ({exc})") from None
        if self.header is None:
            self.header = parse_header(self.line, obj)
            return
        item = parse_event(self.line, obj)
        self.events += 1
        for name in item.state:
            self.user_entries[name] = self.user_entries.get(name, 0) + 1
        exp = item.event.get("expires_at")
        if exp is not None and exp <= self._now:
            self.expired += 1
        elif self._retention is not None and item.created_at < self._retention:
            self.old += 1
        # identical events share created_at (one publish): count them within the run
        if item.created_at != self._run_at:
            self._run_at, self._run = item.created_at, {}
        key = (item.event["topic"], item.event["title"], item.event["body"])
        item.occurrence = self._run[key] = self._run.get(key, 0) + 1
        record = {"e": item.event, "c": item.created_at, "s": item.superseded,
                  "st": item.state, "o": item.occurrence}  # fmt: skip
        self.spool.write(_dumps(record) + b"\n")


def _read_batch(spool: IO[bytes], n: int) -> list[ImportItem]:
    items = []
    for _ in range(n):
        raw = spool.readline()
        if not raw:
            break
        r = orjson.loads(raw)
        items.append(ImportItem(event=r["e"], created_at=r["c"], superseded=r["s"],
                                state=r["st"], occurrence=r["o"]))  # fmt: skip
    return items


class Importer:
    """Imports one export into the store: :meth:`read` validates the whole input
    (nothing is written if a line is bad), :meth:`apply` writes it in batches.

    Args:
        store, accounts: the daemon's.
        spool_dir: where validated records wait between the two phases (the data
            directory: the same disk as the database).
        publisher_id: recorded as the publisher of the imported events.
        create_users: create users named in the state that do not exist (role
            from the header's ``users``, else ``user``; no password).
        retention_days: to count the events the pruner will soon remove.
    """

    def __init__(
        self,
        store: Store,
        accounts: Accounts,
        *,
        spool_dir: str | Path,
        publisher_id: int,
        create_users: bool = False,
        retention_days: int | None = None,
    ) -> None:
        self.store = store
        self.accounts = accounts
        self.publisher_id = publisher_id
        self.create_users = create_users
        fd, name = tempfile.mkstemp(prefix=".import-", suffix=".jsonl", dir=spool_dir)
        os.unlink(name)  # nothing to clean up after a crash
        self._spool = os.fdopen(fd, "w+b")
        self._parser = _Parser(self._spool, time.time(), retention_days)
        self.report = ImportReport()

    def close(self) -> None:
        self._spool.close()

    async def read(self, chunks: AsyncIterator[bytes], chunk_size: int = 256 * 1024) -> None:
        """Validate and spool the whole input. After a bad line the rest is read
        and dropped, so that the client gets the error rather than a broken pipe.

        Raises ValidationFailed naming the first bad line.
        """
        error: NotifydError | None = None
        pending: list[bytes] = []
        size = 0

        async def feed() -> None:
            nonlocal error, size
            data = b"".join(pending)
            pending.clear()
            size = 0
            if error is None:
                try:
                    await trio.to_thread.run_sync(self._parser.feed, data)
                except NotifydError as exc:
                    error = exc

        async for chunk in chunks:
            pending.append(chunk)
            size += len(chunk)
            if size >= chunk_size:
                await feed()
        await feed()
        if error is None:
            await trio.to_thread.run_sync(self._parser.finish)
        if error is not None:
            raise error
        p = self._parser
        header = p.header or {}
        self.report.source = header.get("source") or {}
        self.report.events = p.events
        self.report.expired = p.expired
        self.report.older_than_retention = p.old

    async def _users(self) -> dict[str, int]:
        wanted = self._parser.user_entries
        users = {u.name: u.id for u in await self.store.list_users()}
        missing = sorted(set(wanted) - set(users))
        if missing and self.create_users:
            roles = {
                u["name"]: u.get("role") for u in (self._parser.header or {}).get("users") or []
            }
            for name in missing:
                role = "admin" if roles.get(name) == "admin" else "user"
                users[name] = (await self.accounts.create_user(name, role, None)).id
                self.report.users_created.append(name)
        else:
            self.report.users_missing = missing
            self.report.states_skipped = sum(wanted[n] for n in missing)
        return users

    async def apply(self, progress: Callable[[int], None] | None = None) -> ImportReport:
        """Write the validated events, :data:`BATCH` per transaction.

        Raises StoreUnavailable if a write fails; the events of earlier batches are
        stored, and running the same import again finishes the job.
        """
        report = self.report
        users = await self._users()
        before_id = await self.store.last_event_id()
        await trio.to_thread.run_sync(self._spool.seek, 0)
        done = 0
        while items := await trio.to_thread.run_sync(_read_batch, self._spool, BATCH):
            try:
                batch = await self.store.import_events(items, self.publisher_id, users, before_id)
            except NotifydError as exc:
                raise StoreUnavailable(
                    f"the import stopped after {done} of {report.events} events "
                    f"({report.imported} imported): {exc.message}; run the same import again "
                    "to finish it (events already imported are skipped)",
                    retry_after=exc.retry_after,
                ) from exc
            done += len(items)
            report.imported += len(batch.stored)
            report.skipped += batch.skipped
            report.states += batch.states
            if batch.stored:
                if report.first_id is None:
                    report.first_id = batch.stored[0]["id"]
                report.last_id = batch.stored[-1]["id"]
            if progress is not None:
                progress(done)
        return report
