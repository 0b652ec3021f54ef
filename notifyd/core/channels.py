"""The channel contract: how a plugin delivers notifications somewhere.

A channel *kind* (``webpush``, ``apprise``, …) is a :class:`Channel` subclass
registered by a plugin through the ``register_channels`` hook. A *channel* is a
user's configured target of that kind (a row in the store: name, kind, config).
The outbox calls :meth:`Channel.send` once per delivery, under the kind's
concurrency limit and timeout, and retries according to the :class:`DeliveryError`
it raises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from .attachments import image_link
from .store import Event

GENERIC_TITLE = "New notification in {category}"


class DeliveryError(Exception):
    """A delivery failed.

    Args:
        message: what went wrong, for people (shown in ``notifyd deliveries``);
            never include secrets or event content.
        retryable: try again later with backoff (network errors, 5xx, 429).
            False marks the delivery ``dead`` at once (bad credentials, 4xx).
        gone: the target no longer exists (a Web Push endpoint answering 404/410);
            the channel is removed.
        retry_after: seconds the peer asked us to wait, if it said.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = True,
        gone: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable and not gone
        self.gone = gone
        self.retry_after = retry_after


@dataclass
class ChannelRecord:
    """A user's configured channel as stored (``config`` holds secrets)."""

    id: int
    user_id: int
    user: str
    name: str
    kind: str
    config: dict[str, Any]
    enabled: bool = True
    created_at: str = ""
    last_success_at: str | None = None
    last_error: str | None = None
    last_error_at: str | None = None


@dataclass
class Message:
    """What a notification says, after privacy rules are applied."""

    title: str
    body: str
    format: str  # "text" | "markdown"
    priority: int
    category: str
    click: str | None
    icon: str | None = None
    image: str | None = None
    actions: list[dict[str, Any]] = field(default_factory=list)
    tag: str | None = None
    sensitive: bool = False


@dataclass
class Delivery:
    """One outbox row being sent: one event (or several, for a digest) to one channel."""

    id: int
    channel: ChannelRecord
    events: list[Event]
    attempt: int  # 1 for the first try
    base_url: str = ""
    #: every outbox row this delivery covers (several for a digest)
    row_ids: list[int] = field(default_factory=list)
    #: the key signing links to attached images (``attachments.LINK_KEY``); b"": none
    link_key: bytes = b""

    @property
    def event(self) -> Event:
        return self.events[-1]

    def link(self, event: Event) -> str | None:
        """Where a click should lead: the event's own URL, else the notification center."""
        if event.get("click") and not event.get("sensitive"):
            click: str = event["click"]
            return click
        return f"{self.base_url.rstrip('/')}/#event-{event['id']}" if self.base_url else None

    def message(self) -> Message:
        """The text to send. Sensitive events carry only a generic line and a link:
        their content stays behind authentication."""
        if len(self.events) > 1:
            return self._digest()
        ev = self.event
        tag = ev.get("collapse_key") or f"event-{ev['id']}"
        if ev.get("sensitive"):
            return Message(
                title=GENERIC_TITLE.format(category=ev["category"]), body="", format="text",
                priority=ev["priority"], category=ev["category"], click=self.link(ev), tag=tag,
                sensitive=True,
            )  # fmt: skip
        return Message(
            title=ev["title"] or ev["topic"], body=ev["body"], format=ev["format"],
            priority=ev["priority"], category=ev["category"], click=self.link(ev),
            icon=ev.get("icon"), actions=list(ev.get("actions") or []), tag=tag,
            image=ev.get("image") or image_link(ev, self.base_url, self.link_key),
        )  # fmt: skip

    def _digest(self) -> Message:
        evs = self.events
        cats = sorted({e["category"] for e in evs})
        where = cats[0] if len(cats) == 1 else "several categories"
        lines = [
            GENERIC_TITLE.format(category=e["category"])
            if e.get("sensitive")
            else (e["title"] or e["body"][:80])
            for e in evs
        ]
        return Message(
            title=f"{len(evs)} new in {where}", body="\n".join(f"• {line}" for line in lines),
            format="text", priority=max(e["priority"] for e in evs), category=cats[0],
            click=self.link(evs[-1]) if not any(e.get("sensitive") for e in evs) else self.link({**evs[-1], "click": None}),
            tag=f"digest-{evs[-1]['id']}", sensitive=any(e.get("sensitive") for e in evs),
        )  # fmt: skip


class Channel:
    """Base class of a channel kind. Subclass it in a plugin and return the class
    from the ``register_channels`` hook.

    Class attributes:
        kind: the name users pick (``apprise``, ``webpush``); unique.
        concurrency: most deliveries of this kind in flight at once.
        timeout: seconds one :meth:`send` may take before it counts as a
            retryable failure.

    An instance is created once at daemon start with the daemon's services (for
    data paths, configuration); it must not hold per-user state in memory.
    """

    kind: ClassVar[str] = ""
    concurrency: ClassVar[int] = 8
    timeout: ClassVar[float] = 15.0

    def __init__(self, services: Any) -> None:
        self.services = services

    @classmethod
    def validate(cls, config: dict[str, Any]) -> dict[str, Any]:
        """Check and normalise a channel's config before it is stored.

        Raise ``ValueError`` with a message for the user (it becomes a 422 naming
        the field ``config``); never put secrets in the message.
        """
        return config

    @classmethod
    def public(cls, config: dict[str, Any]) -> dict[str, Any]:
        """The config as the API may show it: secrets masked. Default: nothing."""
        return {}

    @classmethod
    def destinations(cls, config: dict[str, Any]) -> list[str]:
        """Where a channel with this (validated) config makes the daemon connect:
        URLs (``https://host:port/…``) or bare host names/addresses.

        Called when a channel is created, so that ``private_destinations`` can
        refuse, with a 422, a user's channel aimed at this machine or a private
        network. List only real network destinations, never secrets (a bot
        token is not a host). Default: none.

        Whatever this returns, sends are also checked on the addresses actually
        connected to, for every client that resolves through
        ``socket.getaddrinfo`` (httpx, requests/urllib3, smtplib, trio); see
        ``notifyd/core/destinations.py``.
        """
        return []

    async def send(self, delivery: Delivery) -> None:
        """Deliver ``delivery``; return normally on success.

        Raises:
            DeliveryError: with ``retryable``/``gone`` set as appropriate. Any
                other exception is treated as a retryable failure and logged.

        Cancellation: the outbox cancels a send that exceeds ``timeout``; a
        cancelled send counts as a retryable failure.
        """
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release resources (HTTP clients) at shutdown."""
