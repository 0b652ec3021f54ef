"""Times in ntfy's parameters: delays (``X-Delay``/``X-At``/``X-In``), durations
(``30m``, ``2 days``) and a small part of ntfy's natural language times (``10am``,
``tomorrow, 3pm``), and Unix times ⇄ notifyd's stored timestamps."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .ntfy_params import DELAY_PARSE, INVALID, SINCE, bad

_UNITS = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "week": 604800, "weeks": 604800,
}  # fmt: skip
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)")
_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_CLOCK = re.compile(r"^(\d{1,2})(?::(\d{2}))?\s*(am|pm)?$")


def parse_duration(text: str) -> float | None:
    """``30m``, ``2 days``, ``1h30m``, ``10 seconds`` → seconds; None if not a duration."""
    t = text.strip().lower()
    if not t:
        return None
    total, pos = 0.0, 0
    for m in _DURATION_PART.finditer(t):
        if t[pos : m.start()].strip(" ,") or m.group(2) not in _UNITS:
            return None
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos == 0 or t[pos:].strip():
        return None
    return total


def _clock(text: str) -> tuple[int, int] | None:
    m = _CLOCK.match(text.strip())
    if not m:
        return None
    hour, minute, half = int(m.group(1)), int(m.group(2) or 0), m.group(3)
    if half:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if half == "pm" else 0)
    elif m.group(2) is None:
        return None  # a bare number is not a time of day
    if hour > 23 or minute > 59:
        return None
    return hour, minute


def parse_natural(text: str, now: datetime) -> datetime | None:
    """A small part of ntfy's natural language times: ``10am``, ``8:30pm``, ``17:00``,
    ``tomorrow``, ``tomorrow, 3pm``, ``tuesday 7am``, ``today 9pm`` — in ``now``'s zone.
    A time of day already past means the next day."""
    t = re.sub(r"\s+", " ", text.strip().lower().replace(",", " ")).strip()
    day: date | None = None
    words = t.split(" ", 1)
    if words[0] in ("today", "tomorrow") or words[0] in _WEEKDAYS:
        if words[0] == "today":
            day = now.date()
        elif words[0] == "tomorrow":
            day = now.date() + timedelta(days=1)
        else:
            ahead = (_WEEKDAYS.index(words[0]) - now.weekday()) % 7 or 7
            day = now.date() + timedelta(days=ahead)
        t = words[1] if len(words) > 1 else ""
    hm = _clock(t) if t else (now.hour, now.minute) if day is not None else None
    if hm is None:
        return None
    target = datetime(
        (day or now.date()).year, (day or now.date()).month, (day or now.date()).day,
        hm[0], hm[1], tzinfo=now.tzinfo,
    )  # fmt: skip
    if day is None and target <= now:
        target += timedelta(days=1)
    return target


def parse_delay(value: str, tz_name: str, now: float | None = None) -> float:
    """ntfy's ``X-Delay``/``X-At``/``X-In``: a Unix time, an RFC 3339 time, a duration
    (``30m``, ``2 days``) or a natural time (see :func:`parse_natural`) → Unix time."""
    now = time.time() if now is None else now
    v = value.strip()
    if re.fullmatch(r"\d{9,11}", v):
        return float(v)
    try:
        dt = datetime.fromisoformat(v.replace("z", "Z"))
        if dt.tzinfo is not None:
            return dt.timestamp()
    except ValueError:
        pass
    seconds = parse_duration(v)
    if seconds is not None:
        return now + seconds
    try:
        zone: Any = ZoneInfo(tz_name) if tz_name else None
    except (ZoneInfoNotFoundError, ValueError):
        raise bad(INVALID, "invalid request: timezone invalid", f"{tz_name[:60]!r}") from None
    local = datetime.fromtimestamp(now, zone) if zone else datetime.fromtimestamp(now).astimezone()
    dt = parse_natural(v, local)
    if dt is None:
        raise bad(DELAY_PARSE, "invalid delay parameter: unable to parse delay",
                  "use a Unix time, an RFC 3339 time, a duration (30m, 2 days) or e.g. "
                  "'tomorrow, 10am'")  # fmt: skip
    return dt.timestamp()


@dataclass
class Since:
    """What ``since=`` asks for: ``all``, ``none``, ``latest``, an event ``id`` or a
    Unix ``time``."""

    kind: str
    value: float = 0.0


def parse_since(value: str, poll: bool, now: float | None = None) -> Since:
    """``all``, ``latest``, ``none``, an event id, a Unix time or a duration (``10m``).

    ntfy's ids are random strings; notifyd's are its event ids as decimal strings,
    so a number could be either: numbers below 10^9 (2001-09-09 as a Unix time) are
    event ids, larger ones Unix times.
    """
    v = value.strip()
    if not v:
        return Since("all") if poll else Since("none")
    if v in ("all", "latest", "none"):
        return Since(v)
    if v.isdigit() and len(v) <= 19:
        n = int(v)
        return Since("id", n) if n < 1_000_000_000 else Since("time", n)
    seconds = parse_duration(v)
    if seconds is not None:
        return Since("time", (time.time() if now is None else now) - seconds)
    raise bad(SINCE, "invalid since parameter",
              "use all, latest, none, a message id, a Unix time or a duration like 10m")  # fmt: skip


def to_unix(rfc3339: str) -> int:
    return int(datetime.fromisoformat(rfc3339).timestamp())


def from_unix(ts: float) -> str:
    dt = datetime.fromtimestamp(ts, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
