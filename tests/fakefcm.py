"""A local Firebase Cloud Messaging: the real peer the ``fcm`` channel talks to in tests.

A stdlib HTTP server on 127.0.0.1 in a thread (like tests/pushservice.py) with the
two endpoints FCM's HTTP v1 API needs:

- ``POST /token``: Google's OAuth2 token endpoint for service accounts (RFC 7523).
  It verifies the JWT assertion itself, with ``cryptography`` and the service
  account's *public* key (independently of google-auth, which signed it): RS256,
  ``iss`` the account's email, ``aud`` this endpoint, the messaging scope, a
  lifetime of at most an hour. It answers a fresh access token.
- ``POST /v1/projects/<project>/messages:send``: checks the bearer token (issued
  here, not expired), the project in the URL and the shape of the message (a
  token, a notification with a title, string-only data, android priority and ttl
  in FCM's forms), records it and answers ``{"name": …}``, or what the test asked
  for with :meth:`FakeFcm.fail_next` / :meth:`FakeFcm.unregister`.

:func:`service_account` writes a key file with a new RSA key pair for the fake.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
_SEND = re.compile(r"/v1/projects/([^/]+)/messages:send")
_TTL = re.compile(r"\d+(\.\d{1,9})?s")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Sent:
    """One send request: what it carried and what the fake answered."""

    project: str
    body: dict[str, Any]
    access_token: str
    status: int
    at: float  # time.monotonic() when it arrived
    error: str | None = None

    @property
    def message(self) -> dict[str, Any]:
        return self.body.get("message") or {}


@dataclass
class Failure:
    status: int
    grpc_status: str
    error_code: str | None = None
    retry_after: str | None = None
    field_violation: str | None = None
    message: str = "refused by the test"


@dataclass
class Account:
    """A service account: its key file's content and the public half of its key."""

    info: dict[str, Any]
    public_key: rsa.RSAPublicKey
    path: Path = field(default_factory=Path)


class FakeFcm:
    """Start with ``with FakeFcm() as fcm:``; ``fcm.account(path)`` writes a key file."""

    def __init__(self, project: str = "notifyd-test", token_lifetime: int = 3600) -> None:
        self.project = project
        self.token_lifetime = token_lifetime
        self.accounts: dict[str, Account] = {}  # by client_email
        self.sent: list[Sent] = []
        self.token_requests: list[dict[str, Any]] = []  # verified assertion claims
        self.token_errors: list[str] = []
        self._tokens: dict[str, float] = {}  # access token -> expiry (time.time())
        self._failures: list[Failure] = []
        #: device token -> (answer, how many more times; None = always)
        self._unregistered: dict[str, tuple[Failure, int | None]] = {}
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                if self.path == "/token":
                    status, answer, extra = fake._token(headers, body)
                else:
                    status, answer, extra = fake._send(self.path, headers, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )

    @property
    def origin(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeFcm:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    # -- the test's side -------------------------------------------------------

    def account(self, path: Path) -> Account:
        """Write a service-account key file (new RSA key) at ``path``; the fake
        trusts its public key."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        email = f"notifyd-{secrets.token_hex(3)}@{self.project}.iam.gserviceaccount.com"
        info = {
            "type": "service_account", "project_id": self.project,
            "private_key_id": secrets.token_hex(20), "private_key": pem,
            "client_email": email, "client_id": str(secrets.randbelow(10**20)),
            "token_uri": f"{self.origin}/token",
        }  # fmt: skip
        path.write_text(json.dumps(info))
        acct = Account(info, key.public_key(), path)
        with self._lock:
            self.accounts[email] = acct
        return acct

    def fail_next(self, status: int, grpc_status: str, count: int = 1, **kw: Any) -> None:
        """Answer the next ``count`` sends with this error (``error_code`` for FCM's
        ``FcmError`` detail, ``retry_after``, ``field_violation``)."""
        with self._lock:
            self._failures.extend(Failure(status, grpc_status, **kw) for _ in range(count))

    def unregister(self, device_token: str, failure: Failure, times: int | None = None) -> None:
        """Sends to ``device_token`` get ``failure`` from now on (the next ``times`` only)."""
        with self._lock:
            self._unregistered[device_token] = (failure, times)

    def recover(self, device_token: str) -> None:
        """Sends to ``device_token`` succeed again."""
        with self._lock:
            self._unregistered.pop(device_token, None)

    def expire_tokens(self) -> None:
        """Every access token issued so far is refused from now on (401)."""
        with self._lock:
            self._tokens = dict.fromkeys(self._tokens, 0.0)

    def received(self, device_token: str | None = None, ok: bool = True) -> list[Sent]:
        """Sends recorded so far (to ``device_token`` only; only successful ones)."""
        with self._lock:
            return [
                s for s in self.sent
                if (device_token is None or s.message.get("token") == device_token)
                and (not ok or s.status == 200)
            ]  # fmt: skip

    # -- the token endpoint ----------------------------------------------------

    def _token(self, headers: dict[str, str], body: bytes) -> tuple[int, dict, dict]:
        try:
            form = {k: v[0] for k, v in parse_qs(body.decode(), strict_parsing=True).items()}
            if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
                raise ValueError(f"grant_type {form.get('grant_type')!r}")
            claims = self._verify_assertion(form.get("assertion", ""))
        except Exception as exc:  # noqa: BLE001 - any flaw is an invalid_grant
            with self._lock:
                self.token_errors.append(f"{type(exc).__name__}: {exc}")
            return 400, {"error": "invalid_grant", "error_description": str(exc)}, {}
        token = "ya29." + secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = time.time() + self.token_lifetime
            self.token_requests.append(claims)
        answer = {"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer"}
        return 200, answer, {}

    def _verify_assertion(self, assertion: str) -> dict[str, Any]:
        head_b64, claims_b64, sig_b64 = assertion.split(".")
        head = json.loads(b64url_decode(head_b64))
        claims = json.loads(b64url_decode(claims_b64))
        if head.get("alg") != "RS256":
            raise ValueError(f"alg {head.get('alg')!r}")
        with self._lock:
            acct = self.accounts.get(claims.get("iss", ""))
        if acct is None:
            raise ValueError("unknown service account")
        if head.get("kid") not in (None, acct.info["private_key_id"]):
            raise ValueError("kid is not the account's key id")
        try:
            acct.public_key.verify(
                b64url_decode(sig_b64), f"{head_b64}.{claims_b64}".encode(),
                padding.PKCS1v15(), hashes.SHA256(),
            )  # fmt: skip
        except InvalidSignature:
            raise ValueError("bad signature") from None
        now = time.time()
        if claims.get("aud") != acct.info["token_uri"]:
            raise ValueError(f"aud {claims.get('aud')!r}")
        if SCOPE not in str(claims.get("scope", "")).split():
            raise ValueError(f"scope {claims.get('scope')!r}")
        iat, exp = claims.get("iat", 0), claims.get("exp", 0)
        if not (iat - 60 <= now < exp and exp - iat <= 3600):
            raise ValueError("the assertion is expired or valid for more than an hour")
        return dict(claims)

    # -- the send endpoint -----------------------------------------------------

    def _send(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict, dict]:
        at = time.monotonic()
        bearer = headers.get("authorization", "").removeprefix("Bearer ")
        match = _SEND.fullmatch(path)
        try:
            doc = json.loads(body)
        except ValueError:
            doc = {}
        sent = Sent(match.group(1) if match else "", doc, bearer, 200, at)
        answer: dict[str, Any]
        extra: dict[str, str] = {}
        with self._lock:
            expiry = self._tokens.get(bearer)
            device = (doc.get("message") or {}).get("token") if isinstance(doc, dict) else None
            gone, times = self._unregistered.get(device or "", (None, None))
            if gone is not None and times is not None:
                if times <= 1:
                    del self._unregistered[device or ""]
                else:
                    self._unregistered[device or ""] = (gone, times - 1)
            failure = None
            if match and expiry is not None and expiry > time.time() and gone is None:
                failure = self._failures.pop(0) if self._failures else None
        problem = None
        if match is None:
            sent.status, problem = 404, "no such method"
        elif expiry is None or expiry <= time.time():
            sent.status, problem = 401, "access token missing, unknown or expired"
            failure = Failure(401, "UNAUTHENTICATED", message="Request had invalid authentication")
        elif sent.project != self.project:
            sent.status, problem = 403, f"project {sent.project!r}"
            failure = Failure(403, "PERMISSION_DENIED", message="wrong project")
        else:
            problem = self._shape_problem(doc)
            if problem:
                failure = Failure(400, "INVALID_ARGUMENT", message=problem)
            elif gone is not None:
                failure = gone
        if failure is not None:
            sent.status = failure.status
            details: list[dict[str, Any]] = []
            if failure.error_code:
                details.append({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                                "errorCode": failure.error_code})  # fmt: skip
            if failure.field_violation:
                details.append({"@type": "type.googleapis.com/google.rpc.BadRequest",
                                "fieldViolations": [{"field": failure.field_violation,
                                                     "description": failure.message}]})  # fmt: skip
            answer = {"error": {"code": failure.status, "message": failure.message,
                                "status": failure.grpc_status, "details": details}}  # fmt: skip
            if failure.retry_after is not None:
                extra["Retry-After"] = failure.retry_after
        else:
            answer = {"name": f"projects/{self.project}/messages/0:{secrets.randbelow(10**16)}"}
        sent.error = problem
        with self._lock:
            self.sent.append(sent)
        return sent.status, answer, extra

    @staticmethod
    def _shape_problem(doc: Any) -> str | None:
        """Why FCM would refuse this body as INVALID_ARGUMENT, or None."""
        msg = doc.get("message") if isinstance(doc, dict) else None
        if not isinstance(msg, dict) or set(doc) != {"message"}:
            return "the body is not {message: …}"
        if not isinstance(msg.get("token"), str) or not msg["token"]:
            return "message.token is required"
        known = {"token", "notification", "data", "android", "apns", "webpush", "fcm_options"}
        if set(msg) - known:
            return f"unknown fields {sorted(set(msg) - known)}"
        note = msg.get("notification")
        if not isinstance(note, dict) or not isinstance(note.get("title"), str):
            return "message.notification.title is required here"
        if set(note) - {"title", "body", "image"}:
            return "unknown notification fields"
        data = msg.get("data", {})
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            return "message.data values must be strings"
        android = msg.get("android", {})
        if android.get("priority", "normal") not in ("normal", "high"):
            return f"android.priority {android.get('priority')!r}"
        if "ttl" in android and not _TTL.fullmatch(str(android["ttl"])):
            return f"android.ttl {android['ttl']!r}"
        apns = msg.get("apns", {})
        if not all(isinstance(v, str) for v in (apns.get("headers") or {}).values()):
            return "apns.headers values must be strings"
        if len(json.dumps(doc).encode()) > 4096 + 1024:  # FCM: 4 KiB of payload
            return "message too big"
        return None
