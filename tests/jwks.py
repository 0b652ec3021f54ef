"""A JWK set server for the tests: a real HTTP server on 127.0.0.1 serving the public
half of keys made for this run, which a test can rotate, counting the fetches.

Also :func:`mint`, which signs tokens with joserfc the way an identity provider
would, and :func:`forge_hs256`, which makes the token an attacker would send in an
algorithm-confusion attack (HS256 "signed" with an RSA public key as the secret).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey

ISSUER = "https://idp.example.test"
AUDIENCE = "notifyd-tests"

AnyKey = RSAKey | ECKey | OKPKey | OctKey
ALG = {"RSA": "RS256", "EC": "ES256", "OKP": "EdDSA", "oct": "HS256"}


def new_keys() -> dict[str, AnyKey]:
    """One key of each kind, made now (kid = its kind)."""
    return {
        "rsa": RSAKey.generate_key(2048, parameters={"kid": "rsa"}),
        "ec": ECKey.generate_key("P-256", parameters={"kid": "ec"}),
        "ed": OKPKey.generate_key("Ed25519", parameters={"kid": "ed"}),
    }


def mint(
    key: AnyKey,
    subject: str | None = "alice",
    *,
    alg: str | None = None,
    lifetime: float = 300,
    header: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    """A token signed with ``key``: iss, aud, exp (``lifetime`` from now) and sub
    filled in unless ``claims`` override them (``None`` leaves a claim out)."""
    now = int(time.time())
    body: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + lifetime}
    if subject is not None:
        body["sub"] = subject
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    algorithm = alg or ALG[key.key_type]
    head = {"alg": algorithm, **({"kid": key.kid} if key.kid else {}), **(header or {})}
    with warnings.catch_warnings():  # joserfc: "EdDSA is deprecated via RFC 9864"
        warnings.simplefilter("ignore")
        return jwt.encode(head, body, key, algorithms=[algorithm])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(payload: dict[str, Any], header: dict[str, Any] | None = None) -> str:
    """A token with ``alg: none`` (no signature)."""
    head = header or {"alg": "none", "typ": "JWT"}
    return f"{_b64(json.dumps(head).encode())}.{_b64(json.dumps(payload).encode())}."


def forge_hs256(public: RSAKey, payload: dict[str, Any]) -> str:
    """An HS256 token whose HMAC secret is the RSA public key's PEM: what a verifier
    that trusts the token's ``alg`` would accept (algorithm confusion). Made by hand
    because joserfc, rightly, refuses to use a public key as an HMAC secret."""
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": public.kid}).encode())
    body = _b64(json.dumps(payload).encode())
    secret = public.as_pem(private=False)
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(sig)}"


def claims(subject: str = "alice", lifetime: float = 300, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ISSUER, "aud": AUDIENCE, "exp": now + lifetime, "sub": subject, **extra}


class JwksServer:
    """Serves ``{"keys": [...]}`` (public halves) at ``/jwks`` with a Cache-Control
    max-age; :meth:`serve` changes the set (rotation); :attr:`fetches` counts GETs."""

    def __init__(self, keys: list[AnyKey], max_age: int = 300) -> None:
        self._lock = threading.Lock()
        self._body = b""
        self.max_age = max_age
        self.fetches = 0
        self.serve(keys)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                with outer._lock:
                    outer.fetches += 1
                    body = outer._body
                if self.path != "/jwks":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", f"public, max-age={outer.max_age}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/jwks"

    def serve(self, keys: list[AnyKey]) -> None:
        body = json.dumps({"keys": [k.as_dict(private=False) for k in keys]}).encode()
        with self._lock:
            self._body = body

    def __enter__(self) -> JwksServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
