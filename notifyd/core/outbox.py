"""Delivery workers: send what the outbox holds, retry with backoff, give up loudly.

Outbox rows are written in the same transaction as their event (see
``sqlite/delivery.py``), so nothing acknowledged can miss its deliveries. The
dispatcher claims due rows (marking them ``sending``), sends each under its
channel kind's concurrency limit and timeout, and records the outcome: ``sent``;
``pending`` again at ``now + backoff`` (exponential, with jitter) after a
retryable failure; ``dead`` after a permanent one or the last attempt. Rows
left ``sending`` by a crash are due again on the next start, so delivery is at
least once: a crash between a successful send and its commit repeats that one
send.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

import trio

from .channels import Channel, ChannelRecord, Delivery, DeliveryError
from .services import Services

log = logging.getLogger("notifyd.outbox")

CLAIM_BATCH = 64
#: seconds to let a burst of commits accumulate before claiming (latency vs. fsyncs)
COALESCE = 0.005
#: a safety net only: commits, retries and due times wake the dispatcher
IDLE_POLL = 60.0


def backoff(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based): base·2^(n-1),
    capped, with ±20 % jitter so that failing peers are not hit in lockstep."""
    delay = min(cap, base * (2 ** (attempt - 1)))
    return delay * rng.uniform(0.8, 1.2)


class Outbox:
    def __init__(
        self,
        svc: Services,
        channels: dict[str, Channel],
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        idle_poll: float = IDLE_POLL,
    ) -> None:
        self.idle_poll = idle_poll
        self.svc = svc
        self.channels = channels
        self.clock = clock
        self.rng = rng or random.Random()
        self._limiters = {
            kind: trio.CapacityLimiter(ch.concurrency) for kind, ch in channels.items()
        }
        self._in_flight = 0
        self._wakeup = trio.Event()
        self.max_in_flight = max(CLAIM_BATCH, sum(ch.concurrency for ch in channels.values()))

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
        recovered = await self.svc.store.reset_inflight()
        if recovered:
            log.info("%d deliveries were in flight at the last stop; sending them again", recovered)
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                self._wakeup = trio.Event()
                free = self.max_in_flight - self._in_flight
                # Look before claiming: a claim is a write (and an fsync), and most
                # commits that wake us created nothing that is due.
                due = await self.svc.store.next_due() if free > 0 else None
                now = self.clock()
                if due is not None and due <= now:
                    claimed = await self.svc.store.claim_due(now, min(free, CLAIM_BATCH))
                    for ids, attempt, channel, events in claimed:
                        self._in_flight += 1
                        delivery = Delivery(ids[0], channel, events, attempt, self.base_url, ids)
                        nursery.start_soon(self._send, delivery)
                    if len(claimed) == CLAIM_BATCH and self._in_flight < self.max_in_flight:
                        continue
                    due = await self.svc.store.next_due()
                await self._sleep_until(due)
                # Let a burst of commits settle so one claim picks up many rows.
                await trio.sleep(COALESCE)

    async def _sleep_until(self, due: float | None) -> None:
        wait = self.idle_poll
        if due is not None and self._in_flight < self.max_in_flight:
            wait = min(wait, max(0.0, due - self.clock()))
        with trio.move_on_after(wait):
            await self._wakeup.wait()

    async def _send(self, delivery: Delivery) -> None:
        channel = delivery.channel
        error: str | None = None
        retry = False
        gone = False
        retry_after: float | None = None
        try:
            impl = self.channels.get(channel.kind)
            if impl is None:
                error = f"no plugin provides channel kind {channel.kind!r}"
                retry = True  # the plugin may come back after a restart
            else:
                try:
                    async with self._limiters[channel.kind]:
                        with trio.fail_after(impl.timeout):
                            await impl.send(delivery)
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
            await self._record(delivery, error, retry, gone, retry_after)
        finally:
            self._in_flight -= 1
            self.wake()

    async def _record(self, delivery: Delivery, error: str | None, retry: bool, gone: bool,
                      retry_after: float | None) -> None:  # fmt: skip
        now = self.clock()
        cfg = self.svc.config
        retry_at = None
        if error is not None and retry and delivery.attempt < cfg.delivery_max_attempts:
            delay = backoff(delivery.attempt, cfg.delivery_backoff_seconds,
                            cfg.delivery_backoff_max_seconds, self.rng)  # fmt: skip
            if retry_after is not None:
                delay = max(delay, min(retry_after, cfg.delivery_backoff_max_seconds))
            retry_at = now + delay
        if error is not None:
            outcome = "retry" if retry_at is not None else "dead"
            log.warning(
                "delivery %d to %s channel %r of %s failed (attempt %d, %s): %s",
                delivery.id, delivery.channel.kind, delivery.channel.name, delivery.channel.user,
                delivery.attempt, outcome, error,
            )  # fmt: skip
        with trio.CancelScope(shield=True):
            await self.svc.store.finish_delivery(
                delivery.row_ids or [delivery.id], delivery.channel.id, now, error=error, retry_at=retry_at,
                remove_channel=gone,
            )  # fmt: skip

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
                with trio.fail_after(impl.timeout):
                    await impl.send(delivery)
            except trio.TooSlowError:
                raise DeliveryError(f"timed out after {impl.timeout:g} s") from None
