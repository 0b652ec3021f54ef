"""Delivery workers: send what the outbox holds, retry with backoff, give up loudly.

Outbox rows are written in the same transaction as their event (see
:class:`~.store.OutboxStore`), so nothing acknowledged can miss its deliveries.
The dispatcher claims due rows, sends each under its channel kind's concurrency
limit and timeout, and records the outcome: ``sent``; ``pending`` again at ``now +
backoff`` (exponential, with jitter) after a retryable failure; ``dead`` after a
permanent one or the last attempt. Outcomes that finish while one batch is being
written are written together as the next batch.

Work is taken with an explicit claim: the store marks the rows it hands out with
this outbox's owner name and a lease (:meth:`Outbox.lease_seconds`), so several
outboxes on one database (a cluster) never send the same row. A row whose
sender dies is due again when its lease ends; when this node's outbox starts, it
ends the leases of its earlier processes at once (``release_claims``), so after a
crash the rows that were in flight go out again right away: delivery is at least
once, and a crash between a successful send and the commit of its outcome
repeats that one send.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Protocol

import trio

from . import destinations
from .attachments import link_key
from .channels import Channel, ChannelRecord, Delivery, DeliveryError
from .config import Config
from .errors import NotifydError, StoreGone
from .storage import claim_owner, node_name
from .store import DueDelivery, Outcome, Store

log = logging.getLogger("notifyd.outbox")

CLAIM_BATCH = 64
#: seconds to let a burst of commits accumulate before claiming (latency vs. fsyncs)
COALESCE = 0.005
#: a safety net only: commits, retries and due times wake the dispatcher
IDLE_POLL = 60.0
#: seconds between attempts to write outcomes the database refused (disk full, locked)
REWRITE_INTERVAL = 2.0
#: the shortest lease on claimed deliveries, in seconds (see Outbox.lease_seconds)
MIN_LEASE = 300.0
#: seconds an owner's role is trusted for the destination policy (a demotion
#: reaches the sends within this)
ROLE_TTL = 10.0


def backoff(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based): base·2^(n-1),
    capped, with ±20 % jitter so that failing peers are not hit in lockstep."""
    delay: float = min(cap, base * (2 ** (attempt - 1)))
    return delay * rng.uniform(0.8, 1.2)


class OutboxHost(Protocol):
    """What the outbox uses of the daemon's wiring. :class:`~.services.Services`
    is one; the outbox does not import it, so that ``services`` can build outboxes."""

    @property
    def config(self) -> Config: ...

    @property
    def store(self) -> Store: ...


class Outbox:
    def __init__(
        self,
        svc: OutboxHost,
        channels: dict[str, Channel],
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        idle_poll: float = IDLE_POLL,
        node: str | None = None,
    ) -> None:
        self.idle_poll = idle_poll
        #: this machine's name; claims are held by ``<node>/<this process>``
        self.node = node or node_name()
        self.owner = claim_owner(self.node)
        self.svc = svc
        self.channels = channels
        self.clock = clock
        self.rng = rng or random.Random()
        self._limiters = {
            kind: trio.CapacityLimiter(ch.concurrency) for kind, ch in channels.items()
        }
        self._in_flight = 0
        #: signs the links to attached images that pushes carry (loaded by run())
        self.link_key = b""
        self._wakeup = trio.Event()
        #: delivery rows being sent or being recorded (claimed by us): should a
        #: lease run out while an outcome waits to be written, the row is not sent twice
        self._sending: set[int] = set()
        self._outcomes: list[Outcome] = []
        #: outcomes the database refused to record; written again every REWRITE_INTERVAL
        self._unrecorded: list[Outcome] = []
        self._refused = trio.Event()  # set while _unrecorded holds something
        self._recording = False
        self._recorded = trio.Event()  # set when the batch being collected is written
        self.max_in_flight = max(CLAIM_BATCH, sum(ch.concurrency for ch in channels.values()))
        self.lease_seconds = self._lease()
        #: the fewest free places worth a claim while sends are in flight
        self._claim_min = max(1, self.max_in_flight // 4)
        # The send-time half of private_destinations: every send runs inside
        # destinations.outbound(), which needs the process-wide guard.
        destinations.install()
        self._owner_allowed: dict[int, tuple[bool, float]] = {}

    def _lease(self) -> float:
        """How long a claim lasts: longer than a claimed row can take to be sent,
        waiting for its kind's concurrency limit behind every other row in flight
        included, so that a live sender never loses its rows."""
        longest = 0.0
        for ch in self.channels.values():
            rounds = -(-self.max_in_flight // max(1, ch.concurrency)) + 1
            longest = max(longest, rounds * ch.timeout)
        return max(MIN_LEASE, 2 * longest)

    @property
    def base_url(self) -> str:
        """Links in notifications lead here: ``base_url``, else the first listen address."""
        cfg = self.svc.config
        if cfg.base_url:
            return cfg.base_url
        return f"http://{cfg.listen[0]}" if cfg.listen else ""

    def wake(self, _events: object = None) -> None:
        """Something may be due now (a commit created deliveries, a retry was asked)."""
        self._wakeup.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            self.link_key = await link_key(self.svc.store)
        except NotifydError as exc:  # pushes then carry no attached images
            log.warning("no key for attachment links (%s): pushes leave attached images out", exc)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._rewrite_unrecorded)
            # what earlier processes of this node had claimed is due now: they are gone
            unreleased = not await self._release_earlier_claims(first=True)
            task_status.started()
            refused = False
            while True:
                self._wakeup = trio.Event()
                try:
                    if unreleased:
                        unreleased = not await self._release_earlier_claims()
                    due, more = await self._claim_due(nursery)
                except NotifydError as exc:
                    # the database is away or refuses writes (disk full, locked):
                    # nothing new goes out; try again in a while
                    if not refused:
                        log.error("could not claim due deliveries (%s); retrying every "
                                  "%g s", exc, REWRITE_INTERVAL)  # fmt: skip
                    refused = True
                    await trio.sleep(REWRITE_INTERVAL)
                    continue
                if refused:
                    log.warning("claiming due deliveries works again")
                    refused = False
                if more:
                    continue
                await self._sleep_until(due)
                # Let a burst of commits settle so one claim picks up many rows.
                await trio.sleep(COALESCE)

    async def _release_earlier_claims(self, first: bool = False) -> bool:
        """End the claims of this node's earlier processes; whether that was done
        (at start, a failure is logged and the caller retries it later)."""
        try:
            released = await self.svc.store.release_claims(self.node)
        except NotifydError as exc:
            if not first:
                raise
            log.warning("could not release the claims of earlier runs yet: %s", exc)
            return False
        if released:
            log.info("%d deliveries in flight before a restart are due again", released)
        return True

    async def _claim_due(self, nursery: trio.Nursery) -> tuple[float | None, bool]:
        """Claim what is due and start sending it; return when the next row is due
        (None: nothing pending), and whether to claim again at once (a full batch
        was claimed and there is room for more)."""
        store = self.svc.store
        free = self.max_in_flight - self._in_flight
        # a claim is a write: take work in batches, not one row per finished send
        ready = free >= self._claim_min or self._in_flight == 0
        due = await store.next_due() if ready else None
        now = self.clock()
        if due is None or due > now:
            return due, False
        batch = await store.claim_deliveries(
            now, min(free, CLAIM_BATCH), self.owner, self.lease_seconds
        )
        for due_delivery in batch:
            if not self._sending.isdisjoint(due_delivery.ids):
                continue  # ours already: its outcome waits to be written
            self._sending.update(due_delivery.ids)
            self._in_flight += 1
            nursery.start_soon(self._send, due_delivery)
        if len(batch) == CLAIM_BATCH and self._in_flight < self.max_in_flight:
            return None, True
        return await store.next_due(), False

    async def _sleep_until(self, due: float | None) -> None:
        wait = self.idle_poll
        if due is not None and self._in_flight < self.max_in_flight:
            wait = min(wait, max(0.0, due - self.clock()))
        with trio.move_on_after(wait):
            await self._wakeup.wait()

    async def _send(self, due: DueDelivery) -> None:
        error: str | None = None
        retry = False
        gone = False
        retry_after: float | None = None
        try:
            channel = due.channel
            impl = None if channel is None else self.channels.get(channel.kind)
            if channel is None or not due.events:
                error = "channel removed" if channel is None else "event no longer stored"
            elif impl is None:
                error = f"no plugin provides channel kind {channel.kind!r}"
                retry = True  # the plugin may come back after a restart
            else:
                delivery = Delivery(due.ids[0], channel, due.events, due.attempt, self.base_url,
                                    due.ids, self.link_key)  # fmt: skip
                try:
                    async with self._limiters[channel.kind]:
                        await self._guarded_send(impl, delivery)
                except DeliveryError as exc:
                    error, retry, gone, retry_after = (
                        str(exc),
                        exc.retryable,
                        exc.gone,
                        exc.retry_after,
                    )
                except trio.TooSlowError:
                    error, retry = f"timed out after {impl.timeout:g} s", True
                except Exception as exc:  # a plugin bug must not take the daemon down
                    log.exception("channel kind %s failed unexpectedly", channel.kind)
                    error, retry = f"plugin error: {type(exc).__name__}", True
            await self._record(due, error, retry, gone, retry_after)
        finally:
            self._in_flight -= 1
            self.wake()

    async def _record(self, due: DueDelivery, error: str | None, retry: bool, gone: bool,
                      retry_after: float | None) -> None:  # fmt: skip
        now = self.clock()
        cfg = self.svc.config
        retry_at = None
        if error is not None and retry and due.attempt < cfg.delivery_max_attempts:
            delay = backoff(due.attempt, cfg.delivery_backoff_seconds,
                            cfg.delivery_backoff_max_seconds, self.rng)  # fmt: skip
            if retry_after is not None:
                delay = max(delay, min(retry_after, cfg.delivery_backoff_max_seconds))
            retry_at = now + delay
        if error is not None:
            ch = due.channel
            log.warning(
                "delivery %d to %s channel %r of %s failed (attempt %d, %s): %s",
                due.ids[0], ch.kind if ch else "-", ch.name if ch else "-", ch.user if ch else "-",
                due.attempt, "retry" if retry_at is not None else "dead", error,
            )  # fmt: skip
        outcome = Outcome(due.ids, due.channel_id, now, error, retry_at, remove_channel=gone)
        with trio.CancelScope(shield=True):
            await self._finish(outcome)

    async def _finish(self, outcome: Outcome) -> None:
        """Record ``outcome`` with the others that finish meanwhile: while one batch is
        being written, the next accumulates (one write job, not one per send)."""
        self._outcomes.append(outcome)
        if self._recording:
            await self._recorded.wait()
            return
        self._recording = True
        try:
            while self._outcomes:
                batch, self._outcomes = self._outcomes, []
                done, self._recorded = self._recorded, trio.Event()
                try:
                    await self.svc.store.finish_deliveries(batch, self.owner)
                except StoreGone:
                    # stopping: the rows stay pending in the database, so they go
                    # out again after a restart (at least once)
                    log.warning(
                        "%d delivery outcomes not recorded: the daemon stopped first; "
                        "those deliveries will be sent again", len(batch),
                    )  # fmt: skip
                except NotifydError as exc:
                    # The rows stay pending and in flight (not sent again); their
                    # outcomes are written again until the database takes them. Should
                    # the process stop first, the rows go out again after a restart.
                    if not self._unrecorded:
                        log.error(
                            "could not record %d delivery outcomes (%s); retrying every %g s",
                            len(batch), exc, REWRITE_INTERVAL,
                        )  # fmt: skip
                    self._unrecorded += batch
                    self._refused.set()
                else:
                    for o in batch:
                        self._sending.difference_update(o.ids)
                finally:
                    done.set()
        finally:
            self._recording = False

    async def _rewrite_unrecorded(self) -> None:
        while True:
            await self._refused.wait()  # no timer at all while nothing was refused
            await trio.sleep(REWRITE_INTERVAL)
            batch, self._unrecorded = self._unrecorded, []
            try:
                await self.svc.store.finish_deliveries(batch, self.owner)
            except NotifydError:
                self._unrecorded[:0] = batch  # still refused: keep them, and quiet
                continue
            if not self._unrecorded:
                self._refused = trio.Event()
            for o in batch:
                self._sending.difference_update(o.ids)
            log.warning("recorded %d delivery outcomes the database had refused", len(batch))
            self.wake()

    async def send_test(self, channel_record: ChannelRecord) -> None:
        """Send a test notification to one channel now, outside the outbox.

        Raises:
            DeliveryError: what the channel said, for the person who asked.
        """
        impl = self.channels.get(channel_record.kind)
        if impl is None:
            raise DeliveryError(
                f"no plugin provides channel kind {channel_record.kind!r}", retryable=False
            )
        event = {
            "id": 0, "topic": "notifyd/test", "title": "Test notification from notifyd",
            "body": f"If you can read this, channel {channel_record.name!r} works.",
            "format": "text", "priority": 3, "category": "test", "tags": [], "click": None,
            "icon": None, "image": None, "actions": [], "sensitive": False, "collapse_key": None,
            "deliver_at": None, "expires_at": None, "created_at": "",
        }  # fmt: skip
        delivery = Delivery(0, channel_record, [event], 1, self.base_url)
        async with self._limiters[channel_record.kind]:
            try:
                await self._guarded_send(impl, delivery)
            except trio.TooSlowError:
                raise DeliveryError(f"timed out after {impl.timeout:g} s") from None

    async def _owner_may_reach_private(self, channel: ChannelRecord) -> bool:
        now = self.clock()
        known = self._owner_allowed.get(channel.user_id)
        if known is not None and known[1] > now:
            return known[0]
        allowed = await destinations.owner_may_reach_private(
            self.svc.config, self.svc.store, channel.user_id
        )
        self._owner_allowed[channel.user_id] = (allowed, now + ROLE_TTL)
        return allowed

    async def _guarded_send(self, impl: Channel, delivery: Delivery) -> None:
        """``impl.send`` under the kind's timeout and the destination policy of the
        channel's owner, enforced on the addresses actually connected to.

        Raises:
            DeliveryError: the plugin's, or (permanent) the policy's when a
                refused address made the send fail, whatever the plugin made of it.
            trio.TooSlowError: the send took longer than ``impl.timeout``.
        """
        allowed = await self._owner_may_reach_private(delivery.channel)
        with destinations.outbound(allowed, self.svc.config.destination_policy) as rule:
            try:
                with trio.fail_after(impl.timeout):
                    await impl.send(delivery)
            except Exception:  # TooSlowError too
                if rule.refused:
                    raise DeliveryError(f"refused: {rule.refusal()}", retryable=False) from None
                raise
