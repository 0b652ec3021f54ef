"""Per-user preferences: what arrives where, and when.

A user's preferences are one document:

    {
      "rules": [{"topic": "ci/*", "category": null, "min_priority": 4,
                 "channels": ["phone"], "mute": false}, ...],
      "quiet_hours": {"start": "22:00", "end": "07:00"} | null,
      "timezone": "Europe/Berlin",
      "digests": {"email": 600},
      "rate_limit_per_minute": 20 | null
    }

Routing an event for one user:

1. The first rule whose topic pattern, category and minimum priority match decides.
   ``mute`` keeps the event out of the inbox and off every channel; otherwise
   ``channels`` (a list of channel names, ``null`` = all) says where it goes — an
   empty list means inbox only. No matching rule: inbox and every channel.
2. Quiet hours (in the user's time zone): anything below ``urgent`` is held until
   they end and then sent as one digest per channel.
3. A channel with a digest window collects events into aligned windows of that
   many seconds and sends each window as one notification ("5 new in ci: …").
4. A rate limit caps deliveries per channel per minute; the excess is held into
   the next minute's digest. Nothing is dropped.

Everything here is pure: the store calls :func:`plan` inside the publish
transaction with the current time.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .acl import glob_match
from .models import SLUG_RE, check_pattern

HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
MAX_RULES = 100


@dataclass
class Rule:
    topic: str = "*"
    category: str | None = None
    min_priority: int = 1
    channels: list[str] | None = None
    mute: bool = False

    def matches(self, event: dict[str, Any]) -> bool:
        return (
            event["priority"] >= self.min_priority
            and (self.category is None or self.category == event["category"])
            and glob_match(self.topic, event["topic"])
        )


@dataclass
class Preferences:
    rules: list[Rule] = field(default_factory=list)
    quiet_start: str | None = None
    quiet_end: str | None = None
    timezone: str = "UTC"
    digests: dict[str, int] = field(default_factory=dict)
    rate_limit_per_minute: int | None = None

    # -- (de)serialisation -----------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "rules": [r.__dict__.copy() for r in self.rules],
            "quiet_hours": (
                {"start": self.quiet_start, "end": self.quiet_end} if self.quiet_start else None
            ),
            "timezone": self.timezone,
            "digests": dict(self.digests),
            "rate_limit_per_minute": self.rate_limit_per_minute,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any] | None, *, stored: bool = True) -> Preferences:
        """Parse and validate; raises ``ValueError("field: message")``. ``stored=False``
        for a document from a client: it is also held to limits that documents stored
        before them need not meet (see :func:`~notifyd.core.models.check_pattern`)."""
        doc = doc or {}
        unknown = set(doc) - {
            "rules",
            "quiet_hours",
            "timezone",
            "digests",
            "rate_limit_per_minute",
        }
        if unknown:
            raise ValueError(f"{sorted(unknown)[0]}: unknown field")
        prefs = cls()
        rules = doc.get("rules") or []
        if not isinstance(rules, list) or len(rules) > MAX_RULES:
            raise ValueError(f"rules: a list of at most {MAX_RULES} rules")
        for i, raw in enumerate(rules):
            prefs.rules.append(_rule(raw, f"rules[{i}]", stored))
        quiet = doc.get("quiet_hours")
        if quiet is not None:
            if not isinstance(quiet, dict) or set(quiet) != {"start", "end"}:
                raise ValueError('quiet_hours: {"start": "HH:MM", "end": "HH:MM"} or null')
            for key in ("start", "end"):
                if not isinstance(quiet[key], str) or not HHMM.match(quiet[key]):
                    raise ValueError(f"quiet_hours.{key}: a time like 22:00")
            if quiet["start"] == quiet["end"]:
                raise ValueError("quiet_hours.end: must differ from start")
            prefs.quiet_start, prefs.quiet_end = quiet["start"], quiet["end"]
        tz = doc.get("timezone", "UTC")
        try:
            # a directory ("Europe"), ".." or a very long name is an OSError from
            # the tz database lookup, not a ZoneInfoNotFoundError
            if not isinstance(tz, str) or len(tz) > 64:
                raise ValueError(tz)
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):
            raise ValueError(
                f"timezone: unknown time zone {tz!r} (use e.g. Europe/Berlin)"
            ) from None
        prefs.timezone = tz
        digests = doc.get("digests") or {}
        if not isinstance(digests, dict):
            raise ValueError("digests: an object of channel name → seconds")
        for name, seconds in digests.items():
            if (
                not isinstance(seconds, int)
                or isinstance(seconds, bool)
                or not 60 <= seconds <= 86400
            ):
                raise ValueError(f"digests.{name}: a window of 60–86400 seconds")
        prefs.digests = dict(digests)
        limit = doc.get("rate_limit_per_minute")
        if limit is not None and (
            not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 10000
        ):
            raise ValueError("rate_limit_per_minute: 1–10000 or null")
        prefs.rate_limit_per_minute = limit
        return prefs

    # -- decisions ---------------------------------------------------------------

    def rule_for(self, event: dict[str, Any]) -> Rule | None:
        for rule in self.rules:
            if rule.matches(event):
                return rule
        return None

    def muted(self, event: dict[str, Any]) -> bool:
        rule = self.rule_for(event)
        return rule is not None and rule.mute

    def quiet_until(self, now: float) -> float | None:
        """If ``now`` falls in quiet hours, the unix time they end; else None."""
        if not self.quiet_start or not self.quiet_end:
            return None
        zone = ZoneInfo(self.timezone)
        local = datetime.fromtimestamp(now, zone)
        sh, sm = map(int, self.quiet_start.split(":"))
        eh, em = map(int, self.quiet_end.split(":"))
        start_min, end_min, cur = sh * 60 + sm, eh * 60 + em, local.hour * 60 + local.minute
        inside = (
            start_min <= cur < end_min
            if start_min < end_min
            else (cur >= start_min or cur < end_min)
        )
        if not inside:
            return None
        end = local.replace(hour=eh, minute=em, second=0, microsecond=0)
        if end <= local:
            end += timedelta(days=1)
        # wall-clock arithmetic in the zone, then back to an instant (DST-safe enough:
        # a fold/gap at the end of quiet hours shifts the release by at most an hour)
        return end.timestamp()


def _rule(raw: Any, where: str, stored: bool) -> Rule:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: a rule is an object")
    unknown = set(raw) - {"topic", "category", "min_priority", "channels", "mute"}
    if unknown:
        raise ValueError(f"{where}.{sorted(unknown)[0]}: unknown field")
    rule = Rule()
    topic = raw.get("topic", "*")
    try:
        rule.topic = check_pattern(topic, stored=stored)
    except ValueError as exc:
        raise ValueError(f"{where}.topic: {exc}") from None
    category = raw.get("category")
    if category is not None and (not isinstance(category, str) or not SLUG_RE.fullmatch(category)):
        raise ValueError(f"{where}.category: a category slug or null")
    rule.category = category
    prio = raw.get("min_priority", 1)
    if isinstance(prio, str):
        from .models import parse_priority

        try:
            prio = parse_priority(prio)
        except ValueError as exc:
            raise ValueError(f"{where}.min_priority: {exc}") from None
    if not isinstance(prio, int) or isinstance(prio, bool) or not 1 <= prio <= 5:
        raise ValueError(f"{where}.min_priority: 1–5 or a priority name")
    rule.min_priority = prio
    channels = raw.get("channels")
    if channels is not None and (
        not isinstance(channels, list) or not all(isinstance(c, str) for c in channels)
    ):
        raise ValueError(f"{where}.channels: a list of channel names, or null for all")
    rule.channels = channels
    rule.mute = bool(raw.get("mute", False))
    return rule


@dataclass
class Hold:
    """When a delivery may go out, and the digest it belongs to (None: at once, alone)."""

    at: float
    digest_key: str | None


def plan(
    prefs: Preferences,
    event: dict[str, Any],
    channel_name: str,
    now: float,
    sent_last_minute: int,
) -> Hold | None:
    """Decide one (event, channel) delivery: None = do not deliver to this channel."""
    rule = prefs.rule_for(event)
    if rule is not None and (
        rule.mute or (rule.channels is not None and channel_name not in rule.channels)
    ):
        return None
    if event["priority"] < 5:
        quiet_end = prefs.quiet_until(now)
        if quiet_end is not None:
            return Hold(quiet_end, f"quiet:{int(quiet_end)}")
    window = prefs.digests.get(channel_name)
    if window:
        end = math.floor(now / window) * window + window
        return Hold(end, f"digest:{int(end)}")
    limit = prefs.rate_limit_per_minute
    if limit is not None and sent_last_minute >= limit:
        end = math.floor(now / 60) * 60 + 60
        return Hold(end, f"rate:{int(end)}")
    return Hold(now, None)
