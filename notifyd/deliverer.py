"""The delivery worker process: runs the outbox next to the daemon.

Sending pushes and mail costs CPU (encryption, TLS, Apprise's threads). Run in the
daemon's process it would share the trio loop and the GIL with publishing; in its
own process it shares only the database, and only for reading: its writes (claims
and outcomes) run on the daemon's writer, through the link in ``worker_link.py``.
The daemon starts it (``delivery_process = true``), restarts it if it dies, and
pokes it through the link after commits so that new deliveries go out at once; it
also finds due work by itself.

Started as ``python -m notifyd.deliverer`` with the daemon's effective
configuration as JSON in ``NOTIFYD_WORKER_CONFIG`` and its end of the link as file
descriptor ``NOTIFYD_WORKER_FD``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket

import trio

from .config import Config
from .core.errors import StoreUnavailable
from .core.plugins import Plugins
from .core.services import Services
from .core.storage import open_store
from .core.store import Store
from .logs import setup_logging
from .worker_link import DaemonLink, LinkedStore

log = logging.getLogger("notifyd.deliverer")


#: seconds between tries to open the store when the database cannot be reached
START_RETRY = 1.0


async def _open_store(config: Config) -> Store:
    """The worker's store, opened; while the database cannot be reached (a
    PostgreSQL outage as the worker starts), try again every :data:`START_RETRY`
    seconds rather than exit and be restarted with a growing backoff. An orphaned
    worker (its daemon died meanwhile) stops trying."""
    warned = False
    while True:
        local = open_store(config, role="worker")
        try:
            await local.start()
            return local
        except StoreUnavailable as exc:
            if os.getppid() == 1:
                raise
            if not warned:
                log.warning("the delivery worker waits for the database: %s", exc)
                warned = True
        await trio.sleep(START_RETRY)


async def main(config: Config, link_fd: int) -> None:
    local = await _open_store(config)
    try:
        sock = trio.socket.fromfd(link_fd, socket.AF_UNIX, socket.SOCK_STREAM)
        os.close(link_fd)
        stream = trio.SocketStream(sock)
        svc: Services | None = None

        def poke() -> None:
            if svc is not None and svc.outbox is not None:
                svc.outbox.wake()

        link = DaemonLink(stream, on_poke=poke)
        async with trio.open_nursery() as nursery:
            await nursery.start(_until_daemon_gone, link, nursery.cancel_scope)
            svc = Services.build(config, LinkedStore(local, link))  # type: ignore[arg-type]
            svc.start_delivery(Plugins(modules=config.plugins))
            assert svc.outbox is not None
            await nursery.start(svc.outbox.run)
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    break
            nursery.cancel_scope.cancel(reason="delivery worker stopping")
        if svc is not None:
            for channel in svc.channels.values():
                with trio.move_on_after(2, shield=True):
                    await channel.aclose()
    finally:
        with trio.CancelScope(shield=True):
            await local.close()


async def _until_daemon_gone(
    link: DaemonLink, done: trio.CancelScope, *, task_status: trio.TaskStatus[None]
) -> None:
    await link.run(task_status=task_status)
    done.cancel(reason="the daemon closed the worker link")


#: how much the worker defers to the daemon for CPU (the nice value, 0–19)
NICENESS = 19


def _lower_priority() -> None:
    """Publishing comes first: when the two compete for the CPU, the kernel favours
    the daemon; deliveries use what is left and catch up when publishing pauses.

    The worker stays in the daemon's session, so that with the kernel's session
    autogroups (``sched_autogroup_enabled``, the default on desktops and plain VMs)
    both are one scheduling group: the nice value makes the worker defer to the
    daemon inside it, while the pair as a whole competes fairly with the rest of
    the machine. (A worker in a session of its own with a niced autogroup would
    defer to every other process on a busy host, and deliveries would stall.)
    Under systemd the service's cgroup plays that role.
    """
    try:
        os.nice(NICENESS)
    except OSError:
        pass


def _ignore_terminal_signals() -> None:
    """A Ctrl-C or a closed terminal reaches the whole process group; the daemon
    handles them and stops the worker in order (SIGTERM)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def run() -> None:
    data = json.loads(os.environ["NOTIFYD_WORKER_CONFIG"])
    config = Config(**data)
    setup_logging(config.log_level, node=config.node_name)
    _ignore_terminal_signals()
    _lower_priority()
    trio.run(main, config, int(os.environ["NOTIFYD_WORKER_FD"]))


if __name__ == "__main__":
    run()
