"""The delivery worker process: runs the outbox next to the daemon.

Sending pushes and mail costs CPU (encryption, TLS, Apprise's threads). Run in the
daemon's process it would share the trio loop and the GIL with publishing; in its
own process it only shares the database. The daemon starts it (``delivery_process
= true``), restarts it if it dies, and pokes it through its stdin after commits so
that new deliveries go out at once; it also finds due work by itself.

Started as ``python -m notifyd.deliverer`` with the daemon's effective
configuration as JSON in ``NOTIFYD_WORKER_CONFIG``.
"""

from __future__ import annotations

import json
import logging
import os
import signal

import trio

from .config import Config
from .core.plugins import Plugins
from .core.services import Services
from .core.sqlite.store import SQLiteStore
from .logs import setup_logging

log = logging.getLogger("notifyd.deliverer")


async def _pokes(svc: Services, done: trio.CancelScope) -> None:
    """Each byte on stdin is a commit that may have created deliveries; end of
    file means the daemon is gone, and so the worker stops."""
    stream = trio.lowlevel.FdStream(os.dup(0))
    async with stream:
        while await stream.receive_some(4096):
            assert svc.outbox is not None
            svc.outbox.wake()
    done.cancel(reason="the daemon closed the worker's stdin")


async def main(config: Config) -> None:
    store = SQLiteStore(config.db_path, config.synchronous, readers=2)
    await store.start()
    try:
        svc = Services.build(config, store)
        svc.start_delivery(Plugins(modules=config.plugins))
        assert svc.outbox is not None
        async with trio.open_nursery() as nursery:
            await nursery.start(svc.outbox.run)
            nursery.start_soon(_pokes, svc, nursery.cancel_scope)
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    break
            nursery.cancel_scope.cancel(reason="delivery worker stopping")
        for channel in svc.channels.values():
            with trio.move_on_after(2, shield=True):
                await channel.aclose()
    finally:
        with trio.CancelScope(shield=True):
            await store.close()


def run() -> None:
    data = json.loads(os.environ["NOTIFYD_WORKER_CONFIG"])
    config = Config(**data)
    setup_logging(config.log_level)
    # Publishing comes first: when both compete for the CPU, the kernel favours the
    # daemon; deliveries use what is left (and catch up when publishing pauses).
    try:
        os.nice(10)
    except OSError:
        pass
    trio.run(main, config)


if __name__ == "__main__":
    run()
