"""What a phone is told about a delivery, whatever the push service (FCM or APNs).

Both native channels build their request from one :class:`MobileMessage`, so the
privacy rules, the priority mapping and the data fields an app reads are the same
on Android and iOS. Nothing here knows a wire format: :mod:`.fcm` turns the
message into an FCM HTTP v1 ``message``, the APNs channel into an ``aps``
payload and its headers.

Fields of :attr:`MobileMessage.data` (all strings, as FCM requires; an app finds
the same keys in an APNs payload as custom keys):

``id``        the event id (the last event's for a digest), to open or mark it read
``category``  the event's category
``priority``  ``"1"`` … ``"5"``
``click``     where a tap should lead: the event's ``click`` URL, else the
              notification center (``base_url/#event-<id>``); absent if neither
``topic``     the event's topic (not for sensitive events: a topic name such as
              ``hr/salaries`` says too much)
``actions``   the event's actions as a JSON list of ``{label, url, method?}``
              (not for sensitive events)
``tag``       the collapse key, else ``event-<id>`` (``digest-<id>`` for digests)
``sensitive`` ``"true"`` or ``"false"``
``digest``    the number of events, for a digest only

An image attached to the event (``attachment`` of type image/png, jpeg, gif or
webp) is the message's ``image`` when the event has no ``image`` of its own
(:meth:`~notifyd.core.channels.Delivery.message`): for an upload, a link signed
with the installation's key (``base_url/v1/attachments/<id>?sig=…``, valid until
the file expires), because the device fetches it without credentials; an external
https file as its own URL.

Sensitive events carry only :data:`~notifyd.core.channels.GENERIC_TITLE` as the
title, an empty body, no image, no actions and a click that leads to the
notification center (behind sign-in), never the event's own URL.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from notifyd.core.channels import Delivery
from notifyd.core.timeutil import parse_rfc3339

#: the event priority from which pushes are sent as high priority (FCM ``high``,
#: APNs ``apns-priority: 10``); lower ones may be batched by the phone to save power
HIGH_PRIORITY = 4
#: FCM and APNs both keep an undelivered message at most four weeks
MAX_TTL = 28 * 24 * 3600
#: the longest title and body sent; FCM and APNs both refuse messages over 4 KiB,
#: and the full text is in the inbox
MAX_TITLE = 256
MAX_BODY = 1024
#: APNs refuses an ``apns-collapse-id`` longer than 64 bytes
MAX_COLLAPSE_ID = 64

#: APNs interruption levels by event priority (iOS 15+): ``passive`` does not
#: light up the screen, ``time-sensitive`` breaks through Focus modes
INTERRUPTION_LEVEL = {1: "passive", 2: "passive", 3: "active", 4: "active", 5: "time-sensitive"}


def interruption_level(priority: int) -> str:
    return INTERRUPTION_LEVEL.get(priority, "active")


def collapse_id(key: str) -> str:
    """A collapse key that fits APNs' 64 bytes: short keys as they are, longer ones
    hashed (not cut, so two long keys with one prefix never replace each other)."""
    if len(key.encode()) <= MAX_COLLAPSE_ID:
        return key
    return hashlib.sha256(key.encode()).hexdigest()


#: attachment types a notification can show as its picture
def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class MobileMessage:
    """One push to one device, after the privacy rules.

    Attributes:
        title, body: what the notification shows (body may be empty).
        image: a picture URL, or None.
        priority: the event priority (the highest of a digest), 1–5.
        high: send as high priority (priority ≥ :data:`HIGH_PRIORITY`).
        interruption_level: the APNs level for ``priority``.
        collapse_key: the event's collapse key (single events only), or None.
        expires_at: when the event expires (Unix time), or None.
        thread: a grouping key for the notification list (the topic; None for
            sensitive events and digests).
        data: string key/values for the app, see the module docstring.
        sensitive: the generic line only.
    """

    title: str
    body: str
    image: str | None
    priority: int
    high: bool
    interruption_level: str
    collapse_key: str | None
    expires_at: float | None
    thread: str | None
    sensitive: bool
    data: dict[str, str] = field(default_factory=dict)

    @property
    def replace_id(self) -> str:
        """What a device replaces a notification by: the collapse key, else the tag
        (``event-<id>``, ``digest-<id>``). Delivery is at least once: a push sent again
        (its first answer was lost) replaces itself instead of showing twice."""
        return self.collapse_key or self.data.get("tag") or ""

    def ttl(self, now: float) -> int | None:
        """Seconds the push service should keep the message for an offline device:
        until the event expires (0 if it already has), None when it never does."""
        if self.expires_at is None:
            return None
        return int(max(0.0, min(MAX_TTL, self.expires_at - now)))


def build_message(delivery: Delivery) -> MobileMessage:
    """The push for ``delivery`` (one event, or a digest of several)."""
    msg = delivery.message()  # applies the privacy rules
    ev = delivery.event
    single = len(delivery.events) == 1
    sensitive = msg.sensitive
    expiries = [parse_rfc3339(e["expires_at"]) for e in delivery.events if e.get("expires_at")]
    data = {
        "id": str(ev["id"]),
        "category": msg.category,
        "priority": str(msg.priority),
        "tag": msg.tag or f"event-{ev['id']}",
        "sensitive": "true" if sensitive else "false",
    }
    if msg.click:
        data["click"] = msg.click
    if not sensitive:
        data["topic"] = ev["topic"]
        if msg.actions:
            data["actions"] = json.dumps(msg.actions, separators=(",", ":"))
    if not single:
        data["digest"] = str(len(delivery.events))
    return MobileMessage(
        title=_cut(msg.title, MAX_TITLE),
        body=_cut(msg.body, MAX_BODY),
        image=None if sensitive else msg.image,
        priority=msg.priority,
        high=msg.priority >= HIGH_PRIORITY,
        interruption_level=interruption_level(msg.priority),
        collapse_key=(ev.get("collapse_key") or None) if single else None,
        expires_at=min(expiries) if single and expiries else None,
        thread=ev["topic"] if single and not sensitive else None,
        sensitive=sensitive,
        data=data,
    )
