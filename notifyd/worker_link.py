"""The link between the daemon and its delivery worker process: one writer for both.

SQLite allows one writer at a time, across processes. When the worker wrote its
claims and outcomes itself, every daemon group commit that met one of the worker's
transactions waited in SQLite's busy handler (sleeps of 1, 2, 5, 10 … ms), and
publishing slowed by a third. So the worker does not write: it asks the daemon to
claim due rows (``claim_delivery_rows``: ids only), reads their channels and
events through its own read connections, and sends the outcomes to the daemon,
which writes claims and outcomes (``finish_deliveries``) on its single writer, in
the group commits of publishing. Publishing never waits for the worker.

The link is a Unix socket pair; both directions carry newline-delimited JSON.

* daemon → worker: an empty line is a poke ("a commit may have created due
  deliveries"); ``{"id": n, "result": …}`` or ``{"id": n, "error": "…"}`` answers a
  request.
* worker → daemon: ``{"id": n, "op": "…", "args": {…}}``.

End of file on either side means the other is gone: the worker stops, the daemon
restarts it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import trio

from .core.errors import NotifydError, StoreGone, StoreUnavailable
from .core.store import Claim, DueDelivery, OutboxStore, Outcome, Store

log = logging.getLogger("notifyd.deliverer")

#: a line longer than this is a protocol error (a claim of 64 digests stays far below)
MAX_LINE = 64 * 1024 * 1024


async def _lines(stream: trio.abc.ReceiveStream) -> AsyncIterator[bytes]:
    """The newline-terminated lines of ``stream`` (without the newline), until EOF."""
    buf = bytearray()
    while True:
        data = await stream.receive_some(262144)
        if not data:
            return
        buf += data
        start = 0
        while (end := buf.find(b"\n", start)) >= 0:
            yield bytes(buf[start:end])
            start = end + 1
        del buf[:start]
        if len(buf) > MAX_LINE:
            raise ValueError("worker link: line too long")


class _Sender:
    """Batches outgoing lines: whoever has something to say appends it; one task
    writes everything queued with one ``send_all``."""

    def __init__(
        self, stream: trio.abc.SendStream, on_flush: Callable[[], None] | None = None
    ) -> None:
        self._stream = stream
        self._on_flush = on_flush
        self._out: list[bytes] = []
        self._ready = trio.Event()

    def put(self, line: bytes) -> None:
        self._out.append(line)
        self._ready.set()

    async def run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready = trio.Event()
            data, self._out = b"".join(self._out), []
            if self._on_flush is not None:
                self._on_flush()
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return


# -- the daemon's end ----------------------------------------------------------------


class WorkerLink:
    """Serves one worker's requests on the daemon's store and pokes it after commits."""

    def __init__(self, store: OutboxStore, stream: trio.SocketStream) -> None:
        self.store = store
        self.stream = stream
        self._sender = _Sender(stream, on_flush=self._flushed)
        self._poke_queued = False

    def _flushed(self) -> None:
        self._poke_queued = False

    def poke(self, _events: object = None) -> None:
        """Deliveries may be due: one empty line, however many commits ask before it goes."""
        if not self._poke_queued:
            self._poke_queued = True
            self._sender.put(b"\n")

    async def run(self) -> None:
        """Until the worker closes its end."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sender.run)
            try:
                async for line in _lines(self.stream):
                    nursery.start_soon(self._answer, orjson.loads(line))
            except (trio.BrokenResourceError, ValueError) as exc:
                log.error("delivery worker link broken: %s", exc)
            nursery.cancel_scope.cancel(reason="the delivery worker closed its link")

    async def _answer(self, req: dict[str, Any]) -> None:
        args = req.get("args", {})
        result: Any
        try:
            op = req["op"]
            if op == "finish_deliveries":
                outcomes = [Outcome(**o) for o in args["outcomes"]]
                result = await self.store.finish_deliveries(outcomes, args["owner"])
            elif op == "claim_delivery_rows":
                claims = await self.store.claim_delivery_rows(
                    args["now"], args["limit"], args["owner"], args["lease_seconds"]
                )
                result = [dataclasses.asdict(c) for c in claims]
            elif op == "release_claims":
                result = await self.store.release_claims(args["node"])
            else:
                raise ValueError(f"unknown operation {op!r}")
            reply = {"id": req["id"], "result": result}
        except (NotifydError, ValueError, KeyError, TypeError) as exc:
            reply = {"id": req.get("id"), "error": str(exc)}
        self._sender.put(orjson.dumps(reply) + b"\n")


# -- the worker's end ----------------------------------------------------------------


class DaemonLink:
    """The worker's client for the daemon's writes; see the module docstring."""

    def __init__(self, stream: trio.SocketStream, on_poke: Callable[[], None]) -> None:
        self.stream = stream
        self.on_poke = on_poke
        self._sender = _Sender(stream)
        self._next_id = 0
        self._waiting: dict[int, list[Any]] = {}  # id -> [event, reply]
        self._closed = False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read pokes and replies until the daemon closes the link, then return."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._sender.run)
                task_status.started()
                try:
                    async for line in _lines(self.stream):
                        if not line:
                            self.on_poke()
                            continue
                        reply = orjson.loads(line)
                        slot = self._waiting.pop(reply["id"], None)
                        if slot is not None:
                            slot[1] = reply
                            slot[0].set()
                except trio.BrokenResourceError:
                    pass  # reset: the daemon died with requests of ours unread
                nursery.cancel_scope.cancel(reason="the daemon closed the worker link")
        finally:
            self._closed = True  # later calls fail at once instead of waiting forever
            for event, _ in self._waiting.values():
                event.set()  # their reply is None: the daemon is gone

    async def call(self, op: str, **args: Any) -> Any:
        """Run ``op`` on the daemon's writer and return its result.

        Raises:
            StoreUnavailable: the daemon refused or failed (StoreGone: it went away).
        """
        if self._closed:
            raise StoreGone("the daemon closed the worker link", retry_after=1)
        self._next_id += 1
        slot: list[Any] = [trio.Event(), None]
        self._waiting[self._next_id] = slot
        self._sender.put(orjson.dumps({"id": self._next_id, "op": op, "args": args}) + b"\n")
        await slot[0].wait()
        reply = slot[1]
        if reply is None:
            raise StoreGone("the daemon closed the worker link", retry_after=1)
        if "error" in reply:
            raise StoreUnavailable(reply["error"], retry_after=1)
        return reply["result"]


class LinkedStore:
    """The worker's store: reads from its own connections, the outbox's writes
    (claims, outcomes) through the daemon. Everything else goes to ``local``."""

    def __init__(self, local: Store, link: DaemonLink) -> None:
        self._local = local
        self._link = link

    def __getattr__(self, name: str) -> Any:
        return getattr(self._local, name)

    async def claim_delivery_rows(
        self, now: float, limit: int, owner: str, lease_seconds: float
    ) -> list[Claim]:
        rows = await self._link.call(
            "claim_delivery_rows", now=now, limit=limit, owner=owner, lease_seconds=lease_seconds
        )
        return [Claim(**c) for c in rows]

    async def claim_deliveries(
        self, now: float, limit: int, owner: str, lease_seconds: float
    ) -> list[DueDelivery]:
        """Claimed on the daemon's writer; channels and events read here."""
        claims = await self.claim_delivery_rows(now, limit, owner, lease_seconds)
        return await self._local.load_claims(claims)

    async def finish_deliveries(self, outcomes: list[Outcome], owner: str) -> int:
        done: int = await self._link.call(
            "finish_deliveries", outcomes=[dataclasses.asdict(o) for o in outcomes], owner=owner
        )
        return done

    async def release_claims(self, node: str) -> int:
        released: int = await self._link.call("release_claims", node=node)
        return released
