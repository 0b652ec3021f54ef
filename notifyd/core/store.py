"""The storage interface the rest of notifyd is written against, split by role.

:class:`Store` is the whole: the composition of the role interfaces

* :class:`EventStore`: publish, history, cursors and replay, scheduled release,
  pruning, commit listeners;
* :class:`InboxStore`: per-user read/seen/archive state, "read all", counts;
* :class:`AccountStore`: users, tokens, web sessions, ACL grants, preferences;
* :class:`OutboxStore`: channels and the outbox, with explicit claims and leases;
* :class:`OperationsStore`: backup, integrity check, log maintenance, export/import;
* :class:`LimitStore`: publish rate limits and failure counts, shared by all nodes;
* :class:`HookStore`: inbound webhooks (their templates live in :mod:`notifyd.core.hooks`);
* :class:`AttachmentStore`: uploaded files, their metadata, quota and expiry.

Callers type against the role they need. All SQL lives behind these interfaces,
in an engine (:mod:`notifyd.core.sqlite` today), and a store is opened only by
:func:`notifyd.core.storage.open_store` from the ``database_url`` setting, so that
the API, the CLI, the TUI and the channels never know which engine runs. Every
engine passes the store conformance suite (``tests/test_store_contract.py``).
Events are plain dicts shaped like the API's event object (see
:data:`notifyd.core.models.EVENT_FIELDS`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson

from .acl import Grant, Visibility, glob_match
from .models import EventIn

if TYPE_CHECKING:  # channels.py imports Event from here
    from .channels import ChannelRecord

Event = dict[str, Any]


def with_inbox_state(ev: Event, state: tuple[Any, ...], watermark: int) -> Event:
    """``ev`` with its reader's inbox state, from the stored columns ``(read,
    seen_at, archived_at, clicked_at, action)`` of that reader's row (all None when
    there is none). An explicit read flag wins; without one, events up to the
    reader's mark-all-read ``watermark`` are read. The same for every engine."""
    read, seen_at, archived_at, clicked_at, action = state
    is_read = ev["id"] <= watermark if read is None else bool(read)
    ev["read"] = is_read
    ev["seen"] = is_read or seen_at is not None
    ev["archived"] = archived_at is not None
    ev["clicked_at"] = clicked_at
    ev["action"] = action
    return ev


@dataclass(frozen=True)
class Outcome:
    """What one send did to its deliveries (one row, or a digest's rows): sent when
    ``error`` is None; else pending again at ``retry_at``, or dead without one.
    ``remove_channel``: the target is gone for good (a 404/410 push endpoint)."""

    ids: list[int]
    channel_id: int
    at: float
    error: str | None = None
    retry_at: float | None = None
    remove_channel: bool = False


@dataclass(frozen=True)
class Claim:
    """Deliveries claimed to be sent as one notification (one row, or the rows of a
    digest), before their channel and events are read: see
    :meth:`OutboxStore.claim_delivery_rows`."""

    ids: list[int]
    attempt: int  # 1 for the first attempt
    channel_id: int
    event_ids: list[int]


@dataclass
class DueDelivery:
    """Deliveries to send as one notification: one row, or the rows of a digest.
    ``channel`` is None if the channel was removed; ``events`` is empty if the
    events are no longer stored (both are recorded as dead)."""

    ids: list[int]
    attempt: int  # 1 for the first attempt
    channel_id: int
    channel: ChannelRecord | None
    events: list[Event]


@dataclass
class HistoryQuery:
    """Filters shared by ``GET /v1/events`` and ``POST /v1/inbox/read-all``."""

    user_id: int
    visibility: Visibility
    topic: str | None = None  # exact topic, or a pattern with '*'
    category: str | None = None
    min_priority: int | None = None
    unread: bool | None = None
    q: str | None = None
    since: int | None = None
    before: int | None = None
    limit: int = 50
    archived: Literal["exclude", "only", "include"] = "exclude"

    @property
    def filtered(self) -> bool:
        """True when the query narrows the inbox (anything beyond visibility)."""
        return any(
            v is not None
            for v in (self.topic, self.category, self.min_priority, self.q, self.since, self.before)
        )


@dataclass
class PublishResult:
    events: list[Event]
    scheduled: list[Event] = field(default_factory=list)
    replayed: bool = False  # an Idempotency-Key matched an earlier publish
    batch: bool = False
    #: events stored by this call (not replays, not scheduled): what goes live
    new_events: list[Event] = field(default_factory=list)


@dataclass(frozen=True)
class EventExtras:
    """What a compatibility layer kept with an event when it was published (see
    ``EventIn._token_id`` / ``EventIn._extras``): the publishing token's id (Gotify's
    ``appid``) and Gotify's ``extras`` object, unchanged. Not part of the event object."""

    token_id: int | None
    extras: dict[str, Any] | None


def encode_groups(groups: tuple[str, ...]) -> str | None:
    """A session's groups as stored (a JSON list; None for none)."""
    return orjson.dumps(list(groups)).decode() if groups else None


def decode_groups(text: str | None) -> tuple[str, ...]:
    """What :func:`encode_groups` stored (anything else reads as no groups)."""
    if not text:
        return ()
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return ()
    if not isinstance(value, list):
        return ()
    return tuple(g for g in value if isinstance(g, str))


@dataclass
class User:
    id: int
    name: str
    role: str
    tz: str
    created_at: str
    has_password: bool


@dataclass
class Token:
    id: int
    user_id: int
    user: str
    prefix: str
    label: str | None
    scopes: tuple[str, ...]
    topics: str | None
    created_at: str
    last_used_at: str | None


@dataclass
class AclEntry:
    id: int
    user: str
    pattern: str
    read: bool
    write: bool


@dataclass
class BackupInfo:
    """What a backup holds: the snapshot it copied. ``media_type`` and ``suffix``
    describe the copy's format (an engine's own: an SQLite file for SQLite)."""

    path: str
    bytes: int
    last_event_id: int
    events: int
    engine: str = "sqlite"
    media_type: str = "application/octet-stream"
    suffix: str = ".backup"


@dataclass
class StorageInfo:
    """Where the data lives and how big it is (``GET /v1/admin/integrity``)."""

    engine: str
    location: str  # a path, or a URL without its password
    size_bytes: int | None
    log_bytes: int  # a write-ahead log beside it (0 without one)
    #: what :meth:`OperationsStore.integrity_check` runs: (quick, full)
    checks: tuple[str, str] = ("quick_check", "integrity_check")


@dataclass
class OfflineReport:
    """A check of data that no daemon has open: a database the daemon is not
    running on (``notifyd doctor``), or a downloaded backup (``notifyd backup``)."""

    location: str
    problems: list[str]  # ["ok"] when healthy
    exists: bool = True
    check: str = "quick_check"
    schema_version: int | None = None
    events: int | None = None
    last_event_id: int | None = None

    @property
    def ok(self) -> bool:
        return self.problems == ["ok"]


@dataclass
class ExportSummary:
    """The snapshot an export reads: how many events follow, the newest id of the
    source, and the users (name, role) that have read state among those events."""

    events: int
    last_event_id: int
    users: list[tuple[str, str]]


class WatermarkReader:
    """For an export: a user whose mark-all-read watermark turns into explicit reads
    (``reads``: the event is at or below ``upto`` and the user may read its topic).
    The same for every engine."""

    __slots__ = ("name", "upto", "admin", "patterns")

    def __init__(self, name: str, upto: int, admin: bool, patterns: list[str]) -> None:
        self.name, self.upto, self.admin, self.patterns = name, upto, admin, patterns

    def reads(self, event_id: int, topic: str) -> bool:
        if event_id > self.upto:
            return False
        return self.admin or any(glob_match(p, topic) for p in self.patterns)


class EventExport(ABC):
    """Events being read out of one consistent snapshot, oldest first, in pages.

    Each event is the API's event object plus ``superseded`` (bool: a newer event
    with the same collapse key replaced it) and ``state``: ``{user name: {read?,
    seen_at?, read_at?, archived_at?, clicked_at?, action?}}`` for the users whose
    state differs from unread (a user's "mark all read" watermark is resolved
    into ``read: true`` for the events that user may read).
    """

    summary: ExportSummary

    @abstractmethod
    async def next_page(self, limit: int = 500) -> list[Event]:
        """The next events; an empty list at the end."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release the snapshot."""

    @abstractmethod
    async def account_records(self) -> list[dict[str, Any]]:
        """The installation, from the same snapshot as the events: one record per
        user, token, ACL grant, channel and preferences document, in that order,
        shaped as :mod:`notifyd.core.transfer` writes them (``{"type": "user", …}``;
        users are named, never numbered). Secrets are as stored (password hashes,
        token digests, channel configs)."""


@dataclass
class ImportItem:
    """One event to import: ``event`` holds the validated input fields (those of
    :class:`~notifyd.core.models.EventIn`, normalised), ``created_at`` is kept.

    ``occurrence``: how many events with the same (created_at, topic, title, body)
    came before it in the file, plus one; the store skips the item when the target
    held at least that many such events before the import began.
    """

    event: dict[str, Any]
    created_at: str
    superseded: bool = False
    state: dict[str, dict[str, Any]] = field(default_factory=dict)
    occurrence: int = 1


@dataclass
class ImportBatch:
    """What one :meth:`Store.import_events` call did."""

    stored: list[Event] = field(default_factory=list)
    skipped: int = 0
    #: per-user state entries written (receipts)
    states: int = 0


#: the installation records of an export with accounts, in the order written
ACCOUNT_RECORDS = ("user", "token", "grant", "channel", "preferences", "hook")


@dataclass
class AccountsImport:
    """What one :meth:`OperationsStore.import_accounts` call did, per record type
    (:data:`ACCOUNT_RECORDS`): ``added``; ``present``: the target holds the same;
    ``kept``: the target holds something else under the same key (user name,
    token digest, user + pattern, user + channel name, user's preferences, hook id or
    user + hook name) and
    keeps it, listed as ``"<type> <key>"``."""

    added: dict[str, int] = field(default_factory=dict)
    present: dict[str, int] = field(default_factory=dict)
    kept: list[str] = field(default_factory=list)


CommitListener = Callable[[list[Event]], None]

#: A signal: a small JSON object (``{"kind": …, …}``, at most :data:`MAX_SIGNAL`
#: bytes encoded) that every node's signal listeners hear: read state changed,
#: a user's rights changed. See :meth:`EventStore.signal`.
Signal = dict[str, Any]
SignalListener = Callable[[Signal], None]
#: the largest signal, encoded (PostgreSQL's NOTIFY payload limit, with room)
MAX_SIGNAL = 7000

STATES = ("read", "unread", "seen", "archive", "unarchive", "click")


class EventStore(ABC):
    """Events: publishing, history, cursors and replay, scheduled release, pruning.

    Ids increase strictly in commit order: they are the stream cursor, so a reader
    that has seen id N and later reads ``events_after(N, …)`` misses nothing."""

    @abstractmethod
    def add_commit_listener(self, listener: CommitListener) -> None:
        """Call ``listener(events)`` on the trio thread after each commit, in id order.

        Every event committed to the database from :meth:`start` on is heard once,
        whichever node (process) committed it; this node's own before its
        ``publish`` returns, other nodes' within about a second (an engine with one
        writer process has no other nodes)."""

    @abstractmethod
    def add_signal_listener(self, listener: SignalListener) -> None:
        """Call ``listener(signal)`` on the trio thread for each :meth:`signal`
        sent by any node, this one included. After a gap in which signals may have
        been lost (a dropped connection), listeners hear ``{"kind": "resync"}``:
        state kept from signals (caches) must then be dropped."""

    @abstractmethod
    def signal(self, message: Signal) -> None:
        """Tell every node's signal listeners ``message``: this node's at once (before
        returning), the others' as soon as the engine can (best effort, in order
        per sending node). Call it after the change it reports is committed."""

    @abstractmethod
    async def publish(
        self,
        events: list[EventIn],
        publisher_id: int,
        idempotency_key: str | None = None,
        batch: bool = False,
    ) -> PublishResult:
        """Store ``events`` (and their outbox rows) in one transaction. A known
        ``(publisher_id, idempotency_key)`` stores nothing and answers the original
        events with ``replayed``; events with a future ``deliver_at`` are scheduled."""

    @abstractmethod
    async def release_due(self, now: float, limit: int = 500) -> int:
        """Turn scheduled events whose time has come into events (in ``deliver_at``
        order, ids given now); return how many."""

    @abstractmethod
    async def cancel_scheduled(self, topic: str, collapse_key: str) -> int:
        """Drop the scheduled (not yet released) events of ``topic`` with that
        collapse key; returns how many. No rights are checked here."""

    @abstractmethod
    async def get_event(self, event_id: int, user_id: int) -> Event | None:
        """One event with ``user_id``'s state, or None. No rights are checked here."""

    @abstractmethod
    async def history(self, query: HistoryQuery) -> list[Event]:
        """Events matching ``query`` that its visibility allows, newest first, with
        the user's state."""

    @abstractmethod
    async def events_after(
        self,
        cursor: int,
        upto: int,
        visibility: Visibility,
        topics: tuple[str, ...] | None,
        limit: int,
    ) -> list[Event]:
        """Events with ``cursor < id <= upto`` in id order (replay)."""

    @abstractmethod
    async def last_event_id(self) -> int:
        """The newest id given (never lower after pruning)."""

    @abstractmethod
    async def cursor_at(self, created_at: str) -> int:
        """A replay cursor for a point in time: the id just below the first event
        created at or after ``created_at`` (the newest id when there is none), so
        that replaying after it yields the events from that time on."""

    @abstractmethod
    async def event_extras(self, event_ids: list[int]) -> dict[int, EventExtras]:
        """The :class:`EventExtras` of those of ``event_ids`` that have some (events
        published through a compatibility layer); no rights are checked here."""

    @abstractmethod
    async def prune(self, created_before: str, limit: int) -> int:
        """Delete up to ``limit`` of the oldest events created before ``created_before``
        with everything that belongs to them (search index, read state, deliveries,
        extras), in one short write; returns how many events. Callers loop, so that
        publishes get the writer between batches."""

    @abstractmethod
    async def drop_expired(self, now: str, limit: int) -> int:
        """Like :meth:`prune`, for events whose ``expires_at`` is at or before ``now``."""

    @abstractmethod
    async def forget_idempotency_keys(self, created_before: str) -> int:
        """Forget the idempotency keys used before ``created_before``; returns how many."""


class InboxStore(ABC):
    """Per-user state of events: read/unread, seen, archived, clicked; counts."""

    @abstractmethod
    async def set_state(
        self,
        user_id: int,
        event_ids: list[int],
        state: str,
        visibility: Visibility,
        action: str | None = None,
    ) -> list[tuple[int, str]]:
        """Apply ``state`` (one of :data:`STATES`) to the events among ``event_ids``
        that ``visibility`` allows; return their (id, topic) pairs."""

    @abstractmethod
    async def read_all(self, query: HistoryQuery) -> dict[str, int]:
        """Mark every event matching ``query`` read for its user; ``{"updated": n}``."""

    @abstractmethod
    async def count(self, query: HistoryQuery) -> int:
        """How many events match ``query`` (its ``limit`` is ignored)."""


class AccountStore(ABC):
    """Users, tokens (stored by hash), web sessions, ACL grants, preferences."""

    @abstractmethod
    async def create_user(self, name: str, role: str, password_hash: str | None) -> User:
        """:class:`Conflict` when the name is taken."""

    @abstractmethod
    async def list_users(self) -> list[User]: ...

    @abstractmethod
    async def get_user(self, name: str) -> User | None: ...

    @abstractmethod
    async def get_user_by_id(self, user_id: int) -> User | None: ...

    @abstractmethod
    async def password_hash(self, name: str) -> tuple[int, str] | None: ...

    @abstractmethod
    async def set_password(
        self, name: str, password_hash: str, keep_session: str | None = None
    ) -> None:
        """Set the password and, in the same transaction, end every web session of
        the user except the one whose secret hash is ``keep_session``."""

    @abstractmethod
    async def delete_user(self, name: str) -> None:
        """Remove the user and everything that is theirs in one transaction: tokens
        (Gotify applications and clients are tokens), sessions, ACL grants, channels
        (Web Push subscriptions included) and their deliveries, preferences, read
        state, "read all" marks, idempotency keys. Events they published stay (they
        belong to their topics). :class:`NotFound` for an unknown name,
        :class:`Conflict` for the last admin."""

    @abstractmethod
    async def create_token(
        self,
        user_id: int,
        token_hash: str,
        prefix: str,
        scopes: tuple[str, ...],
        topics: str | None,
        label: str | None,
    ) -> Token: ...

    @abstractmethod
    async def token_by_hash(self, token_hash: str) -> Token | None: ...

    @abstractmethod
    async def touch_tokens(self, uses: list[tuple[int, float]]) -> None:
        """Record when tokens were last used: (token id, unix time) pairs."""

    @abstractmethod
    async def list_tokens(self, user_id: int | None = None) -> list[Token]: ...

    @abstractmethod
    async def revoke_token(self, token_id: int, user_id: int | None = None) -> int:
        """Delete a token (only ``user_id``'s when given); return its owner's id.
        :class:`NotFound` when there is no such token (of that user)."""

    # web sign-in sessions (only the SHA-256 of the secret is stored)
    @abstractmethod
    async def create_session(
        self,
        user_id: int,
        secret_hash: str,
        user_agent: str | None,
        expires_at: float,
        groups: tuple[str, ...] = (),
    ) -> None:
        """``groups``: the groups the sign-in said the user is in (single sign-on);
        ``group_grants`` apply to them for as long as the session lasts."""

    @abstractmethod
    async def session_user(self, secret_hash: str, now: float) -> int | None:
        """The user id of an unexpired session, or None."""

    @abstractmethod
    async def session(self, secret_hash: str, now: float) -> tuple[int, tuple[str, ...]] | None:
        """The user id and the groups of an unexpired session, or None."""

    @abstractmethod
    async def delete_session(self, secret_hash: str) -> None: ...

    @abstractmethod
    async def prune_sessions(self, now: float) -> int:
        """Delete expired sessions; returns how many."""

    @abstractmethod
    async def grants(self, user_id: int) -> tuple[Grant, ...]: ...

    @abstractmethod
    async def grant(self, user: str, pattern: str, read: bool, write: bool) -> AclEntry:
        """Grant (or change) ``user``'s rights on ``pattern``; :class:`NotFound` for
        an unknown user."""

    @abstractmethod
    async def list_acl(self, user: str | None = None) -> list[AclEntry]: ...

    @abstractmethod
    async def revoke_acl(self, user: str, pattern: str) -> None:
        """:class:`NotFound` when the user has no grant for ``pattern``."""

    @abstractmethod
    async def get_preferences(self, user_id: int) -> dict[str, Any] | None: ...

    @abstractmethod
    async def set_preferences(self, user_id: int, doc: dict[str, Any]) -> None: ...


class OutboxStore(ABC):
    """Channels and the outbox: one row per (event, user, channel), written by
    :meth:`EventStore.publish` in the event's transaction.

    Senders take work with an explicit claim: :meth:`claim_delivery_rows` marks the
    due rows it returns with the claimer's ``owner`` and a lease that ends
    ``lease_seconds`` later, atomically, so two claimers never get the same row.
    A claimed row is not due again until its lease ends; then any claimer may take
    it (its sender is presumed dead). :meth:`finish_deliveries` records outcomes
    only for rows the owner still holds, so a sender whose lease ran out and whose
    rows were claimed again cannot overwrite the new owner's result. Owners are
    named ``<node>/<process>``; :meth:`release_claims` ends the leases of a node's
    earlier processes when it starts again."""

    @abstractmethod
    async def create_channel(
        self, user_id: int, name: str, kind: str, config: dict[str, Any]
    ) -> ChannelRecord:
        """:class:`Conflict` when the user has a channel of that name."""

    @abstractmethod
    async def list_channels(
        self, user_id: int | None = None, kind: str | None = None
    ) -> list[ChannelRecord]: ...

    @abstractmethod
    async def get_channel(self, user_id: int, name: str) -> ChannelRecord | None: ...

    @abstractmethod
    async def delete_channel(self, channel_id: int) -> None:
        """Delete it; its pending deliveries become dead. :class:`NotFound`."""

    @abstractmethod
    async def claim_delivery_rows(
        self, now: float, limit: int, owner: str, lease_seconds: float
    ) -> list[Claim]:
        """Claim up to ``limit`` deliveries due at ``now`` (pending, next attempt at
        or before ``now``, not under someone's unexpired lease), oldest first, for
        ``owner`` until ``now + lease_seconds``. Due rows of one channel sharing a
        digest key come as one :class:`Claim`."""

    @abstractmethod
    async def load_claims(self, claims: list[Claim]) -> list[DueDelivery]:
        """What to send for ``claims``: their channels and events (only reads)."""

    async def claim_deliveries(
        self, now: float, limit: int, owner: str, lease_seconds: float
    ) -> list[DueDelivery]:
        """:meth:`claim_delivery_rows`, then :meth:`load_claims`."""
        return await self.load_claims(
            await self.claim_delivery_rows(now, limit, owner, lease_seconds)
        )

    @abstractmethod
    async def finish_deliveries(self, outcomes: list[Outcome], owner: str) -> int:
        """Record what happened to deliveries ``owner`` claimed, all in one
        transaction, and release them; rows ``owner`` no longer holds (claimed
        again by another after its lease ended, or deleted) are left alone.
        Returns how many rows were updated."""

    @abstractmethod
    async def release_claims(self, node: str) -> int:
        """End the leases held by owners ``<node>/…`` (earlier processes of a node
        that starts again): their rows are due at once. Returns how many."""

    @abstractmethod
    async def next_due(self) -> float | None:
        """When the earliest pending delivery is due (a claimed one: when its lease
        ends); None if there is none."""

    @abstractmethod
    async def list_deliveries(
        self, user_id: int | None, state: str | None, limit: int
    ) -> list[dict[str, Any]]: ...

    @abstractmethod
    async def retry_delivery(self, delivery_id: int, user_id: int | None, now: float) -> None:
        """Make a delivery pending and due at ``now`` (one under an unexpired lease
        stays with its owner). :class:`NotFound` when there is no such delivery
        (of that user) or its channel is gone."""

    @abstractmethod
    async def delivery_stats(self, user_id: int | None) -> dict[str, Any]: ...


class OperationsStore(ABC):
    """Operations on the whole database (see notifyd.core.transfer and
    notifyd.core.doctor)."""

    @abstractmethod
    async def backup(
        self, dest: str, pages: int = 1024, progress: Callable[[int, int], None] | None = None
    ) -> BackupInfo:
        """Write a consistent copy of the whole database to ``dest``, a new
        location the engine interprets (SQLite: a file path; the copy is an SQLite
        file), while the store keeps serving; ``progress(done, total)`` is called
        from a worker thread. Publishing is not held up while the copy is made."""

    @abstractmethod
    async def integrity_check(self, full: bool = False) -> list[str]:
        """The database's own consistency check: ``["ok"]`` or the problems found."""

    @abstractmethod
    async def storage_info(self) -> StorageInfo:
        """Which engine, where, and how big."""

    async def checkpoint(self) -> None:
        """Move what a write-ahead log holds into the database, beside the writer
        (housekeeping calls it every second); nothing by default."""
        return None

    async def after_prune(self) -> None:
        """Give back space after a pass that deleted many events (a store may
        checkpoint or truncate its log here); nothing by default."""
        return None

    @abstractmethod
    async def open_export(self, topic: str | None, since: int | None) -> EventExport:
        """Start reading events (``topic``: exact or a ``*`` pattern; ``since``:
        ids above it) from a snapshot; the caller must ``aclose()`` it."""

    @abstractmethod
    async def import_events(
        self, items: list[ImportItem], publisher_id: int, users: dict[str, int], before_id: int
    ) -> ImportBatch:
        """Store ``items`` as new events (new ids, in order) in one transaction,
        without creating deliveries, skipping those already present (see
        :class:`ImportItem`; only events with ids up to ``before_id`` count), and
        write their per-user state for the users in ``users`` (name → id).
        The stored events go to the commit listeners like published ones."""

    @abstractmethod
    async def import_accounts(self, records: list[dict[str, Any]]) -> AccountsImport:
        """Write validated installation records (:meth:`EventExport.account_records`'
        shape) in one transaction, ids mapped by name: a record whose key the
        target holds already is left as it is (a user without a password gets the
        record's), so that importing twice changes nothing. Signals
        ``{"kind": "rights", "user": None}`` after the commit when anything was added."""


class LimitStore(ABC):
    """Abuse limits counted for the whole deployment (:mod:`notifyd.core.ratelimit`,
    :mod:`notifyd.core.throttle`): every node of a cluster charges and counts the
    same state, so spreading requests over nodes gains nothing.

    Keys are strings the callers choose and namespace (``publish:token:7``). Times
    are the engine's own clock, one for every node (never the caller's), so clock
    skew between nodes changes nothing. An engine may forget state that no longer
    limits anything (a bucket that is full again, failures out of their window)
    and may keep it in memory when one process is all there is. Calls are atomic:
    two nodes charging one key at once are counted one after the other."""

    @abstractmethod
    async def charge_rate(self, key: str, cost: int, rate: float, burst: int) -> float:
        """Take ``cost`` from ``key``'s bucket, which holds ``burst`` at most and
        refills at ``rate`` per second (a new key's bucket is full). Returns 0.0
        when taken; otherwise takes nothing and returns the seconds after which
        it would be taken (> 0). Needs ``rate > 0`` and ``0 < cost <= burst``."""

    @abstractmethod
    async def recent_failures(self, limits: dict[str, int], window: float) -> dict[str, float]:
        """The keys of ``limits`` (key → failures allowed) with at least one failure
        in the last ``window`` seconds, each with the seconds until it has fewer
        failures in the window than its limit again (0.0 if it has fewer already).
        Keys without recent failures are left out."""

    @abstractmethod
    async def record_failure(self, limits: dict[str, int], window: float) -> None:
        """Count one failure, now, for each key of ``limits`` (the limits let an
        engine keep only the failures that can still matter)."""

    @abstractmethod
    async def clear_failures(self, keys: list[str]) -> None:
        """Forget every failure of ``keys``."""


@dataclass(frozen=True)
class Hook:
    """An inbound webhook: a POST to its URL becomes events on ``topic``, published as
    ``user_id`` within that user's write rights, mapped by ``template``."""

    #: random and unguessable (it is part of the hook's URL)
    id: str
    user_id: int
    name: str
    topic: str
    #: alertmanager | grafana | github | gitea | gitlab | slack | apprise | json
    template: str
    #: priority, category, tags, and the json template's expressions
    options: dict[str, Any]
    #: kept as issued: GitHub's and Gitea's HMAC signatures are checked with it. Never
    #: returned by the API after the hook's creation, never logged.
    secret: str
    created_at: str
    last_used_at: str | None = None
    #: the owner's name (filled when read)
    user_name: str = ""


class HookStore(ABC):
    """Inbound webhooks. A hook belongs to its user and goes with the user."""

    @abstractmethod
    async def create_hook(self, hook: Hook) -> Hook:
        """Store ``hook`` (its id and secret made by the caller). Conflict when the
        user has a hook of that name."""

    @abstractmethod
    async def get_hook(self, hook_id: str) -> Hook | None: ...

    @abstractmethod
    async def list_hooks(self, user_id: int | None = None) -> list[Hook]:
        """The hooks of ``user_id`` (every hook when None), by name."""

    @abstractmethod
    async def delete_hook(self, hook_id: str, user_id: int | None = None) -> int:
        """Remove a hook (only ``user_id``'s when given); how many went (0 or 1)."""

    @abstractmethod
    async def touch_hook(self, hook_id: str, at: str) -> None:
        """Record that the hook was used at ``at`` (RFC 3339)."""


@dataclass(frozen=True)
class Attachment:
    """An uploaded file. Readable by its uploader and, once an event on ``topic`` took
    it, by whoever may read that topic; gone at ``expires_at``."""

    #: random, 12 characters of [A-Za-z0-9] (also ntfy's /file/<id>.<ext>)
    id: str
    user_id: int
    name: str
    #: the MIME type the file is served with
    type: str
    size: int
    sha256: str
    created_at: str
    expires_at: str
    topic: str | None = None
    event_id: int | None = None


class AttachmentStore(ABC):
    """Uploaded files and their metadata. Where the bytes live is the engine's
    business (SQLite: files under the data directory; PostgreSQL: in the database,
    so any node serves any file)."""

    @abstractmethod
    async def save_attachment(self, meta: Attachment, source: Path, quota_bytes: int) -> Attachment:
        """Store the file ``source`` (``meta.size`` bytes, already written and synced
        by the caller, who removes it afterwards if it is still there) as ``meta``.
        With ``quota_bytes`` > 0, raises :class:`~notifyd.core.errors.QuotaExceeded`
        (and stores nothing) when the user's unexpired attachments plus this one
        would pass it; the check and the insert are one atomic step."""

    @abstractmethod
    async def get_attachment(self, attachment_id: str) -> Attachment | None:
        """The metadata, also of an expired file not yet pruned (callers check)."""

    @abstractmethod
    async def read_attachment(self, attachment_id: str, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes of the file from ``offset`` (b"" past the end).
        NotFound when the file is gone."""

    @abstractmethod
    async def bind_attachment(self, attachment_id: str, user_id: int, topic: str) -> Attachment:
        """Give the user's unexpired attachment to an event on ``topic``. Binding it
        again to the same topic is allowed (a retried publish: the readers are the
        same). NotFound if it is not the user's (or gone); Conflict if it belongs to
        another topic."""

    @abstractmethod
    async def set_attachment_event(self, attachment_id: str, event_id: int) -> None:
        """Record the stored event that carries the attachment."""

    @abstractmethod
    async def attachment_usage(self, user_id: int, now: str) -> int:
        """Bytes of the user's attachments that have not expired at ``now``."""

    @abstractmethod
    async def server_key(self, name: str) -> bytes:
        """The installation's random key ``name`` (32 bytes), made on first use; every
        node of a cluster gets the same one (the key signing attachment links)."""

    @abstractmethod
    async def prune_attachments(self, now: str, limit: int) -> int:
        """Remove up to ``limit`` attachments, metadata and bytes: expired at ``now``,
        or whose event is gone, or bound more than an hour ago to an event never
        stored. Returns how many went."""


class Store(
    EventStore, InboxStore, AccountStore, OutboxStore, OperationsStore, LimitStore, HookStore,
    AttachmentStore,
):  # fmt: skip
    """Durable storage: every role. Every method is safe to call from the trio loop.
    Open one with :func:`notifyd.core.storage.open_store`."""

    #: the engine's name, as ``database_url`` selects it
    engine: str = ""

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def close(self) -> None:
        """Finish in-flight writes and close."""
