"""JWTs from the application's identity provider, verified (issue 16 §1).

A JWT is accepted wherever a notifyd token is (:meth:`.accounts.Accounts.authenticate_token`
tells them apart by shape). This module only answers "is this token genuine, and
what does it say?"; turning the claims into a principal is the accounts' job.

Verification is joserfc's; nothing here is hand-written crypto. The rules:

- **Keys** come from exactly one of ``jwt_jwks_url`` (a JWK set over HTTPS, or
  HTTP to loopback), ``jwt_public_key_file`` (PEM: RSA, EC P-256/P-384, Ed25519)
  or ``jwt_secret_file`` (an HS256 secret of at least 32 bytes). Files are read
  at start (:func:`load_key_file`, from the config check).
- **Algorithms**: RS256/384/512 and PS256 for RSA keys, ES256 (P-256) and ES384
  (P-384) for EC keys, EdDSA (and its RFC 9864 name Ed25519) for Ed25519 keys,
  HS256 for a secret. A token's ``alg`` must be one its key's type allows (and the
  key's own ``alg``, when a JWK names one), so an HS256 token "signed" with an RSA
  public key is refused (algorithm confusion), and so is ``alg: none``.
- **Claims**: ``exp`` is required; ``exp``, ``nbf``, ``iss`` (= ``jwt_issuer``)
  and ``aud`` (= or containing ``jwt_audience``) are always checked, with
  ``jwt_leeway_seconds`` of clock skew either way.
- **The JWK set** is fetched lazily (the daemon starts while the issuer is down),
  through the destination policy like every outbound call: a short timeout, no
  redirects, at most :data:`JWKS_CAP` bytes. It is kept for the ``max-age`` of its
  ``Cache-Control`` (between :data:`MIN_CACHE` and :data:`MAX_CACHE`; an hour
  without one), and fetched again at once when a token names a key id it lacks —
  at most once per :data:`REFETCH_INTERVAL`, so a stream of made-up key ids cannot
  make us hammer the issuer. Key rotation thus needs no restart. When the issuer
  cannot be reached, the keys fetched last stay in use.

Every failure is an :class:`.errors.Unauthorized` whose message says what was wrong
with the token (expired, wrong issuer, unknown key, …) without echoing it.
"""

from __future__ import annotations

import http.client
import logging
import re
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import trio
from joserfc import jws
from joserfc import jwt as jose_jwt
from joserfc.errors import (
    ExpiredTokenError,
    InvalidClaimError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import ECKey, KeySet, OctKey, OKPKey, RSAKey

from . import destinations
from .errors import Unauthorized

log = logging.getLogger("notifyd.jwt")

#: the longest token looked at (a real one is well under 2 KiB)
MAX_TOKEN = 8 * 1024
#: the largest JWK set read from the issuer
JWKS_CAP = 256 * 1024
#: seconds a JWK set fetch may take in all (a request waits on it at most this long)
FETCH_TIMEOUT = 5.0
#: bounds of the ``max-age`` a JWK set is kept for, and the default without one
MIN_CACHE, MAX_CACHE, DEFAULT_CACHE = 60.0, 86_400.0, 3_600.0
#: at least this long between two fetches of the JWK set caused by tokens
REFETCH_INTERVAL = 10.0
#: the shortest HS256 secret accepted (RFC 7518 §3.2: at least the hash's size)
MIN_SECRET = 32

#: three base64url segments: the shape that tells a JWT from a notifyd token
_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256"})
_EC_ALGS = {"P-256": frozenset({"ES256"}), "P-384": frozenset({"ES384"})}
_OKP_ALGS = {"Ed25519": frozenset({"EdDSA", "Ed25519"})}
_HS_ALGS = frozenset({"HS256"})
_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d{1,10})", re.IGNORECASE)

Key = RSAKey | ECKey | OKPKey | OctKey


class KeyFileError(ValueError):
    """``jwt_public_key_file`` or ``jwt_secret_file`` is unusable (read at start)."""


def looks_like_jwt(token: str) -> bool:
    """Whether ``token`` has a JWT's shape (compact JWS: three base64url segments).
    Tokens over :data:`MAX_TOKEN` count too, to be refused as such."""
    return len(token) > MAX_TOKEN or _SHAPE.fullmatch(token) is not None


def algorithms_for(key: Key) -> frozenset[str]:
    """The ``alg`` values a token signed with ``key`` may carry."""
    if isinstance(key, RSAKey):
        allowed = _RSA_ALGS
    elif isinstance(key, ECKey):
        allowed = _EC_ALGS.get(key.curve_name, frozenset())
    elif isinstance(key, OKPKey):
        allowed = _OKP_ALGS.get(key.curve_name, frozenset())
    else:
        allowed = _HS_ALGS
    named = key.alg
    if isinstance(named, str):  # a JWK that names its algorithm allows only that one
        return allowed & {named}
    return allowed


def load_key_file(path: str, *, secret: bool) -> Key:
    """The key in ``jwt_public_key_file`` (PEM) or ``jwt_secret_file`` (``secret``:
    the file's bytes, a trailing newline dropped). Raises :class:`KeyFileError`."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    if secret:
        data = data.rstrip(b"\r\n")
        if len(data) < MIN_SECRET:
            raise KeyFileError(
                f"{path} holds {len(data)} bytes: an HS256 secret must be at least "
                f"{MIN_SECRET} bytes (e.g. `openssl rand -base64 48`)"
            )
        if b"-----BEGIN" in data:
            raise KeyFileError(f"{path} holds a PEM key: use jwt_public_key_file for that")
        return OctKey.import_key(data)
    errors = []
    for kind in (RSAKey, ECKey, OKPKey):
        try:
            key: Key = kind.import_key(data)
        except (ValueError, TypeError, JoseError) as exc:
            errors.append(str(exc))
            continue
        if not algorithms_for(key):
            raise KeyFileError(f"{path}: this key type or curve is not supported")
        return key
    raise KeyFileError(
        f"{path} is not a PEM public key notifyd can use (RSA, EC P-256/P-384 or Ed25519)"
    )


@dataclass(frozen=True)
class Verified:
    """A genuine token's claims, and when it expires (unix time)."""

    claims: dict[str, Any]
    expires_at: float


class JwksKeys:
    """The issuer's JWK set at ``url``, fetched and cached (see the module docstring)."""

    def __init__(self, url: str, policy: str) -> None:
        self.url = url
        self.policy = policy
        self.keys: list[Key] = []
        self.fetched = False
        self._fresh_until = 0.0
        self._last_attempt = -REFETCH_INTERVAL
        self._lock = trio.Lock()
        #: fetches made (for tests and ``notifyd doctor``)
        self.fetches = 0

    def _matching(self, kid: str | None) -> list[Key]:
        if kid is None:
            return list(self.keys)
        return [k for k in self.keys if k.kid == kid]

    async def candidates(self, kid: str | None) -> list[Key]:
        """The keys that may have signed a token naming ``kid``."""
        now = time.monotonic()
        if not self.fetched:
            await self.refresh()
        elif now >= self._fresh_until and not self._lock.locked():
            # stale: refresh; while one request does, the others use the keys there are
            await self.refresh()
        found = self._matching(kid)
        if not found and kid is not None:
            await self.refresh()  # rotated? (rate-limited in refresh)
            found = self._matching(kid)
        return found

    async def refresh(self) -> None:
        """Fetch the set again unless that happened less than
        :data:`REFETCH_INTERVAL` ago; a failure keeps the keys there are."""
        started = time.monotonic()
        async with self._lock:
            if self._last_attempt >= started:  # another request fetched meanwhile
                return
            now = time.monotonic()
            if now - self._last_attempt < REFETCH_INTERVAL:
                return
            self._last_attempt = now
            self.fetches += 1
            try:
                data, max_age = await fetch_json(self.url, self.policy, "the JWK set")
                keys = parse_key_set(data)
            except FetchFailed as exc:
                log.warning(
                    "jwt_jwks_url: %s%s",
                    exc,
                    "; keeping the keys fetched before" if self.fetched else "",
                )
                return
            self.keys, self.fetched = keys, True
            age = DEFAULT_CACHE if max_age is None else min(max(max_age, MIN_CACHE), MAX_CACHE)
            self._fresh_until = time.monotonic() + age


class FetchFailed(Exception):
    """The JWK set could not be fetched or used; the message says why."""


def parse_key_set(data: Any) -> list[Key]:
    """The usable signing keys of a JWK set (others, e.g. ``use: enc`` or unknown
    types, are skipped). Symmetric (``oct``) keys are skipped too: a JWK set is
    public, so a secret published in one would let anyone sign tokens. Raises
    :class:`FetchFailed` when there are none."""
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise FetchFailed('the answer is not a JWK set ({"keys": [...]})')
    keys: list[Key] = []
    for item in data["keys"][:100]:
        if not isinstance(item, dict) or item.get("use", "sig") != "sig":
            continue
        try:
            imported = KeySet.import_key_set({"keys": [item]}).keys
        except (ValueError, TypeError, KeyError, JoseError):
            continue
        for key in imported:
            if isinstance(key, RSAKey | ECKey | OKPKey) and algorithms_for(key):
                keys.append(key)
    if not keys:
        raise FetchFailed("the JWK set holds no signing key notifyd can use")
    return keys


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> None:  # fmt: skip
        raise urllib.error.HTTPError(req.full_url, code, "redirect refused", headers, fp)


#: plain urllib (the core imports no HTTP client library): no redirects, and no
#: proxy from the environment (the destination policy sees the real host)
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())


def _get(url: str) -> tuple[int, bytes, str]:
    """One blocking GET (run in a worker thread inside :func:`.destinations.outbound`,
    which guards the address and caps what is read): status, body, Cache-Control."""
    request = urllib.request.Request(
        url, headers={"Accept": "application/json", "User-Agent": "notifyd"}
    )
    try:
        with _opener.open(request, timeout=FETCH_TIMEOUT) as resp:
            return resp.status, resp.read(), resp.headers.get("Cache-Control", "")
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code, b"", ""


_fetch_limiter = trio.CapacityLimiter(2)


async def fetch_json(url: str, policy: str, what: str) -> tuple[Any, float | None]:
    """GET ``url`` (a setting an admin wrote, so it may reach what an admin's
    channels may): the JSON answer and its ``Cache-Control`` max-age. Raises
    :class:`FetchFailed` (unreachable, refused, slow, redirected, not 200, over
    :data:`JWKS_CAP`, not JSON)."""
    allow = destinations.may_reach_private(policy, owner_is_admin=True)
    host = urlsplit(url).netloc
    with destinations.outbound(allow, policy) as rule:
        rule.response_cap = JWKS_CAP
        try:
            with trio.fail_after(FETCH_TIMEOUT + 1):
                status, body, cache_control = await trio.to_thread.run_sync(
                    _get, url, abandon_on_cancel=True, limiter=_fetch_limiter
                )
        except trio.TooSlowError:
            raise FetchFailed(
                f"{what} at {host} did not answer within {FETCH_TIMEOUT:g} s"
            ) from None
        except destinations.ResponseTooLarge:
            raise FetchFailed(f"{what} at {host} is larger than {JWKS_CAP // 1024} KiB") from None
        except (OSError, ValueError, http.client.HTTPException) as exc:
            if rule.refused:
                raise FetchFailed(f"{what}: {rule.refusal()}") from None
            reason = getattr(exc, "reason", None) or type(exc).__name__
            raise FetchFailed(f"cannot reach {what} at {host}: {reason}") from None
    if status != 200:
        raise FetchFailed(f"{what} at {host} answered {status}")
    match = _MAX_AGE.search(cache_control)
    try:
        return orjson.loads(body), float(match.group(1)) if match else None
    except orjson.JSONDecodeError:
        raise FetchFailed(f"{what} at {host} is not JSON") from None


_CLAIM_ERRORS = {
    "iss": "the token's issuer (iss) is not jwt_issuer",
    "aud": "the token's audience (aud) does not include jwt_audience",
    "nbf": "the token is not valid yet (nbf)",
    "exp": "the token's expiry (exp) is not a number",
    "iat": "the token's issue time (iat) is not valid",
}


class JwtVerifier:
    """Checks tokens against one issuer's keys and claims (see the module docstring)."""

    def __init__(
        self,
        issuer: str,
        audience: str,
        leeway: float,
        *,
        key: Key | None = None,
        jwks: JwksKeys | None = None,
    ) -> None:
        assert (key is None) != (jwks is None), "one key source"
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self.key = key
        self.jwks = jwks

    @classmethod
    def from_config(cls, config: Any) -> JwtVerifier | None:
        """The verifier the settings describe; None when ``jwt_issuer`` is empty.
        Raises :class:`KeyFileError` for an unusable key file."""
        if not config.jwt_issuer:
            return None
        common = (config.jwt_issuer, config.jwt_audience, float(config.jwt_leeway_seconds))
        if config.jwt_jwks_url:
            return cls(*common, jwks=JwksKeys(config.jwt_jwks_url, config.destination_policy))
        if config.jwt_public_key_file:
            return cls(*common, key=load_key_file(config.jwt_public_key_file, secret=False))
        return cls(*common, key=load_key_file(config.jwt_secret_file, secret=True))

    async def verify(self, token: str) -> Verified:
        """The claims of a genuine, current token for this issuer and audience.
        Raises :class:`Unauthorized` saying what is wrong."""
        if len(token) > MAX_TOKEN:
            raise Unauthorized(f"the token is longer than {MAX_TOKEN // 1024} KiB")
        try:
            header = jws.extract_compact(token.encode("ascii")).headers()
        except (JoseError, ValueError, TypeError, UnicodeError):
            raise Unauthorized("the token is not a well-formed JWT") from None
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg.lower() == "none":
            raise Unauthorized("the token is not signed (alg 'none' is refused)")
        if kid is not None and not isinstance(kid, str):
            raise Unauthorized("the token's key id (kid) is not a string")
        if self.jwks is not None:
            candidates = await self.jwks.candidates(kid)
            if not candidates:
                if not self.jwks.fetched:
                    raise Unauthorized(
                        "the issuer's keys could not be fetched (jwt_jwks_url); try again later"
                    )
                raise Unauthorized("the token's signing key (kid) is not among the issuer's keys")
        else:
            assert self.key is not None
            candidates = [self.key]
        usable = [k for k in candidates if alg in algorithms_for(k)]
        if not usable:
            raise Unauthorized(
                f"the token's algorithm {alg[:16]!r} does not fit the issuer's key "
                "(accepted: RS256/384/512, PS256, ES256/384, EdDSA, HS256, each with its key type)"
            )
        claims = self._decode(token, alg, usable)
        self._check_claims(claims)
        return Verified(claims, float(claims["exp"]))

    @staticmethod
    def _decode(token: str, alg: str, keys: list[Key]) -> dict[str, Any]:
        for key in keys:
            try:
                with warnings.catch_warnings():
                    # joserfc warns that "EdDSA" is deprecated by RFC 9864; issuers use it
                    warnings.simplefilter("ignore")
                    decoded = jose_jwt.decode(token, key, algorithms=[alg])
            except JoseError:
                continue
            except (ValueError, TypeError):
                raise Unauthorized("the token is not a well-formed JWT") from None
            if not isinstance(decoded.claims, dict):
                raise Unauthorized("the token's payload is not a JSON object")
            return decoded.claims
        raise Unauthorized("the token's signature does not verify")

    def _check_claims(self, claims: dict[str, Any]) -> None:
        registry = jose_jwt.JWTClaimsRegistry(
            now=int(time.time()),
            leeway=int(self.leeway),
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": self.audience},
            exp={"essential": True},
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            raise Unauthorized("the token has expired") from None
        except MissingClaimError as exc:
            claim = str(getattr(exc, "claim", ""))[:20]
            raise Unauthorized(f"the token lacks the required claim {claim!r}") from None
        except InvalidClaimError as exc:
            claim = str(getattr(exc, "claim", ""))
            raise Unauthorized(
                _CLAIM_ERRORS.get(claim, "the token's claims are not valid")
            ) from None
        except (JoseError, ValueError, TypeError):
            raise Unauthorized("the token's claims are not valid") from None
        if isinstance(claims["exp"], bool):  # JSON true is not a time
            raise Unauthorized(_CLAIM_ERRORS["exp"])
