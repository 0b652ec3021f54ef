"""The PostgreSQL store: every role of the contract composed into one object
(:mod:`.events`, :mod:`.inbox`, :mod:`.accounts`, :mod:`.outbox`,
:mod:`.operations`, :mod:`.hooks`, :mod:`.attachments`). The event store comes first in the bases: it owns the
connection pool, the worker threads and ``count``. Opened by
:func:`notifyd.core.storage.open_store` when ``database_url`` is ``postgresql://…``.
"""

from __future__ import annotations

from ..store import Store
from .accounts import PostgresAccountStore
from .attachments import PostgresAttachmentStore
from .events import PostgresEventStore
from .hooks import PostgresHookStore
from .inbox import PostgresInboxStore
from .limits import PostgresLimitStore
from .nodes import PostgresNodes
from .operations import PostgresOperationsStore
from .outbox import PostgresOutboxStore


class PostgresStore(
    PostgresNodes,  # before the event store: its start/close wrap the pool's
    PostgresEventStore,
    PostgresInboxStore,
    PostgresAccountStore,
    PostgresOutboxStore,
    PostgresOperationsStore,
    PostgresLimitStore,
    PostgresHookStore,
    PostgresAttachmentStore,
    Store,
):
    """Every role of the store contract on PostgreSQL, on one connection pool."""
