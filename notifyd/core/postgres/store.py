"""The PostgreSQL store: the engine's roles composed into one object.

So far the event, inbox and account roles (:mod:`.events`, :mod:`.inbox`,
:mod:`.accounts`); the outbox and operations roles follow, and only then does
:func:`notifyd.core.storage.open_store` open it for ``database_url =
"postgresql://…"``. The event store comes first in the bases: it owns the
connection pool, the worker threads and ``count``.
"""

from __future__ import annotations

from .accounts import PostgresAccountStore
from .events import PostgresEventStore
from .inbox import PostgresInboxStore


class PostgresStore(PostgresEventStore, PostgresInboxStore, PostgresAccountStore):
    """The roles the PostgreSQL engine has so far, on one connection pool."""
