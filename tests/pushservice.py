"""A local Web Push service: the real peer the ``webpush`` channel talks to in tests.

It speaks RFC 8030 over HTTP on 127.0.0.1 (a stdlib server in a thread, so sync
and trio tests can both use it) and checks what a browser vendor's service
would: the VAPID ``Authorization`` header (an ES256 JWT verified here with
``cryptography``, independently of the py-vapid code that signed it, whose key
must be the daemon's and whose ``aud`` must be this service's origin), then
decrypts the aes128gcm body with the subscription's private key, as the browser
would. Each push is recorded with its headers, raw body and decrypted JSON.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import http_ece
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Subscription:
    """One simulated browser: its key pair, auth secret, and how the service
    answers pushes for it (``status``, optional ``retry_after``)."""

    id: str
    endpoint: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes
    status: int = 201
    retry_after: str | None = None

    def info(self) -> dict[str, Any]:
        """The PushSubscription JSON a browser would post."""
        public = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": self.endpoint,
            "expirationTime": None,
            "keys": {"p256dh": b64url(public), "auth": b64url(self.auth)},
        }


@dataclass
class Push:
    """One request the service received."""

    subscription: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    status: int  # what the service answered
    claims: dict[str, Any] | None = None
    payload: dict[str, Any] | None = None
    error: str | None = None  # why it was rejected, if it was


class VapidRejected(Exception):
    pass


class PushService:
    """Start with ``with PushService() as ps:``; ``ps.subscribe()`` makes a browser.

    Set ``vapid_public_key`` (base64url, as ``/v1/webpush/vapid-public-key``
    gives it) before pushes arrive: pushes signed by any other key get 401.
    """

    def __init__(self) -> None:
        self.vapid_public_key: str | None = None
        self.subscriptions: dict[str, Subscription] = {}
        self.pushes: list[Push] = []
        self._lock = threading.Lock()
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real push services

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status, headers = service._handle(self.path, dict(self.headers.items()), body)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: pytest shows failures, not access logs

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )

    @property
    def origin(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> PushService:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def subscribe(self, status: int = 201) -> Subscription:
        sub_id = secrets.token_urlsafe(24)
        sub = Subscription(
            id=sub_id, endpoint=f"{self.origin}/push/{sub_id}",
            private_key=ec.generate_private_key(ec.SECP256R1()), auth=os.urandom(16),
            status=status,
        )  # fmt: skip
        with self._lock:
            self.subscriptions[sub_id] = sub
        return sub

    def received(self, sub: Subscription | None = None) -> list[Push]:
        """Pushes received so far (for ``sub`` only, if given)."""
        with self._lock:
            return [p for p in self.pushes if sub is None or p.subscription == sub.id]

    # -- the service side ------------------------------------------------------

    def _handle(self, path: str, raw_headers: dict[str, str], body: bytes) -> tuple[int, dict]:
        headers = {k.lower(): v for k, v in raw_headers.items()}
        sub_id = path.removeprefix("/push/")
        with self._lock:
            sub = self.subscriptions.get(sub_id) if path.startswith("/push/") else None
        push = Push(sub_id, headers, body, 201)
        answer: dict[str, str] = {}
        try:
            if sub is None:
                push.status, push.error = 404, "no such subscription"
            else:
                push.claims = self._verify_vapid(headers.get("authorization", ""))
                if headers.get("content-encoding") != "aes128gcm":
                    raise ValueError(f"content-encoding {headers.get('content-encoding')!r}")
                plain = http_ece.decrypt(
                    body, private_key=sub.private_key, auth_secret=sub.auth, version="aes128gcm"
                )
                push.payload = json.loads(plain)
                push.status = sub.status
                if sub.retry_after is not None:
                    answer["Retry-After"] = sub.retry_after
                if sub.status == 201:
                    answer["Location"] = f"{self.origin}/message/{secrets.token_hex(8)}"
        except VapidRejected as exc:
            push.status, push.error = 401, f"vapid: {exc}"
        except Exception as exc:  # a real service answers 400 to what it cannot read
            push.status, push.error = 400, f"{type(exc).__name__}: {exc}"
        with self._lock:
            self.pushes.append(push)
        return push.status, answer

    def _verify_vapid(self, header: str) -> dict[str, Any]:
        """Check an RFC 8292 ``vapid t=<jwt>, k=<key>`` header; return the claims."""
        scheme, _, params = header.partition(" ")
        if scheme.lower() != "vapid":
            raise VapidRejected(f"scheme {scheme!r}")
        parts = dict(p.strip().split("=", 1) for p in params.split(",") if "=" in p)
        token, key = parts.get("t", ""), parts.get("k", "")
        if self.vapid_public_key is None or key != self.vapid_public_key:
            raise VapidRejected("signed with an unexpected key")
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(key))
        head_b64, claims_b64, sig_b64 = token.split(".")
        if json.loads(b64url_decode(head_b64)) != {"typ": "JWT", "alg": "ES256"}:
            raise VapidRejected("JWT header is not ES256")
        sig = b64url_decode(sig_b64)
        if len(sig) != 64:
            raise VapidRejected("ES256 signatures are 64 bytes")
        der = encode_dss_signature(int.from_bytes(sig[:32]), int.from_bytes(sig[32:]))
        try:
            public.verify(der, f"{head_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise VapidRejected("bad signature") from None
        claims = json.loads(b64url_decode(claims_b64))
        now = time.time()
        if claims.get("aud") != self.origin:
            raise VapidRejected(f"aud {claims.get('aud')!r} is not {self.origin}")
        if not now < claims.get("exp", 0) <= now + 24 * 3600:
            raise VapidRejected("exp is not within the next 24 hours")
        if not str(claims.get("sub", "")).startswith(("mailto:", "https://")):
            raise VapidRejected("sub is not a mailto: or https: URL")
        return claims
