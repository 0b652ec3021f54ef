"""The ``webpush`` channel: encrypted pushes to browsers and phones (RFC 8030/8291/8292).

A channel's config is the browser's PushSubscription (``endpoint`` and ``keys``)
plus the ``user_agent`` that subscribed. The endpoint URL is a capability: anyone
holding it (with our VAPID key) can wake that device, so it is never logged or
shown; only its origin is.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from typing import Any

import httpx
import orjson
from http_ece import ECEException
from py_vapid import VapidException
from pywebpush import WebPusher, WebPushException

from notifyd.core import destinations
from notifyd.core.channels import Channel, Delivery, DeliveryError
from notifyd.core.timeutil import parse_rfc3339
from notifyd.plugins.httpclients import Pools, retry_after_seconds

from .subscription import endpoint_origin, parse_subscription
from .vapid import VapidSigner, b64url, load_or_create

log = logging.getLogger("notifyd.webpush")

#: Push services must accept 4096 bytes of encrypted body; aes128gcm adds an
#: 86-byte header, a 16-byte tag and a 1-byte padding delimiter.
MAX_PLAINTEXT = 4096 - 86 - 16 - 1
#: How long a push service keeps a message for an offline device. A day, for every
#: priority: dropping an urgent push because the phone was in a tunnel (TTL 0)
#: would be worse than showing it late; the inbox has it either way.
DEFAULT_TTL = 86400
URGENCY = {1: "very-low", 2: "low", 3: "normal", 4: "high", 5: "high"}
_TOPIC_OK = re.compile(r"[A-Za-z0-9_-]{1,32}")


def topic_header(collapse_key: str) -> str:
    """A ``Topic`` header (RFC 8030: ≤ 32 base64url characters) for a collapse key.

    Keys that already fit are sent as they are; others are hashed rather than cut,
    so two long keys sharing a prefix never replace each other's pushes.
    """
    if _TOPIC_OK.fullmatch(collapse_key):
        return collapse_key
    return b64url(hashlib.sha256(collapse_key.encode()).digest())[:32]


def build_payload(delivery: Delivery) -> dict[str, Any]:
    """What the service worker receives (see DESIGN.md): the privacy rules are
    already applied by :meth:`Delivery.message`, which also makes an attached image
    the ``image`` (a signed link) when the event has none."""
    msg = delivery.message()
    ev = delivery.event
    image = msg.image
    return {
        "id": ev["id"], "topic": ev["topic"], "title": msg.title, "body": msg.body,
        "category": msg.category, "priority": msg.priority, "click": msg.click,
        "icon": msg.icon, "image": image, "actions": msg.actions, "tag": msg.tag,
        "sensitive": msg.sensitive,
    }  # fmt: skip


def _shorten(text: str, excess: int) -> str:
    """``text`` at least ``excess`` bytes shorter, ending in "…" (cut on a
    character boundary)."""
    raw = text.encode()
    kept = raw[: max(0, len(raw) - excess - len("…".encode()))].decode(errors="ignore")
    return kept + "…" if kept else ""


def encode_payload(payload: dict[str, Any]) -> bytes:
    """Serialise ``payload`` within :data:`MAX_PLAINTEXT`, shortening the body,
    then dropping pictures and actions, then shortening the title.

    Raises:
        DeliveryError: (not retryable) when even that does not fit.
    """
    payload = dict(payload)
    data = orjson.dumps(payload)
    for step in ("body", "image", "icon", "actions", "title"):
        # a loop, because JSON escapes make the text longer than its UTF-8
        while len(data) > MAX_PLAINTEXT and payload[step]:
            if step in ("body", "title"):
                payload[step] = _shorten(payload[step], len(data) - MAX_PLAINTEXT)
            else:
                payload[step] = [] if step == "actions" else None
            data = orjson.dumps(payload)
    if len(data) <= MAX_PLAINTEXT:
        return data
    raise DeliveryError("the notification does not fit in a push message", retryable=False)


class _HideEndpointPaths(logging.Filter):
    """httpx logs every request's full URL at INFO; for a push endpoint the path is
    the secret, so the daemon log shows the origin only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                f"{a.scheme}://{a.netloc.decode()}/…" if isinstance(a, httpx.URL) else a
                for a in record.args
            )
        return True


def _hide_endpoint_paths() -> None:
    httpx_log = logging.getLogger("httpx")
    if not any(isinstance(f, _HideEndpointPaths) for f in httpx_log.filters):
        httpx_log.addFilter(_HideEndpointPaths())


class WebPushChannel(Channel):
    """Delivers to one browser PushSubscription, encrypted per RFC 8291 (aes128gcm)
    and signed with the daemon's VAPID key (RFC 8292).

    Outcomes of :meth:`send`: a 2xx answer is success; 404/410 mean the browser
    dropped the subscription (``DeliveryError(gone=True)``: the channel is
    removed); 429, 5xx and network errors are retried, honouring ``Retry-After``;
    any other answer (400, 401, 403, 413, …) is permanent.

    Headers sent: ``TTL`` (:data:`DEFAULT_TTL`, less when the event expires
    sooner), ``Urgency`` from the priority (:data:`URGENCY`), ``Topic`` from the
    event's ``collapse_key`` (see :func:`topic_header`), so a newer push replaces
    an undelivered older one.
    """

    kind = "webpush"
    concurrency = 32
    timeout = 15.0

    def __init__(self, services: Any) -> None:
        super().__init__(services)
        _hide_endpoint_paths()
        key = load_or_create(services.config.data_path)
        self._signer = VapidSigner(key, services.config.vapid_subject)
        # Pooled clients: most subscriptions share a few push services, so
        # connections (and TLS handshakes) are reused across deliveries. Two pools:
        # a connection opened for a send that may reach private addresses (an
        # admin's channel) must never be reused by one that may not, since a
        # reused connection is not resolved (and so not checked) again.
        self._pools = Pools.standard(10.0, self.concurrency * 2)

    @classmethod
    def validate(cls, config: dict[str, Any]) -> dict[str, Any]:
        return parse_subscription(config)

    @classmethod
    def destinations(cls, config: dict[str, Any]) -> list[str]:
        return [config["endpoint"]] if config.get("endpoint") else []

    @classmethod
    def public(cls, config: dict[str, Any]) -> dict[str, Any]:
        return {
            "endpoint_origin": endpoint_origin(config.get("endpoint", "")),
            "user_agent": config.get("user_agent") or "",
        }

    def headers(self, delivery: Delivery, now: float) -> dict[str, str]:
        """The Web Push headers for ``delivery``, without the body-related ones."""
        ev = delivery.event
        ttl = DEFAULT_TTL
        if ev.get("expires_at"):
            ttl = int(max(0.0, min(DEFAULT_TTL, parse_rfc3339(ev["expires_at"]) - now)))
        urgency = URGENCY.get(max(e["priority"] for e in delivery.events), "normal")
        out = {"TTL": str(ttl), "Urgency": urgency}
        if len(delivery.events) == 1 and ev.get("collapse_key"):
            out["Topic"] = topic_header(ev["collapse_key"])
        return out

    def encrypt(self, config: dict[str, Any], data: bytes) -> bytes:
        """Encrypt ``data`` for the subscription in ``config`` (aes128gcm)."""
        try:
            return WebPusher(config).encode(data, content_encoding="aes128gcm")["body"]
        except (WebPushException, ECEException, ValueError, KeyError) as exc:
            raise DeliveryError(
                "cannot encrypt for this subscription: its keys are invalid", retryable=False
            ) from exc

    async def send(self, delivery: Delivery) -> None:
        config = delivery.channel.config
        endpoint = config["endpoint"]
        origin = endpoint_origin(endpoint)
        now = time.time()
        # ~0.15 ms of ECDH and AES: cheaper on the loop than a hop to a worker thread
        body = self.encrypt(config, encode_payload(build_payload(delivery)))
        try:
            authorization = self._signer.authorization(origin, now)
        except VapidException as exc:
            raise DeliveryError(f"cannot sign for push service {origin}", retryable=False) from exc
        headers = {
            **self.headers(delivery, now),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "Authorization": authorization,
        }
        # Error messages name the origin and the exception type only: the endpoint
        # path is a secret, and httpx messages may quote the URL.
        client = self._pools.get(destinations.allows_private())
        try:
            resp = await self._post(client, endpoint, body, headers)
        except httpx.TimeoutException as exc:
            raise DeliveryError(f"push service {origin} timed out") from exc
        except httpx.TransportError as exc:
            raise DeliveryError(
                f"cannot reach push service {origin}: {type(exc).__name__}"
            ) from exc
        except httpx.HTTPError as exc:
            raise DeliveryError(
                f"cannot send to push service {origin}: {type(exc).__name__}", retryable=False
            ) from exc
        self._check(resp, origin, now)
        log.debug("delivery %d pushed to %s: %d", delivery.id, origin, resp.status_code)

    @staticmethod
    async def _post(
        client: httpx.AsyncClient, endpoint: str, body: bytes, headers: dict[str, str]
    ) -> httpx.Response:
        """POST and read at most RESPONSE_CAP bytes of the answer: the status and
        headers decide the outcome, and a push service that streams an endless
        body must not keep the send (or memory) busy."""
        async with client.stream("POST", endpoint, content=body, headers=headers) as resp:
            left = destinations.RESPONSE_CAP
            async for chunk in resp.aiter_raw():
                left -= len(chunk)
                if left < 0:
                    break  # closing the stream drops the connection: no more is read
        return resp

    @staticmethod
    def _check(resp: httpx.Response, origin: str, now: float) -> None:
        status = resp.status_code
        if 200 <= status < 300:
            return
        what = f"push service {origin} answered {status}"
        if status in (404, 410):
            raise DeliveryError(f"{what}: the subscription has expired or was revoked", gone=True)
        if status == 429 or status >= 500:
            raise DeliveryError(
                what, retry_after=retry_after_seconds(resp.headers.get("retry-after"), now)
            )
        hint = {
            400: "the push message was rejected as malformed",
            401: "the VAPID signature was rejected",
            403: "the VAPID key does not match the one the browser subscribed with",
            413: "the push message is too large",
        }.get(status, "unexpected answer")
        raise DeliveryError(f"{what}: {hint}", retryable=False)

    async def aclose(self) -> None:
        await self._pools.aclose()
