"""``notifyd serve``: the whole daemon as one trio nursery.

Start order: store (writer thread + readers) → hub keepalives → scheduler and
pruner → listeners. Shutdown on SIGTERM/SIGINT reverses it: stop accepting, let
in-flight requests finish (their commits complete), close live streams with 1001,
then stop the writer after its last group commit.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import resource
import signal
import socket as stdsocket
import subprocess
import sys
import time
from collections.abc import Callable

import trio

from .api.app import make_app
from .api.server import Front, Listener, bind_tcp, bind_unix, inherited_listeners
from .config import Config
from .core.attachments import link_key
from .core.housekeeping import run_checkpointer, run_pruner, run_scheduler, run_token_touch
from .core.plugins import Plugins
from .core.services import Services
from .core.storage import open_store
from .core.upstream import ensure_upstream
from .logs import setup_logging
from .reload import reload_and_report
from .worker_link import WorkerLink

log = logging.getLogger("notifyd")


def sd_notify(message: str) -> None:
    """Send a state line to systemd's ``NOTIFY_SOCKET``; a no-op outside systemd."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    try:
        with stdsocket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_DGRAM) as s:
            s.connect(path)
            s.sendall(message.encode())
    except OSError as exc:
        log.warning("sd_notify failed: %s", exc)


#: below this many descriptors, a busy daemon runs out (one per live stream client)
FD_LIMIT_WANTED = 16384


def raise_fd_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; return the new soft limit.

    Every live stream holds a socket, and the usual soft default (1024) would refuse
    clients long before memory runs short. The hard limit is the administrator's
    (systemd: ``LimitNOFILE=``); a low one is only logged."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit from %d to %d: %s", soft, hard, exc)
    elif hard == resource.RLIM_INFINITY and soft < 1 << 20:
        # an unlimited hard limit is still capped by the kernel's nr_open
        for value in (1 << 20, 65536):
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (value, hard))
                soft = value
                break
            except (ValueError, OSError):
                continue
    if soft != resource.RLIM_INFINITY and soft < FD_LIMIT_WANTED:
        log.warning(
            "open-files limit is %d: at most about %d live streams can be served; raise the "
            "hard limit (systemd LimitNOFILE=65536, or ulimit -Hn) to hold more",
            soft, max(0, soft - 64),
        )  # fmt: skip
    return soft


def make_listeners(config: Config) -> list[Listener]:
    inherited = inherited_listeners()
    if inherited is not None:
        return inherited
    listeners = [bind_tcp(addr) for addr in config.listen]
    if config.socket_path is not None:
        listeners.append(bind_unix(config.socket_path, int(config.socket_mode, 8)))
    return listeners


async def _watchdog(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
    task_status.started()
    if usec <= 0:
        return
    while True:
        sd_notify("WATCHDOG=1")
        await trio.sleep(usec / 2e6)


async def _run_deliverer(
    svc: Services, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Keep the delivery worker process running; poke it after commits."""
    env = {**os.environ, "NOTIFYD_WORKER_CONFIG": json.dumps(dataclasses.asdict(svc.config))}
    for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        env.pop(var, None)  # systemd talks to the daemon only
    link: WorkerLink | None = None

    def wake_worker(events: object = None, /) -> None:
        if link is not None:  # the link of the worker running now
            link.poke(events)

    svc.wake_delivery = wake_worker  # instead of the outbox in this process
    task_status.started()
    backoff = 0.5
    while True:
        started = trio.current_time()
        ours, theirs = stdsocket.socketpair(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
        async with trio.open_nursery() as nursery:
            # The daemon's session (and so its scheduling autogroup): the worker
            # ignores the terminal's SIGINT and SIGHUP, the daemon stops it in order;
            # if the daemon dies, the worker sees its link close and stops too.
            try:
                proc = await trio.lowlevel.open_process(
                    [sys.executable, "-m", "notifyd.deliverer"],
                    stdin=subprocess.DEVNULL,
                    env={**env, "NOTIFYD_WORKER_FD": str(theirs.fileno())},
                    pass_fds=(theirs.fileno(),),
                )
            finally:
                theirs.close()
            link = WorkerLink(svc.store, trio.SocketStream(trio.socket.from_stdlib_socket(ours)))
            nursery.start_soon(link.run)
            link.poke()  # whatever is due now
            try:
                code = await proc.wait()
            finally:
                link = None
                with trio.CancelScope(shield=True):
                    if proc.returncode is None:
                        proc.terminate()
                        with trio.move_on_after(5):
                            await proc.wait()
                        if proc.returncode is None:
                            proc.kill()
                            await proc.wait()
            nursery.cancel_scope.cancel(reason="delivery worker exited")
        log.error("the delivery worker exited with %s; restarting it", code)
        backoff = 0.5 if trio.current_time() - started > 60 else min(backoff * 2, 30)
        await trio.sleep(backoff)


async def serve(
    config: Config,
    reload: Callable[[], Config] | None = None,
    *,
    task_status: trio.TaskStatus[list[Listener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    raise_fd_limit()
    config.data_path.mkdir(parents=True, exist_ok=True)
    store = open_store(config, role="daemon")
    await store.start()
    try:
        svc = Services.build(config, store)
        svc.started_at = time.time()
        svc.hub.last_id = await store.last_event_id()
        user, created = await svc.accounts.ensure_user(config.socket_user, "admin")
        await ensure_upstream(config, store)  # the ntfy-upstream channel (docs/mobile.md)
        await link_key(store)  # made before the delivery worker, which only reads it
        svc.start_delivery(Plugins(modules=config.plugins))
        assert svc.outbox is not None and svc.plugins is not None
        app = make_app(svc)
        svc.plugins.call_safely("register_routes", app=app)
        front = Front(svc, app)
        listeners = make_listeners(config)
        if created:
            _first_start_hint(config, listeners)
        # Everything imported and built so far (FastAPI, plugins, apprise's large
        # module graph) lives as long as the process: keep it out of the cyclic
        # GC's full collections, which otherwise stall the loop for tens of ms.
        gc.collect()
        gc.freeze()
        async with trio.open_nursery() as background:
            await background.start(svc.hub.run_keepalive, config.keepalive_seconds)
            await background.start(run_scheduler, svc)
            await background.start(run_pruner, svc)
            await background.start(run_token_touch, svc)
            await background.start(run_checkpointer, svc)
            await background.start(_watchdog)
            if config.delivery_process:
                await background.start(_run_deliverer, svc)
            else:
                await background.start(svc.outbox.run)
            async with trio.open_nursery() as connections:
                with trio.CancelScope() as accepting:
                    async with trio.open_nursery() as acceptors:
                        for listener in listeners:
                            await acceptors.start(front.serve, listener, connections)
                        for listener in listeners:
                            log.info("listening on %s (%s)", listener.address, listener.name)
                        status = f"serving on {len(listeners)} listeners"
                        sd_notify(f"READY=1\nSTATUS={status}")
                        task_status.started(listeners)
                        await _wait_for_signal(config, reload, status)
                        accepting.cancel(reason="shutting down")
                sd_notify("STOPPING=1")
                log.info("shutting down: closing streams, finishing requests")
                svc.hub.close_all()
                await front.terminate()
                connections.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
            background.cancel_scope.cancel(reason="shutting down")
        for channel in svc.channels.values():
            with trio.move_on_after(2, shield=True):
                await channel.aclose()
    finally:
        with trio.CancelScope(shield=True):
            await store.close()
    log.info("stopped")


async def _wait_for_signal(
    config: Config, reload: Callable[[], Config] | None, status: str
) -> None:
    """Until SIGTERM or SIGINT; SIGHUP reloads the configuration in between."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                if reload is None:
                    log.warning("SIGHUP: this daemon was started without a configuration to reload")
                    continue
                usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
                sd_notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")
                outcome = reload_and_report(config, reload)
                sd_notify(f"READY=1\nSTATUS={status}; {outcome}")
                continue
            log.info("received %s", signal.Signals(signum).name)
            sd_notify("STATUS=stopping: closing streams, finishing requests")
            return


def _first_start_hint(config: Config, listeners: list[Listener]) -> None:
    # the real addresses: under socket activation they are systemd's, not the config's
    addr = next((str(x.address) for x in listeners if x.name == "http"), "127.0.0.1:8780")
    sock = next((str(x.address) for x in listeners if x.name == "socket"), config.socket_path)
    print(
        "\nnotifyd: first start. The admin user "
        f"{config.socket_user!r} was created.\n"
        f"  - Over the socket ({sock}) the CLI acts as that admin: notifyd send test 'hello'\n"
        f"  - For HTTP clients create a token:  notifyd tokens create --user {config.socket_user}\n"
        f"  - To sign in with a password (the web page), set one:\n"
        f"        notifyd users passwd {config.socket_user} --password-stdin\n"
        f"  - API description (OpenAPI): http://{addr}/v1/openapi.json\n",
        flush=True,
    )


def run(config: Config, reload: Callable[[], Config] | None = None) -> None:
    """Run the daemon in the foreground until SIGTERM/SIGINT; ``reload()`` loads the
    configuration again on SIGHUP (see :mod:`notifyd.reload`)."""
    setup_logging(config.log_level, node=config.node_name)
    trio.run(serve, config, reload)
