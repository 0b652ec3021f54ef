"""A browser's PushSubscription: checking it, and what of it may be shown.

The endpoint URL is a capability (anyone holding it, with our VAPID key, can wake
that device), so it is never echoed, logged or listed; only its origin is.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec

from notifyd.core import destinations

from .vapid import b64url

MAX_ENDPOINT = 2048
MAX_USER_AGENT = 512
_B64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")


class SubscriptionError(ValueError):
    """A PushSubscription field is missing or malformed; ``field`` names it
    (``endpoint``, ``keys.p256dh``, …)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def _b64decode(value: Any, field: str) -> bytes:
    try:
        if isinstance(value, str) and _B64URL.fullmatch(value):
            return base64.urlsafe_b64decode(value.rstrip("=") + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        pass
    raise SubscriptionError(field, "must be a base64url string")


def endpoint_origin(endpoint: str) -> str:
    """``https://push.example/abc…`` → ``https://push.example``: what may be shown."""
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc}"


def parse_subscription(data: Any, user_agent: str | None = None) -> dict[str, Any]:
    """Check a browser PushSubscription (``PushSubscription.toJSON()``) and return
    the channel config ``{"endpoint", "keys": {"p256dh", "auth"}, "user_agent"}``.

    Raises:
        SubscriptionError: naming the first bad field. Messages never echo the
            endpoint or the keys.
    """
    if not isinstance(data, dict):
        raise SubscriptionError("body", "expected a PushSubscription object")
    endpoint = data.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint:
        raise SubscriptionError("endpoint", "required: the subscription's endpoint URL")
    if len(endpoint) > MAX_ENDPOINT:
        raise SubscriptionError("endpoint", f"longer than {MAX_ENDPOINT} characters")
    try:
        parts = urlsplit(endpoint)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        raise SubscriptionError("endpoint", "not a valid URL") from None
    if parts.scheme not in ("https", "http") or not parts.hostname or not port_ok:
        raise SubscriptionError("endpoint", "must be an http(s) URL with a host")
    if "@" in parts.netloc or any(c.isspace() for c in endpoint):
        raise SubscriptionError("endpoint", "must not contain credentials or spaces")
    keys = data.get("keys")
    if not isinstance(keys, dict):
        raise SubscriptionError("keys", "required: an object with p256dh and auth")
    p256dh = _b64decode(keys.get("p256dh"), "keys.p256dh")
    if len(p256dh) != 65 or p256dh[0] != 4:
        raise SubscriptionError("keys.p256dh", "must be an uncompressed P-256 point (65 bytes)")
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), p256dh)
    except ValueError:
        raise SubscriptionError("keys.p256dh", "is not a point on the P-256 curve") from None
    auth = _b64decode(keys.get("auth"), "keys.auth")
    if len(auth) != 16:
        raise SubscriptionError("keys.auth", "must decode to 16 bytes")
    ua = user_agent if user_agent is not None else data.get("user_agent")
    if ua is not None and not isinstance(ua, str):
        raise SubscriptionError("user_agent", "must be a string")
    return {
        "endpoint": endpoint,
        "keys": {"p256dh": b64url(p256dh), "auth": b64url(auth)},
        "user_agent": (ua or "")[:MAX_USER_AGENT],
    }


def is_private_endpoint(endpoint: str) -> bool:
    """True for endpoints on this machine or a private network, in any spelling
    of the address (``127.1``, ``0x7f000001``, ``[::ffff:127.0.0.1]``, …) and for
    local names (``localhost``, ``*.local``, …). Names are not resolved here; the
    daemon's checks do that (``notifyd.core.destinations``)."""
    verdict = destinations.classify_literal(endpoint)
    return verdict is not None and verdict.private
