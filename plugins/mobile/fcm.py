"""The ``fcm`` channel: pushes to app installs through Firebase Cloud Messaging (HTTP v1).

A channel of kind ``fcm`` is a registered device (see :mod:`.devices`): its
config holds the app's registration ``token``, the ``app`` and a ``label``.

Sending takes an OAuth2 access token for the Firebase service account named by
``fcm_service_account_file``: a JWT assertion signed with the account's private
key (google-auth's signer and JWT helpers) is exchanged at the key file's
``token_uri`` (RFC 7523), with httpx on the trio loop rather than google-auth's
blocking transport. The token is cached until shortly before it expires, and
refreshed by one send at a time while the others wait for its result. Then
``POST {fcm_endpoint}/v1/projects/{project_id}/messages:send``.

``fcm_endpoint`` and ``token_uri`` are the operator's (from the configuration
and the key file), so they are trusted like an admin's channel by the
destination policy: a loopback endpoint (tests, a relay) is allowed whoever owns
the device. A user chooses only the token, which is sent in the body.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx
import trio
from google.auth import crypt
from google.auth import jwt as google_jwt

from notifyd.core import destinations
from notifyd.core.channels import Channel, Delivery, DeliveryError
from notifyd.plugins.httpclients import Pools, retry_after_seconds

from .devices import DeviceError, mask_token, parse_device, public_device
from .payload import MobileMessage, build_message, collapse_id

log = logging.getLogger("notifyd.fcm")

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: how long the signed assertion is valid (Google accepts at most an hour)
ASSERTION_LIFETIME = 3600
#: refresh the access token this long before it expires (less for short-lived ones)
REFRESH_MARGIN = 300.0
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"


def fcm_message(token: str, m: MobileMessage, now: float) -> dict[str, Any]:
    """The HTTP v1 request body for one device.

    ``android.priority`` is ``high`` for event priority ≥ 4, else ``normal``;
    ``android.ttl`` (and APNs' ``apns-expiration``) follow the event's expiry;
    the collapse key becomes ``android.collapse_key``,
    ``android.notification.tag`` and ``apns-collapse-id``; ``apns-priority`` is
    10 or 5 and ``aps.interruption-level`` follows the priority (urgent:
    ``time-sensitive``) for iOS devices reached through FCM.
    """
    notification: dict[str, str] = {"title": m.title}
    if m.body:
        notification["body"] = m.body
    if m.image:
        notification["image"] = m.image
    android: dict[str, Any] = {"priority": "high" if m.high else "normal"}
    headers = {"apns-priority": "10" if m.high else "5", "apns-push-type": "alert"}
    aps: dict[str, Any] = {"interruption-level": m.interruption_level}
    ttl = m.ttl(now)
    if ttl is not None:
        android["ttl"] = f"{ttl}s"
        headers["apns-expiration"] = str(int(now) + ttl) if ttl else "0"
    if m.collapse_key:  # held for an offline device: only the newest of a key
        android["collapse_key"] = m.collapse_key
    if m.replace_id:  # shown: a newer push of the key, or the same one again, replaces it
        android["notification"] = {"tag": m.replace_id}
        headers["apns-collapse-id"] = collapse_id(m.replace_id)
    if m.thread:
        aps["thread-id"] = m.thread
    if m.image:
        aps["mutable-content"] = 1
    return {
        "message": {
            "token": token,
            "notification": notification,
            "data": dict(m.data),
            "android": android,
            "apns": {"headers": headers, "payload": {"aps": aps}},
        }
    }


@dataclass
class Answer:
    """An HTTP answer, its body read up to RESPONSE_CAP bytes."""

    status_code: int
    headers: httpx.Headers
    body: bytes


async def post_capped(client: httpx.AsyncClient, url: str, **kw: Any) -> Answer:
    """POST and read at most RESPONSE_CAP bytes of the answer (the rest is
    dropped with the connection): a peer that streams an endless body must not
    keep a send, or memory, busy."""
    async with client.stream("POST", url, **kw) as resp:
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.aiter_bytes():
            size += len(chunk)
            if size > destinations.RESPONSE_CAP:
                break
            chunks.append(chunk)
    return Answer(resp.status_code, resp.headers, b"".join(chunks))


class ServiceAccount:
    """The Firebase service account's key file, and the access tokens it earns."""

    def __init__(self, info: dict[str, Any]) -> None:
        missing = [k for k in ("client_email", "token_uri", "private_key", "project_id")
                   if not isinstance(info.get(k), str) or not info.get(k)]  # fmt: skip
        if missing:
            raise ValueError(f"the key file lacks {', '.join(missing)}")
        self.project_id: str = info["project_id"]
        self.client_email: str = info["client_email"]
        self.token_uri: str = info["token_uri"]
        self.signer = crypt.RSASigner.from_service_account_info(info)
        self._token: str | None = None
        self._refresh_at = 0.0
        self._lock = trio.Lock()
        #: access tokens fetched so far (for logs and tests)
        self.fetched = 0

    @classmethod
    def load(cls, path: str) -> ServiceAccount:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
        if not isinstance(info, dict):
            raise ValueError("the key file is not a JSON object")
        return cls(info)

    def assertion(self, now: float) -> str:
        claims = {"iss": self.client_email, "scope": SCOPE, "aud": self.token_uri,
                  "iat": int(now), "exp": int(now) + ASSERTION_LIFETIME}  # fmt: skip
        return google_jwt.encode(self.signer, claims).decode()

    async def access_token(self, client: httpx.AsyncClient, stale: str | None = None) -> str:
        """A valid access token; ``stale`` is one the server refused (401): a new
        one is fetched unless another send already replaced it."""
        async with self._lock:  # one refresh in flight; the others wait for it
            now = time.time()
            if self._token is not None and self._token != stale and now < self._refresh_at:
                return self._token
            token, lifetime = await self._fetch(client, now)
            self._token = token
            self._refresh_at = now + max(lifetime - REFRESH_MARGIN, lifetime * 0.75)
            self.fetched += 1
            return token

    async def _fetch(self, client: httpx.AsyncClient, now: float) -> tuple[str, float]:
        form = {"grant_type": GRANT_TYPE, "assertion": self.assertion(now)}
        try:
            resp = await client.post(self.token_uri, data=form)
        except httpx.TimeoutException as exc:
            raise DeliveryError("the FCM token endpoint timed out") from exc
        except httpx.HTTPError as exc:
            raise DeliveryError(
                f"cannot reach the FCM token endpoint: {type(exc).__name__}"
            ) from exc
        try:
            answer = resp.json() if len(resp.content) <= destinations.RESPONSE_CAP else {}
        except ValueError:
            answer = {}
        if not isinstance(answer, dict):
            answer = {}
        if resp.status_code == 429 or resp.status_code >= 500:
            raise DeliveryError(
                f"the FCM token endpoint answered {resp.status_code}",
                retry_after=retry_after_seconds(resp.headers.get("retry-after"), now),
            )
        token, lifetime = answer.get("access_token"), answer.get("expires_in", 3600)
        if resp.status_code != 200 or not isinstance(token, str) or not token:
            error = answer.get("error")
            code = error if isinstance(error, str) else "no token"
            raise DeliveryError(
                f"the FCM token endpoint refused the service account "
                f"({resp.status_code}, {code[:80]}): check fcm_service_account_file",
                retryable=False,
            )
        if not isinstance(lifetime, (int, float)) or lifetime <= 0:
            lifetime = 3600
        return token, float(lifetime)


def _error_details(resp: Answer) -> tuple[str, str, list[dict[str, Any]]]:
    """(status, message, details) of a Google API error answer; blanks if unreadable."""
    try:
        err = json.loads(resp.body).get("error")
    except (ValueError, AttributeError):
        return "", "", []
    if not isinstance(err, dict):
        return "", "", []
    details = [d for d in err.get("details") or [] if isinstance(d, dict)]
    return str(err.get("status") or ""), str(err.get("message") or ""), details


def outcome(resp: Answer, now: float) -> DeliveryError | None:
    """What an FCM answer means for the delivery: None for success, else the
    :class:`DeliveryError` to raise (``gone`` removes the device)."""
    status = resp.status_code
    if 200 <= status < 300:
        return None
    grpc_status, message, details = _error_details(resp)
    codes = {str(d.get("errorCode")) for d in details if d.get("@type") == FCM_ERROR_TYPE}
    fields = {
        str(v.get("field"))
        for d in details if d.get("@type") == BAD_REQUEST_TYPE
        for v in d.get("fieldViolations") or [] if isinstance(v, dict)
    }  # fmt: skip
    what = f"FCM answered {status} {grpc_status or ''}".rstrip()
    if "UNREGISTERED" in codes or status == 404:
        return DeliveryError(f"{what}: the app was uninstalled or the token expired", gone=True)
    if status == 400 and ("message.token" in fields or "registration token" in message.lower()):
        return DeliveryError(f"{what}: not a valid registration token", gone=True)
    if status == 429 or status >= 500:
        return DeliveryError(
            what, retry_after=retry_after_seconds(resp.headers.get("retry-after"), now)
        )
    hint = {
        400: "the message was refused as invalid",
        401: "the access token was refused again after a refresh",
        403: "the service account may not send for this project, or the token "
        "belongs to another sender (SENDER_ID_MISMATCH)",
    }.get(status, "unexpected answer")
    return DeliveryError(f"{what}: {hint}", retryable=False)


class FcmChannel(Channel):
    """Delivers to one app install through FCM's HTTP v1 API.

    Outcomes: 2xx is success; ``UNREGISTERED``, 404, and ``INVALID_ARGUMENT``
    about the token remove the device (``gone``); 429 and 5xx are retried,
    honouring ``Retry-After``; a 401 makes the access token be fetched again and
    the message sent once more in the same attempt; any other answer is
    permanent. Network errors and timeouts are retried.
    """

    kind = "fcm"
    concurrency = 32
    timeout = 20.0

    def __init__(self, services: Any) -> None:
        super().__init__(services)
        cfg = services.config
        self._key_file: str = cfg.fcm_service_account_file
        self._endpoint: str = cfg.fcm_endpoint.rstrip("/")
        self._policy: str = cfg.destination_policy
        self._account: ServiceAccount | None = None
        self._pools = Pools.standard(10.0, self.concurrency * 2)

    @classmethod
    def validate(cls, config: dict[str, Any]) -> dict[str, Any]:
        try:
            return parse_device("fcm", config)
        except DeviceError as exc:
            raise ValueError(str(exc)) from None

    @classmethod
    def public(cls, config: dict[str, Any]) -> dict[str, Any]:
        return public_device(config)

    async def account(self) -> ServiceAccount:
        """The service account, read from its file on first use (the API process,
        which never sends, does not need it)."""
        if self._account is None:
            if not self._key_file:
                raise DeliveryError(
                    "FCM is not configured (fcm_service_account_file)", retryable=False
                )
            try:
                self._account = await trio.to_thread.run_sync(ServiceAccount.load, self._key_file)
            except (OSError, ValueError) as exc:
                # the message names the problem, never the key's content
                reason = exc.strerror if isinstance(exc, OSError) else str(exc)[:120]
                raise DeliveryError(
                    f"cannot use fcm_service_account_file: {reason}", retryable=False
                ) from None
        return self._account

    async def send(self, delivery: Delivery) -> None:
        account = await self.account()
        token = delivery.channel.config["token"]
        now = time.time()
        body = fcm_message(token, build_message(delivery), now)
        url = f"{self._endpoint}/v1/projects/{account.project_id}/messages:send"
        # the endpoint and token_uri are the operator's: trusted like an admin's channel
        with destinations.outbound(True, self._policy):
            access = await account.access_token(self._pools.get())
            resp = await self._post(url, body, access)
            if resp.status_code == 401:  # expired or revoked early: once more, fresh
                log.info("FCM refused the access token; fetching a new one")
                access = await account.access_token(self._pools.get(), stale=access)
                resp = await self._post(url, body, access)
        error = outcome(resp, now)
        if error is not None:
            raise error
        log.debug("delivery %d sent to FCM device %s", delivery.id, mask_token(token))

    async def _post(self, url: str, body: dict[str, Any], access: str) -> Answer:
        """POST the message; error messages name the exception type only."""
        data = json.dumps(body, separators=(",", ":")).encode()
        headers = {"Authorization": f"Bearer {access}", "Content-Type": "application/json"}
        try:
            return await post_capped(self._pools.get(), url, content=data, headers=headers)
        except httpx.TimeoutException as exc:
            raise DeliveryError("FCM timed out") from exc
        except httpx.TransportError as exc:
            raise DeliveryError(f"cannot reach FCM: {type(exc).__name__}") from exc
        except httpx.HTTPError as exc:
            raise DeliveryError(
                f"cannot send to FCM: {type(exc).__name__}", retryable=False
            ) from exc

    async def aclose(self) -> None:
        await self._pools.aclose()
