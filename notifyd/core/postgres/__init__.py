"""The PostgreSQL engine (cluster mode: any number of nodes on one database).

Only the event role exists so far (:mod:`.events`, schema in :mod:`.schema`); it
is not reachable through :func:`notifyd.core.storage.open_store` yet.
"""
