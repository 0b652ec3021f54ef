"""The PostgreSQL engine (cluster mode: any number of nodes on one database).

So far the event, inbox and account roles (:mod:`.events`, :mod:`.inbox`,
:mod:`.accounts`, composed in :mod:`.store`; schema in :mod:`.schema`). It is not
reachable through :func:`notifyd.core.storage.open_store` until the outbox and
operations roles exist; the conformance suite opens it directly.
"""
