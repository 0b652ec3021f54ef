"""The PostgreSQL engine (cluster mode: any number of nodes on one database).

Every role of the store contract (:mod:`.events`, :mod:`.inbox`, :mod:`.accounts`,
:mod:`.outbox`, :mod:`.operations`, composed in :mod:`.store`; schema in
:mod:`.schema`), checked by the conformance suite. It is not reachable through
:func:`notifyd.core.storage.open_store` yet (see :mod:`.store`).
"""
