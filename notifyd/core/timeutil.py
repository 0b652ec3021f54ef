"""Wall-clock helpers. All stored times are RFC 3339 UTC strings of fixed width
(``2026-01-02T03:04:05.678Z``) so that they sort and compare as text."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def format_ts(ts: float) -> str:
    dt = datetime.fromtimestamp(ts, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def now_ts() -> float:
    return time.time()


def now_rfc3339() -> str:
    return format_ts(time.time())


def normalize_rfc3339(value: str) -> str:
    """Any RFC 3339 timestamp with a zone → the stored fixed-width UTC form."""
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        raise ValueError("timestamp needs a zone offset, e.g. 2026-01-02T03:04:05Z")
    dt = dt.astimezone(UTC)
    if dt.year < 1970:
        raise ValueError("timestamps before 1970 are not accepted")
    return (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:"
        f"{dt.second:02d}.{dt.microsecond // 1000:03d}Z"
    )


def parse_rfc3339(value: str) -> float:
    """Parse an RFC 3339 timestamp (``Z`` or an offset) into a unix timestamp.

    A timestamp without an offset is rejected: guessing a zone is how schedules
    silently drift by hours.
    """
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        raise ValueError("timestamp needs a zone offset, e.g. 2026-01-02T03:04:05Z")
    return dt.timestamp()
