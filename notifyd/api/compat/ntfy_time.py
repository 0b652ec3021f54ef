"""Times in ntfy's parameters: delays (``X-Delay``/``X-At``/``X-In``), durations
(``30m``, ``2 days``) and a small part of ntfy's natural language times (``10am``,
``tomorrow, 3pm``), and Unix times ⇄ notifyd's stored timestamps.

Every value here comes straight from a client, so every parser either returns a
value or raises ntfy's 400 (:class:`~.ntfy_params.NtfyError` via ``bad``), never
anything else, and none does more than linear work: a value longer than
:data:`MAX_LENGTH` is refused before it is looked at, and the scans below read
each character a bounded number of times (no regex that can backtrack over a
long run of digits). Results are kept inside what :class:`datetime` can
represent, so turning them into timestamps cannot raise either.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .ntfy_params import DELAY_PARSE, INVALID, SINCE, NtfyError, bad

#: Longest time value read. The longest legitimate spellings are RFC 3339 times with
#: fractions and an offset (~35 characters) and phrases like "wednesday, 10:30pm";
#: anything longer is refused before any parsing, which bounds every scan below.
MAX_LENGTH = 64
#: Longest duration accepted (100 years), in seconds: far beyond any real delay or
#: ``since=``, and it keeps ``now ± duration`` inside datetime's years 1–9999.
MAX_DURATION = 100 * 36525 * 864  # 100 × 365.25 days
#: 9999-12-31T23:59:59Z, the last second :class:`datetime` can represent.
MAX_UNIX = 253402300799

_UNITS = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "week": 604800, "weeks": 604800,
}  # fmt: skip
_DIGITS = frozenset("0123456789")
_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
# Anchored, bounded repetitions and ASCII digits only (int() would also take other
# scripts' digits, ntfy does not): at most one pass over an input already ≤ MAX_LENGTH.
_CLOCK = re.compile(r"(\d{1,2})(?::(\d{2}))?\s*(am|pm)?", re.ASCII)
#: What an IANA zone name can look like; checked before ZoneInfo touches the file system
#: (an over-long name is an OSError there, a directory an IsADirectoryError).
_ZONE_NAME = re.compile(r"[A-Za-z0-9_+\-]{1,32}(?:/[A-Za-z0-9_+\-]{1,32}){0,2}")


def parse_duration(text: str) -> float | None:
    """``30m``, ``2 days``, ``1h30m``, ``10 seconds`` → seconds; None if not a duration.

    Parts are a number (ASCII digits, an optional ``.fraction``), optional white
    space and a unit; parts may be separated by spaces and commas. One pass, left to
    right: each character is read once (the old ``finditer`` retried every start
    position of a digit run, which was quadratic)."""
    t = text.strip().lower()
    n = len(t)
    if not t or n > MAX_LENGTH:
        return None
    total, i = 0.0, 0
    while i < n:
        while i < n and t[i] in " ,":
            i += 1
        j = i
        while j < n and t[j] in _DIGITS:
            j += 1
        if j == i:
            return None  # no number where a part must start (also: a trailing separator)
        if j + 1 < n and t[j] == "." and t[j + 1] in _DIGITS:
            j += 1
            while j < n and t[j] in _DIGITS:
                j += 1
        number = t[i:j]
        while j < n and t[j].isspace():
            j += 1
        k = j
        while k < n and "a" <= t[k] <= "z":
            k += 1
        factor = _UNITS.get(t[j:k])
        if factor is None:
            return None
        total += float(number) * factor  # ≤ 64 characters: always finite
        i = k
    return total


def _clock(text: str) -> tuple[int, int] | None:
    m = _CLOCK.fullmatch(text.strip())
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
    if len(text) > MAX_LENGTH:
        return None
    t = " ".join(text.lower().replace(",", " ").split())
    day: date | None = None
    words = t.split(" ", 1)
    try:
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
        d = day or now.date()
        target = datetime(d.year, d.month, d.day, hm[0], hm[1], tzinfo=now.tzinfo)
        if day is None and target <= now:
            target += timedelta(days=1)
    except (OverflowError, ValueError):  # only when `now` is at the end of year 9999
        return None
    return target


def _delay_error(detail: str) -> NtfyError:
    return bad(DELAY_PARSE, "invalid delay parameter: unable to parse delay", detail)


def parse_delay(value: str, tz_name: str, now: float | None = None) -> float:
    """ntfy's ``X-Delay``/``X-At``/``X-In``: a Unix time, an RFC 3339 time, a duration
    (``30m``, ``2 days``) or a natural time (see :func:`parse_natural`) → Unix time.

    The result is finite and at most :data:`MAX_UNIX`; it may be in the past (the
    caller refuses a delay that is too small)."""
    now = time.time() if now is None else now
    v = value.strip()
    if len(v) > MAX_LENGTH:
        raise _delay_error(f"the value is longer than {MAX_LENGTH} characters")
    if 9 <= len(v) <= 11 and v.isascii() and v.isdigit():
        return float(v)  # ≤ 99999999999, i.e. before year 5138
    at: float | None = None
    try:
        dt = datetime.fromisoformat(v.replace("z", "Z"))
        if dt.tzinfo is not None:
            at = dt.timestamp()
    except (ValueError, OverflowError, OSError):
        pass
    if at is None:
        seconds = parse_duration(v)
        if seconds is not None:
            if seconds > MAX_DURATION:
                raise _delay_error("a delay can be at most 100 years")
            at = now + seconds
    if at is None:
        zone: Any = None
        if tz_name:
            try:
                zone = ZoneInfo(tz_name) if _ZONE_NAME.fullmatch(tz_name) else None
            except (ZoneInfoNotFoundError, ValueError, OSError):  # e.g. "Europe" is a directory
                zone = None
            if zone is None:
                raise bad(INVALID, "invalid request: timezone invalid", f"{tz_name[:60]!r}")
        if zone is not None:
            local = datetime.fromtimestamp(now, zone)
        else:
            local = datetime.fromtimestamp(now).astimezone()
        natural = parse_natural(v, local)
        if natural is None:
            raise _delay_error("use a Unix time, an RFC 3339 time, a duration (30m, 2 days) "
                               "or e.g. 'tomorrow, 10am'")  # fmt: skip
        at = natural.timestamp()
    if not math.isfinite(at) or at > MAX_UNIX:
        raise _delay_error("the time is after the year 9999")
    return at


@dataclass
class Since:
    """What ``since=`` asks for: ``all``, ``none``, ``latest``, an event ``id`` or a
    Unix ``time`` (between 0 and :data:`MAX_UNIX`)."""

    kind: str
    value: float = 0.0


def _since_error(detail: str) -> NtfyError:
    return bad(SINCE, "invalid since parameter", detail)


def parse_since(value: str, poll: bool, now: float | None = None) -> Since:
    """``all``, ``latest``, ``none``, an event id, a Unix time or a duration (``10m``).

    ntfy's ids are random strings; notifyd's are its event ids as decimal strings,
    so a number could be either: numbers below 10^9 (2001-09-09 as a Unix time) are
    event ids, larger ones Unix times (up to the year 9999; later ones are refused).
    A duration reaching back before 1970 means the beginning.
    """
    v = value.strip()
    if not v:
        return Since("all") if poll else Since("none")
    if v in ("all", "latest", "none"):
        return Since(v)
    if len(v) > MAX_LENGTH:
        raise _since_error(f"the value is longer than {MAX_LENGTH} characters")
    if v.isascii() and v.isdigit():  # str.isdigit alone also takes '²', which int() refuses
        n = int(v)  # ≤ 64 digits: cheap
        if n < 1_000_000_000:
            return Since("id", n)
        if n > MAX_UNIX:
            raise _since_error("that Unix time is after the year 9999")
        return Since("time", n)
    seconds = parse_duration(v)
    if seconds is not None:
        if seconds > MAX_DURATION:
            raise _since_error("a duration can be at most 100 years")
        return Since("time", max(0.0, (time.time() if now is None else now) - seconds))
    raise _since_error("use all, latest, none, a message id, a Unix time or a duration like 10m")


def to_unix(rfc3339: str) -> int:
    """A stored timestamp → Unix seconds (ntfy's ``time``/``expires``)."""
    try:
        return int(datetime.fromisoformat(rfc3339).timestamp())
    except (TypeError, ValueError, OverflowError, OSError):
        raise bad(INVALID, "invalid request: time invalid", f"{str(rfc3339)[:40]!r}") from None


def from_unix(ts: float) -> str:
    """Unix seconds → notifyd's stored form (RFC 3339 UTC, milliseconds). Times
    before 1970 or after the year 9999 are refused (ntfy's 400), never raised as
    datetime's OverflowError/ValueError/OSError."""
    if not isinstance(ts, int | float) or not math.isfinite(ts) or not 0 <= ts <= MAX_UNIX:
        raise bad(INVALID, "invalid request: time out of range",
                  "use a time between 1970 and the year 9999")  # fmt: skip
    dt = datetime.fromtimestamp(ts, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
