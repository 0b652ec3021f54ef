"""Background upkeep: release scheduled events, drop expired ones, prune old ones.

Each pass deletes in small batches, each its own short write job, with a pause
between batches so that publishers sharing the single writer never wait long.
"""

from __future__ import annotations

import logging
import time

import trio

from .services import Services
from .timeutil import format_ts, now_rfc3339

log = logging.getLogger("notifyd.housekeeping")

PRUNE_BATCH = 500
PRUNE_PAUSE = 0.05
IDEMPOTENCY_HOURS = 24


async def prune_once(svc: Services, now: float | None = None) -> int:
    """Delete events older than ``retention_days`` and expired ones (returns how many
    events), old idempotency keys and expired web sessions."""
    now = time.time() if now is None else now
    cutoff = format_ts(now - svc.config.retention_days * 86400)
    total = 0
    while True:
        n = await svc.store.prune(cutoff, PRUNE_BATCH)
        n += await svc.store.drop_expired(format_ts(now), PRUNE_BATCH)
        total += n
        if n == 0:
            break
        await trio.sleep(PRUNE_PAUSE)
    await svc.store.forget_idempotency_keys(format_ts(now - IDEMPOTENCY_HOURS * 3600))
    await svc.store.prune_sessions(now)
    if total:
        log.info("pruned %d events (retention %d days)", total, svc.config.retention_days)
    return total


async def run_scheduler(
    svc: Services, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Release scheduled events when they are due (checked every second)."""
    task_status.started()
    while True:
        while await svc.store.release_due(time.time()) > 0:
            pass
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
            await svc.accounts.flush_token_uses()
    finally:
        with trio.CancelScope(shield=True):
            await svc.accounts.flush_token_uses()


async def run_pruner(
    svc: Services,
    interval: float = 3600.0,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    task_status.started()
    while True:
        try:
            await prune_once(svc)
        except Exception:
            log.exception("pruning failed at %s; will retry", now_rfc3339())
        await trio.sleep(interval)
