"""Background upkeep: release scheduled events, drop expired ones, prune old ones.

Each pass deletes in small batches, each its own short write job, with a pause
between batches so that publishers sharing the single writer never wait long. The
batch size adapts to how long a batch takes (:data:`PRUNE_TARGET`): what a batch
costs depends on the disk, on the size of the events and on how much full-text
index work their deletion causes, so a fixed count is either slow or a stall.

The pruner runs a pass at start, every hour, and at once when a reload lowers
``retention_days``, so that an operator freeing space sees it happen.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import trio

from . import attachments
from .errors import Unavailable
from .services import Services
from .timeutil import format_ts, now_rfc3339

log = logging.getLogger("notifyd.housekeeping")

PRUNE_BATCH = 500  # first batch of a pass; then sized to PRUNE_TARGET
PRUNE_MIN_BATCH, PRUNE_MAX_BATCH = 50, 5000
#: how long one delete batch should hold the writer (seconds, commit included)
PRUNE_TARGET = 0.015
#: between batches, so that publishes waiting meanwhile commit on their own
PRUNE_PAUSE = 0.02
IDEMPOTENCY_HOURS = 24
#: a pass that deleted at least this many events gives the WAL's space back after
CHECKPOINT_AFTER = 10_000


async def _delete_all(delete: Callable[[int], Awaitable[int]]) -> int:
    """Call ``delete(batch)`` until it deletes nothing, sizing batches to the target."""
    total, batch = 0, PRUNE_BATCH
    while True:
        started = time.monotonic()
        n = await delete(batch)
        took = time.monotonic() - started
        total += n
        if n < batch:
            return total
        # proportional, at most halving or doubling per step (one slow commit, e.g.
        # an FTS segment merge, should not collapse the batch size for good)
        scale = min(2.0, max(0.5, PRUNE_TARGET / max(took, 1e-4)))
        batch = int(min(PRUNE_MAX_BATCH, max(PRUNE_MIN_BATCH, batch * scale)))
        await trio.sleep(PRUNE_PAUSE)


async def prune_once(svc: Services, now: float | None = None) -> int:
    """Delete events older than ``retention_days`` and expired ones (returns how many
    events), old idempotency keys and expired web sessions."""
    now = time.time() if now is None else now
    started = time.monotonic()
    cutoff = format_ts(now - svc.config.retention_days * 86400)
    old = await _delete_all(lambda batch: svc.store.prune(cutoff, batch))
    expired = await _delete_all(lambda batch: svc.store.drop_expired(format_ts(now), batch))
    total = old + expired
    await svc.store.forget_idempotency_keys(format_ts(now - IDEMPOTENCY_HOURS * 3600))
    await svc.store.prune_sessions(now)
    await prune_attachments(svc, now)
    if total:
        if total >= CHECKPOINT_AFTER:
            await svc.store.after_prune()
        log.info(
            "pruned %d events (%d past retention of %d days, %d expired) in %.1f s",
            total, old, svc.config.retention_days, expired, time.monotonic() - started,
        )  # fmt: skip
    return total


#: how often expired attachments are looked for (they expire on their own clock, not
#: with the hourly event pass: a file should not outlive its expiry by an hour)
ATTACHMENT_PRUNE_INTERVAL = 60.0


async def prune_attachments(svc: Services, now: float | None = None) -> int:
    """Remove expired attachments (bytes and metadata), those of pruned events and
    those bound to an event that was never stored; failures are logged."""
    try:
        n = await attachments.prune(svc.store, time.time() if now is None else now)
        await trio.to_thread.run_sync(
            attachments.remove_stale_spools, attachments.tmp_dir(svc.config.data_dir)
        )
        return n
    except Exception:
        log.exception("pruning attachments failed; will retry")
        return 0


async def run_scheduler(
    svc: Services, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Release scheduled events when they are due (checked every second)."""
    task_status.started()
    while True:
        try:
            while await svc.store.release_due(time.time()) > 0:
                pass
        except Unavailable:
            pass  # disk full or locked (the writer logs it): they stay scheduled, retried
        await trio.sleep(1.0)


async def run_token_touch(
    svc: Services,
    interval: float = 15.0,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Flush tokens' last-use times; kept off the request path on purpose."""
    task_status.started()
    try:
        while True:
            await trio.sleep(interval)
            await _flush_token_uses(svc)
    finally:
        with trio.CancelScope(shield=True):
            await _flush_token_uses(svc)


async def _flush_token_uses(svc: Services) -> None:
    try:
        await svc.accounts.flush_token_uses()
    except Unavailable:
        pass  # disk full or locked (the writer logs it): last-use times are only a hint


async def run_pruner(
    svc: Services,
    interval: float = 3600.0,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A pruning pass at start, then every ``interval`` seconds, and as soon as a
    reload lowers ``retention_days``."""
    task_status.started()
    while True:
        retention = svc.config.retention_days
        try:
            await prune_once(svc)
        except Exception:
            log.exception("pruning failed at %s; will retry", now_rfc3339())
        with trio.move_on_after(interval):
            ticks = 0
            while svc.config.retention_days >= retention:
                await trio.sleep(1.0)
                ticks += 1
                if ticks % int(ATTACHMENT_PRUNE_INTERVAL) == 0:
                    await prune_attachments(svc)
            log.info("retention_days lowered to %d: pruning now", svc.config.retention_days)


async def run_checkpointer(
    svc: Services,
    interval: float = 1.0,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Checkpoint the store's log every ``interval`` seconds on a connection of its
    own, so that the writer's commits never do it (a checkpoint inside a commit
    held up the publishes queued behind it for hundreds of milliseconds after big
    deletes). Failures are logged once until a checkpoint succeeds again."""
    task_status.started()
    failing = False
    while True:
        await trio.sleep(interval)
        try:
            await svc.store.checkpoint()
        except Exception as exc:  # noqa: BLE001 - logged; the writer's own checkpoint is the net
            if not failing:
                log.warning("checkpoint failed (%s); retrying every %g s", exc, interval)
            failing = True
        else:
            failing = False
