"""A local APNs: the real peer the ``apns`` channel talks to in tests.

It is a real HTTP/2 server over TLS on 127.0.0.1 (hypercorn serving a small ASGI
app, on an asyncio loop in a thread, so that sync and trio tests can both use
it), with a certificate authority and a server certificate made for each run
(:class:`TestCA`; the daemon trusts the CA through ``SSL_CERT_FILE``). Like Apple's
servers it refuses what is not HTTP/2 and checks each request before answering:

- the provider token (``authorization: bearer <JWT>``), verified here with
  ``cryptography`` and the public half of the ``.p8`` key the test made,
  independently of the joserfc code that signed it: ES256, ``kid``, ``iss``, and an
  ``iat`` no older than an hour and not in the future;
- the headers (``apns-topic``, ``apns-push-type``, ``apns-priority``,
  ``apns-collapse-id`` ≤ 64 bytes, ``apns-expiration``), the device token's shape,
  and a JSON payload of at most 4096 bytes with an ``aps`` dictionary.

A refusal is answered the way Apple does (status and ``{"reason": …}``). Every
request is recorded (:class:`Push`) with the TCP connection it came on, so that a
test can see connections being reused. A test can script the next answers for a
device (:meth:`FakeApns.script`: 410 Unregistered, 400 BadDeviceToken, 429/503
with ``Retry-After``, …) and make every provider token seen so far expire
(:meth:`FakeApns.expire_tokens`: 403 ExpiredProviderToken until a new one comes).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID
from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig

DEVICE_TOKEN = re.compile(r"[0-9a-f]{64}")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def write_p8(path: Path) -> ec.EllipticCurvePrivateKey:
    """Make an APNs signing key as Apple hands it out (PKCS#8 PEM, P-256) at
    ``path``; return it."""
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return key


class TestCA:
    """A certificate authority made for one run, and a server certificate for
    127.0.0.1 and localhost that it signed, written to ``directory`` as
    ``ca.pem`` (what clients trust), ``server.pem`` and ``server-key.pem``."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "notifyd test CA")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )  # fmt: skip
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        self.ca_file = directory / "ca.pem"
        self.cert_file = directory / "server.pem"
        self.key_file = directory / "server-key.pem"
        self.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


@dataclass
class Push:
    """One request APNs received, and what it answered."""

    device: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    http_version: str
    connection: tuple[str, int]  # the client's address: one per TCP connection
    at: float  # time.monotonic() on arrival
    status: int = 200
    reason: str = ""
    token: str = ""
    claims: dict[str, Any] | None = None
    payload: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class Answer:
    status: int
    reason: str
    retry_after: str | None = None


@dataclass
class FakeApns:
    """``with FakeApns(directory, key, key_id=…, team_id=…, topic=…) as apns:``;
    ``apns.origin`` is the ``apns_endpoint`` to configure, ``apns.ca.ca_file`` the
    ``SSL_CERT_FILE``."""

    directory: Path
    signing_key: ec.EllipticCurvePrivateKey
    key_id: str
    team_id: str
    topic: str
    pushes: list[Push] = field(default_factory=list)
    _scripts: dict[str, list[Answer]] = field(default_factory=dict)
    _expired: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.ca = TestCA(self.directory)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._failed: BaseException | None = None

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    # -- the test's side -------------------------------------------------------

    def __enter__(self) -> FakeApns:
        self._thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._failed is not None:
                raise RuntimeError("the fake APNs did not start") from self._failed
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("the fake APNs did not start listening")

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def script(self, device: str, *answers: tuple[int, str] | tuple[int, str, str]) -> None:
        """Answer the next requests for ``device`` so, in order: (status, reason[,
        Retry-After]); after them, 200 again."""
        with self._lock:
            self._scripts.setdefault(device, []).extend(Answer(*a) for a in answers)

    def expire_tokens(self) -> None:
        """Every provider token seen so far gets 403 ExpiredProviderToken from now on."""
        with self._lock:
            self._expired.update(p.token for p in self.pushes if p.token and p.ok)

    def received(self, device: str | None = None) -> list[Push]:
        with self._lock:
            return [p for p in self.pushes if device is None or p.device == device]

    def delivered(self, device: str | None = None) -> list[Push]:
        return [p for p in self.received(device) if p.ok]

    def connections(self) -> set[tuple[str, int]]:
        with self._lock:
            return {p.connection for p in self.pushes}

    # -- the server side -------------------------------------------------------

    def _run(self) -> None:
        config = HypercornConfig()
        config.bind = [f"127.0.0.1:{self.port}"]
        config.certfile = str(self.ca.cert_file)
        config.keyfile = str(self.ca.key_file)
        config.alpn_protocols = ["h2"]  # APNs speaks HTTP/2 only
        config.accesslog = None
        config.errorlog = None
        config.keep_alive_timeout = 3600  # APNs keeps idle connections open

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await serve(self._app, config, shutdown_trigger=self._stop.wait)  # type: ignore[arg-type]

        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - reported to __enter__
            self._failed = exc

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        push = Push(
            device=scope["path"].removeprefix("/3/device/"), headers=headers, body=body,
            http_version=scope["http_version"], connection=tuple(scope["client"]),
            at=time.monotonic(),
        )  # fmt: skip
        answer = self._handle(scope, push)
        out = [(b"apns-id", b"00000000-0000-0000-0000-000000000000")]
        content = b""
        if answer.status != 200:
            content = json.dumps({"reason": answer.reason}).encode()
            out.append((b"content-type", b"application/json"))
        if answer.retry_after is not None:
            out.append((b"retry-after", answer.retry_after.encode()))
        await send({"type": "http.response.start", "status": answer.status, "headers": out})
        await send({"type": "http.response.body", "body": content})

    def _handle(self, scope: dict[str, Any], push: Push) -> Answer:
        try:
            self._check(scope, push)
            with self._lock:
                queued = self._scripts.get(push.device)
                answer = queued.pop(0) if queued else Answer(200, "")
        except Refused as exc:
            answer = Answer(exc.status, exc.reason)
        push.status, push.reason = answer.status, answer.reason
        with self._lock:
            self.pushes.append(push)
        return answer

    def _check(self, scope: dict[str, Any], push: Push) -> None:
        h = push.headers
        if push.http_version != "2":
            raise Refused(400, "NotHTTP2")  # Apple's servers do not even speak 1.1
        if scope["method"] != "POST":
            raise Refused(405, "MethodNotAllowed")
        if not scope["path"].startswith("/3/device/"):
            raise Refused(404, "BadPath")
        push.claims = self._verify_token(h.get("authorization", ""), push)
        if not h.get("apns-topic"):
            raise Refused(400, "MissingTopic")
        if h["apns-topic"] != self.topic:
            raise Refused(400, "DeviceTokenNotForTopic")
        if h.get("apns-push-type") != "alert":
            raise Refused(400, "InvalidPushType")
        if h.get("apns-priority") not in ("5", "10"):
            raise Refused(400, "BadPriority")
        if "apns-collapse-id" in h and len(h["apns-collapse-id"].encode()) > 64:
            raise Refused(400, "BadCollapseId")
        if not h.get("apns-expiration", "").isdigit():
            raise Refused(400, "BadExpirationDate")
        if not DEVICE_TOKEN.fullmatch(push.device):
            raise Refused(400, "BadDeviceToken")
        if len(push.body) > 4096:
            raise Refused(413, "PayloadTooLarge")
        try:
            payload = json.loads(push.body)
        except ValueError:
            raise Refused(400, "BadPayload") from None  # not Apple's word: it says little
        if not isinstance(payload, dict) or not isinstance(payload.get("aps"), dict):
            raise Refused(400, "PayloadEmpty")
        push.payload = payload

    def _verify_token(self, header: str, push: Push) -> dict[str, Any]:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Refused(403, "MissingProviderToken")
        push.token = token
        with self._lock:
            expired = token in self._expired
        try:
            head_b64, claims_b64, sig_b64 = token.split(".")
            head = json.loads(b64url_decode(head_b64))
            claims = json.loads(b64url_decode(claims_b64))
            sig = b64url_decode(sig_b64)
        except ValueError:
            raise Refused(403, "InvalidProviderToken") from None
        if head.get("alg") != "ES256" or head.get("kid") != self.key_id or len(sig) != 64:
            raise Refused(403, "InvalidProviderToken")
        der = encode_dss_signature(int.from_bytes(sig[:32]), int.from_bytes(sig[32:]))
        try:
            self.signing_key.public_key().verify(
                der, f"{head_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256())
            )
        except InvalidSignature:
            raise Refused(403, "InvalidProviderToken") from None
        if claims.get("iss") != self.team_id or not isinstance(claims.get("iat"), int):
            raise Refused(403, "InvalidProviderToken")
        now = time.time()
        if claims["iat"] > now + 60:
            raise Refused(403, "InvalidProviderToken")
        if expired or claims["iat"] < now - 3600:
            raise Refused(403, "ExpiredProviderToken")
        return claims
