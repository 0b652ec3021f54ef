"""Which outbox rows a stored event gets: the engine-neutral part of publishing.

Both engines read the enabled channels (with their user's role), the read grants
and the preferences in the publish transaction, then ask :func:`plan_deliveries`
which rows to insert, so that they decide the outbox in the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from .acl import glob_match
from .prefs import Preferences, plan
from .timeutil import format_ts


class ChannelTarget(NamedTuple):
    id: int
    user_id: int
    role: str
    name: str


class DeliveryRow(NamedTuple):
    event_id: int
    user_id: int
    channel_id: int
    next_attempt_at: str
    created_at: str
    digest_key: str | None


def plan_deliveries(
    events: Iterable[dict[str, Any]],
    channels: list[ChannelTarget],
    grants: Mapping[int, list[str]],
    prefs: Mapping[int, Preferences],
    recent: dict[int, int],
    now: float,
) -> list[DeliveryRow]:
    """One row per (event, channel) whose user may read the event's topic (admins
    read everything) and whose preferences want it there. Held rows (quiet hours,
    digests, rate limits) get a later ``next_attempt_at`` and a shared
    ``digest_key``. ``recent``: per channel, its undigested rows of the last minute
    (for rate limits; updated here as rows are planned)."""
    stamp = format_ts(now)
    rows: list[DeliveryRow] = []
    for ev in events:
        topic = ev["topic"]
        for ch in channels:
            if ch.role != "admin" and not any(
                glob_match(p, topic) for p in grants.get(ch.user_id, ())
            ):
                continue
            pref = prefs.get(ch.user_id)
            if pref is None:
                rows.append(DeliveryRow(ev["id"], ch.user_id, ch.id, stamp, stamp, None))
                continue
            hold = plan(pref, ev, ch.name, now, recent.get(ch.id, 0))
            if hold is None:
                continue
            if hold.digest_key is None:
                recent[ch.id] = recent.get(ch.id, 0) + 1
            rows.append(
                DeliveryRow(ev["id"], ch.user_id, ch.id, format_ts(hold.at), stamp, hold.digest_key)
            )
    return rows
