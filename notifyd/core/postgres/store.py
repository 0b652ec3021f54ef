"""The PostgreSQL store: the engine's roles composed into one object.

So far the event, inbox, account and outbox roles (:mod:`.events`,
:mod:`.inbox`, :mod:`.accounts`, :mod:`.outbox`); the operations role follows, and only then does
:func:`notifyd.core.storage.open_store` open it for ``database_url =
"postgresql://…"``. The event store comes first in the bases: it owns the
connection pool, the worker threads and ``count``.
"""

from __future__ import annotations

from .accounts import PostgresAccountStore
from .events import PostgresEventStore
from .inbox import PostgresInboxStore
from .outbox import PostgresOutboxStore


class PostgresStore(
    PostgresEventStore, PostgresInboxStore, PostgresAccountStore, PostgresOutboxStore
):
    """The roles the PostgreSQL engine has so far, on one connection pool."""
