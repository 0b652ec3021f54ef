"""The ``apns`` channel: pushes to iOS apps through Apple's Push Notification service.

Token-based authentication over HTTP/2, as Apple documents it: each request
carries a provider token (an ES256 JWT signed with the team's ``.p8`` key,
header ``kid`` = ``apns_key_id``, claims ``iss`` = ``apns_team_id`` and ``iat``)
and goes to ``POST {endpoint}/3/device/{device token}`` on one long-lived HTTP/2
connection. A channel's config is the device token the app got from iOS (see
:meth:`ApnsChannel.validate`); everything else comes from the daemon's settings
(``apns_key_file``, ``apns_key_id``, ``apns_team_id``, ``apns_topic``,
``apns_environment``, ``apns_endpoint``).

What a push says is built by :mod:`.payload`, shared with FCM; this module turns
it into an ``aps`` payload and APNs' headers.
"""

from __future__ import annotations

import logging
import re
import ssl
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import trio
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from notifyd import __version__
from notifyd.core import destinations
from notifyd.core.acl import Principal
from notifyd.core.channels import Channel, Delivery, DeliveryError
from notifyd.core.errors import NotifydError
from notifyd.core.store import HistoryQuery
from notifyd.plugins.httpclients import Pools, retry_after_seconds

from .devices import DeviceError, parse_device, public_device
from .payload import MAX_TTL, MobileMessage, build_message, collapse_id

log = logging.getLogger("notifyd.apns")

#: Apple's servers per ``apns_environment`` (``apns_endpoint`` overrides them)
ENDPOINTS = {
    "production": "https://api.push.apple.com",
    "sandbox": "https://api.sandbox.push.apple.com",
}
#: Apple refuses a provider token older than an hour and answers
#: TooManyProviderTokenUpdates to one renewed more often than every 20 minutes:
#: renew in between.
TOKEN_LIFETIME = 40 * 60
#: the largest payload APNs accepts for an alert
MAX_PAYLOAD = 4096
#: how long a count of the user's unread events may take before the push goes
#: without a badge
BADGE_TIMEOUT = 2.0
#: what APNs says when the device token is dead: the app was removed, the token
#: belongs to another app or environment, or it is not a token at all
GONE_REASONS = frozenset({"BadDeviceToken", "DeviceTokenNotForTopic", "Unregistered",
                          "ExpiredToken"})  # fmt: skip
#: what a new provider token may cure (tried once per attempt)
RENEW_REASONS = frozenset({"ExpiredProviderToken", "InvalidProviderToken"})
_REASON = re.compile(r"[A-Za-z]{1,64}")


def endpoint(config: Any) -> str:
    """Where pushes go: ``apns_endpoint``, else Apple's for ``apns_environment``."""
    url: str = config.apns_endpoint or ENDPOINTS.get(config.apns_environment, "")
    return url.rstrip("/")


def ssl_context() -> ssl.SSLContext:
    """The CA certificates outbound HTTPS trusts: the system's, where OpenSSL's
    ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` apply (tests and private CAs), else
    certifi's bundle when the system has none (a bare container)."""
    ctx = ssl.create_default_context()
    if not ctx.cert_store_stats().get("x509_ca"):
        import certifi

        ctx.load_verify_locations(cafile=certifi.where())
    return ctx


class ProviderToken:
    """The provider token: signed on first use, then reused until it is
    :data:`TOKEN_LIFETIME` old (Apple wants it renewed every 20 to 60 minutes).

    Signing never awaits, so on one trio loop two sends cannot renew at once;
    :meth:`renew` replaces only the token that was refused, so that a burst of
    sends refused with the same stale token makes one new token, not one each.
    """

    def __init__(self, key_file: str, key_id: str, team_id: str) -> None:
        self.key_file = key_file
        self.key_id = key_id
        self.team_id = team_id
        self._key: ECKey | None = None
        self._token = ""
        self._issued = 0.0
        #: how many tokens were signed (for the tests and the log)
        self.signed = 0

    def _load(self) -> ECKey:
        if self._key is None:
            try:
                key = ECKey.import_key(Path(self.key_file).read_bytes())
            except OSError as exc:
                raise DeliveryError(
                    f"cannot read apns_key_file: {exc.strerror or type(exc).__name__}",
                    retryable=False,
                ) from exc
            except (JoseError, ValueError, TypeError) as exc:
                raise DeliveryError(
                    "apns_key_file is not an APNs signing key (a .p8 file with a P-256 key)",
                    retryable=False,
                ) from exc
            if key.curve_name != "P-256" or not key.is_private:
                raise DeliveryError(
                    "apns_key_file is not an APNs signing key (a .p8 file with a P-256 key)",
                    retryable=False,
                )
            self._key = key
        return self._key

    def current(self, now: float) -> str:
        """The token to send now, signing a new one when the last is too old."""
        if not self._token or now - self._issued >= TOKEN_LIFETIME or now < self._issued:
            self._sign(now)
        return self._token

    def renew(self, refused: str, now: float) -> str:
        """A token to try after APNs refused ``refused``: a new one, unless another
        send renewed it meanwhile."""
        if refused == self._token:
            self._sign(now)
        return self._token

    def _sign(self, now: float) -> None:
        key = self._load()
        self._token = jwt.encode(
            {"alg": "ES256", "kid": self.key_id}, {"iss": self.team_id, "iat": int(now)}, key
        )
        self._issued = now
        self.signed += 1
        log.debug("signed APNs provider token #%d", self.signed)


def _shorten(text: str, excess: int) -> str:
    """``text`` at least ``excess`` bytes shorter, ending in "…"."""
    raw = text.encode()
    kept = raw[: max(0, len(raw) - excess - len("…".encode()))].decode(errors="ignore")
    return kept + "…" if kept else ""


def build_payload(msg: MobileMessage, badge: int | None) -> dict[str, Any]:
    """The JSON APNs delivers to the app: ``aps`` for iOS, the rest (the shared
    data fields of :mod:`.payload`, and ``image``) for the app's own code."""
    alert: dict[str, str] = {"title": msg.title}
    if msg.body:
        alert["body"] = msg.body
    aps: dict[str, Any] = {
        "alert": alert,
        "sound": "default",
        "interruption-level": msg.interruption_level,
    }
    if badge is not None:
        aps["badge"] = badge
    if msg.thread:
        aps["thread-id"] = msg.thread
    payload: dict[str, Any] = {"aps": aps, **msg.data}
    if msg.image:
        # a Notification Service Extension downloads and attaches it
        aps["mutable-content"] = 1
        payload["image"] = msg.image
    return payload


def encode_payload(payload: dict[str, Any]) -> bytes:
    """Serialise within :data:`MAX_PAYLOAD`: shorten the body, then drop the
    actions, then shorten the title.

    Raises:
        DeliveryError: (not retryable) when even that does not fit.
    """
    data = orjson.dumps(payload)
    if len(data) <= MAX_PAYLOAD:
        return data
    payload = {**payload, "aps": {**payload["aps"], "alert": dict(payload["aps"]["alert"])}}
    alert = payload["aps"]["alert"]
    # loops, because JSON escapes make the text longer than its UTF-8
    while len(data) > MAX_PAYLOAD and alert.get("body"):
        alert["body"] = _shorten(alert["body"], len(data) - MAX_PAYLOAD)
        data = orjson.dumps(payload)
    if len(data) > MAX_PAYLOAD:
        payload.pop("actions", None)
        data = orjson.dumps(payload)
    while len(data) > MAX_PAYLOAD and alert.get("title"):
        alert["title"] = _shorten(alert["title"], len(data) - MAX_PAYLOAD)
        data = orjson.dumps(payload)
    if len(data) <= MAX_PAYLOAD:
        return data
    raise DeliveryError("the notification does not fit in an APNs payload", retryable=False)


class _HideDeviceTokens(logging.Filter):
    """httpx logs each request's URL at INFO; an APNs URL ends in the device token,
    which lets anyone holding our key push to that phone: log the origin only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                f"{a.scheme}://{a.netloc.decode()}/…" if isinstance(a, httpx.URL) else a
                for a in record.args
            )
        return True


class ApnsChannel(Channel):
    """Delivers to one iOS device (an app's device token) through APNs.

    Headers sent: ``apns-topic`` (``apns_topic``, the app's bundle id),
    ``apns-push-type: alert``, ``apns-priority`` 10 from priority 4 (``high``) up,
    else 5, ``apns-expiration`` (the event's expiry, else four weeks; 0 once it has
    expired: try once, keep nothing), ``apns-collapse-id`` from the event's
    collapse key, else its tag (``event-<id>``: a push sent twice replaces itself; hashed
    when over 64 bytes) and the provider token.

    Payload: ``aps.alert`` {title, body}, ``sound: default``, ``badge`` = the
    user's unread count (as ``GET /v1/inbox/count?unread=true`` answers it; left
    out, so the app's badge stays as it was, when it cannot be counted within
    :data:`BADGE_TIMEOUT`), ``thread-id`` = the topic, ``interruption-level``
    (1–2 passive, 3–4 active, 5 time-sensitive), ``mutable-content: 1`` with the
    ``image`` URL as a custom key, and :mod:`.payload`'s data fields (``id``,
    ``topic``, ``click``, …) as custom keys. Sensitive events: the generic title,
    no body, image, topic or thread; ``click`` leads to the notification center.
    Bodies are shortened to fit :data:`MAX_PAYLOAD`.

    Outcomes: 200 is success; 410 and 400 ``BadDeviceToken`` /
    ``DeviceTokenNotForTopic`` remove the device (``gone``); 403
    ``ExpiredProviderToken`` / ``InvalidProviderToken`` renew the provider token
    and send again once, in the same attempt; 429 and 5xx are retried with
    backoff, honouring ``Retry-After``; network errors and timeouts are retried;
    any other answer is permanent, with Apple's reason in the message.

    One HTTP/2 connection (multiplexed, as Apple asks) serves every send of the
    process and is kept open between bursts. The endpoint is the operator's
    setting, so it may reach what an admin's channels may under
    ``private_destinations``, whoever owns the device.
    """

    kind = "apns"
    concurrency = 32
    timeout = 15.0

    def __init__(self, services: Any) -> None:
        super().__init__(services)
        cfg = services.config
        self.endpoint = endpoint(cfg)
        self.configured = bool(cfg.apns_key_file and self.endpoint)
        self.tokens = ProviderToken(cfg.apns_key_file, cfg.apns_key_id, cfg.apns_team_id)
        self._policy: str = cfg.destination_policy
        self._allow_private = destinations.may_reach_private(self._policy, owner_is_admin=True)
        httpx_log = logging.getLogger("httpx")
        if not any(isinstance(f, _HideDeviceTokens) for f in httpx_log.filters):
            httpx_log.addFilter(_HideDeviceTokens())
        # http1=False: APNs speaks HTTP/2 only, and ALPN then offers h2 alone.
        # trust_env=False: no proxy from the environment (the destination policy
        # must see the real peer); CA certificates come from ssl_context().
        self._pools = Pools(self._new_client)

    @staticmethod
    def _new_client() -> httpx.AsyncClient:
        return httpx.AsyncClient(
            http1=False,
            http2=True,
            verify=ssl_context(),
            trust_env=False,
            follow_redirects=False,
            timeout=httpx.Timeout(10.0, connect=5.0),
            headers={"User-Agent": f"notifyd/{__version__}"},
            # Apple: keep the connection open rather than reconnect per burst
            limits=httpx.Limits(max_connections=4, keepalive_expiry=3600.0),
        )

    @classmethod
    def validate(cls, config: dict[str, Any]) -> dict[str, Any]:
        """``{"token": "<hex device token>", "app": "<bundle id>", "label"?: "…"}``,
        checked as ``/v1/devices`` checks them."""
        try:
            return parse_device("apns", config)
        except DeviceError as exc:
            raise ValueError(str(exc)) from None

    @classmethod
    def public(cls, config: dict[str, Any]) -> dict[str, Any]:
        return public_device(config)

    def headers(self, msg: MobileMessage, now: float) -> dict[str, str]:
        ttl = msg.ttl(now)
        expiration = 0 if ttl == 0 else int(now) + (MAX_TTL if ttl is None else ttl)
        out = {
            "apns-topic": self.services.config.apns_topic,
            "apns-push-type": "alert",
            "apns-priority": "10" if msg.high else "5",
            "apns-expiration": str(expiration),
        }
        if msg.replace_id:  # the collapse key, else event-<id>: a resend replaces itself
            out["apns-collapse-id"] = collapse_id(msg.replace_id)
        return out

    async def unread_count(self, user_id: int) -> int | None:
        """The user's unread count, as their inbox shows it; None when it cannot be
        had quickly (the push then leaves the app's badge as it is)."""
        store = self.services.store
        # the database is the operator's, whoever owns the device: a connection the
        # store opens here must not fall under the owner's destination policy
        with destinations.outbound(True), trio.move_on_after(BADGE_TIMEOUT):
            try:
                user = await store.get_user_by_id(user_id)
                if user is None:
                    return None
                principal: Principal = await self.services.accounts.principal_for(user, "session")
                query = HistoryQuery(
                    user_id=user.id, visibility=principal.visibility(), unread=True
                )
                count: int = await store.count(query)
                return count
            except NotifydError as exc:
                log.warning("no badge: the unread count failed: %s", exc)
                return None
        log.warning("no badge: the unread count took longer than %g s", BADGE_TIMEOUT)
        return None

    async def send(self, delivery: Delivery) -> None:
        if not self.configured:
            raise DeliveryError(
                "APNs is not configured: set apns_key_file, apns_key_id, apns_team_id and "
                "apns_topic", retryable=False,
            )  # fmt: skip
        now = time.time()
        token = self.tokens.current(now)  # first: a bad key fails before any work
        msg = build_message(delivery)
        badge = await self.unread_count(delivery.channel.user_id)
        body = encode_payload(build_payload(msg, badge))
        url = f"{self.endpoint}/3/device/{delivery.channel.config['token']}"
        headers = self.headers(msg, now)
        # The endpoint is a setting, trusted like an admin's channel: this policy
        # replaces the device owner's for the send.
        with destinations.outbound(self._allow_private, self._policy) as rule:
            status, reason, retry_after = await self._post(url, body, headers, token, rule)
            if status == 403 and reason in RENEW_REASONS:
                log.info("APNs answered %s: renewing the provider token", reason)
                token = self.tokens.renew(token, time.time())
                status, reason, retry_after = await self._post(url, body, headers, token, rule)
        self._check(status, reason, retry_after)
        log.debug("delivery %d pushed to APNs", delivery.id)

    async def _post(self, url: str, body: bytes, headers: dict[str, str], token: str,
                    rule: destinations.Outbound) -> tuple[int, str, float | None]:  # fmt: skip
        """One request: the status, Apple's reason and the Retry-After it gave. At
        most RESPONSE_CAP bytes of the answer are read."""
        headers = {**headers, "authorization": f"bearer {token}"}
        where = httpx.URL(self.endpoint).host
        try:
            async with self._pools.get().stream("POST", url, content=body, headers=headers) as resp:
                raw = b""
                async for chunk in resp.aiter_raw():
                    raw += chunk
                    if len(raw) > destinations.RESPONSE_CAP:
                        break  # closing the stream resets it: no more is read
        except httpx.TimeoutException as exc:
            raise DeliveryError(f"APNs at {where} timed out") from exc
        except httpx.TransportError as exc:
            if rule.refused:
                raise DeliveryError(f"refused: {rule.refusal()}", retryable=False) from None
            raise DeliveryError(f"cannot reach APNs at {where}: {type(exc).__name__}") from exc
        except httpx.HTTPError as exc:
            raise DeliveryError(
                f"cannot send to APNs at {where}: {type(exc).__name__}", retryable=False
            ) from exc
        reason = ""
        if resp.status_code != 200:
            try:
                said = orjson.loads(raw).get("reason")
            except (orjson.JSONDecodeError, AttributeError):
                said = None
            reason = said if isinstance(said, str) and _REASON.fullmatch(said) else ""
        return (
            resp.status_code,
            reason,
            retry_after_seconds(resp.headers.get("retry-after"), time.time()),
        )

    @staticmethod
    def _check(status: int, reason: str, retry_after: float | None) -> None:
        if status == 200:
            return
        what = f"APNs answered {status} {reason or '(no reason)'}".rstrip()
        if status == 410 or reason in GONE_REASONS:
            raise DeliveryError(f"{what}: the device token is no longer valid", gone=True)
        if status == 429 or status >= 500:
            raise DeliveryError(what, retry_after=retry_after)
        hint = {
            "ExpiredProviderToken": "even with a new provider token (is this machine's clock right?)",
            "InvalidProviderToken": "check apns_key_file, apns_key_id and apns_team_id",
            "BadTopic": "check apns_topic (the app's bundle id)",
            "TopicDisallowed": "check apns_topic (the app's bundle id)",
            "PayloadTooLarge": "the notification is too large",
        }.get(reason)
        raise DeliveryError(f"{what}: {hint}" if hint else what, retryable=False)

    async def aclose(self) -> None:
        await self._pools.aclose()
