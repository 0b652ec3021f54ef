"""The OpenID Connect relying party behind single sign-on for the web page.

notifyd signs browsers in with the authorization-code flow, PKCE (S256), ``state``
and ``nonce`` (OpenID Connect Core 1.0 §3.1). This module holds what does not
depend on HTTP routing:

- :class:`PendingLogin`: the secrets of one sign-in attempt (state, nonce, PKCE
  verifier, where to go afterwards). They belong to the browser that started it,
  so they travel in a short-lived cookie (:meth:`PendingLogin.encode`) rather
  than in server memory: any node of a cluster can take the callback.
- :class:`RelyingParty`: the provider's discovery document and signing keys
  (fetched lazily, so the daemon starts while the provider is down, and cached;
  the keys are fetched again when an ID token names a key id they lack or,
  without a key id, fails to verify: at once the first time, then at most every
  :data:`JWKS_REFETCH_SECONDS`, so key rotation just works), the authorization
  URL, the code exchange at the token endpoint, and the ID token's verification
  (signature against the provider's JWKS with joserfc; ``iss``, ``aud``, ``azp``,
  ``exp``, ``iat``, ``sub``, ``nonce``).

Every request to the provider goes through the destination policy
(``private_destinations``; the provider is the operator's choice, so it is
treated like an admin's channel: only ``nobody`` keeps it off private addresses),
with a timeout, no redirects and a capped answer. The HTTP client itself is the
front end's (:class:`Transport`, given to :class:`RelyingParty`): the core names
the requests and judges the answers, and imports no HTTP library.

Errors are :class:`ProviderUnavailable` (the provider cannot be asked: 503) and
:class:`SignInRefused` (this attempt fails). Their ``reason`` is for the log and
never holds a code, a token or a secret; ``kind`` is a stable slug the page turns
into a message for the person signing in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote_plus, urlencode, urlsplit

import trio
from joserfc import jwt
from joserfc.errors import BadSignatureError, InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from . import destinations
from .config import Config, is_local_http
from .errors import NotifydError
from .identity import groups_from_claim

log = logging.getLogger("notifyd.oidc")

#: seconds a sign-in attempt may take at the provider
PENDING_SECONDS = 600
#: seconds one request to the provider may take, connection included
REQUEST_TIMEOUT = 10.0
#: the largest discovery document, JWKS or token response read
ANSWER_CAP = 256 * 1024
#: how long a discovery document and a key set are used before being fetched again
CACHE_SECONDS = 3600.0
#: at least this long between two key-set fetches caused by an unknown key id
JWKS_REFETCH_SECONDS = 30.0
#: after a failed discovery, the next attempt waits this long (the page says "try again")
RETRY_SECONDS = 2.0
#: clock difference tolerated between notifyd and the provider
LEEWAY_SECONDS = 60
#: asymmetric signature algorithms accepted for ID tokens (no HS*, no ``none``)
SIGNING_ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
)  # fmt: skip
_MAX_NEXT = 1024
_MAX_COOKIE = 4096


class OIDCError(Exception):
    """A sign-in through the provider failed. ``kind``: a stable slug for the
    page; ``reason``: for the log (no secrets)."""

    kind = "failed"

    def __init__(self, reason: str, *, kind: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if kind is not None:
            self.kind = kind


class TransportFailed(Exception):
    """Raised by a :class:`Transport`: no answer (connection refused, DNS, TLS, a
    reset) or one larger than the cap. The message names what failed, never the
    URL's query or a body."""


class Transport(Protocol):
    """One HTTP request to the provider, without following redirects; the answer's
    status and body, read up to ``cap`` bytes.

    Raises:
        TransportFailed: no answer, or a body over ``cap``.
    """

    async def __call__(
        self, method: str, url: str, *, form: dict[str, str] | None,
        auth: tuple[str, str] | None, cap: int,
    ) -> tuple[int, bytes]: ...  # fmt: skip


class ProviderUnavailable(OIDCError):
    """The provider cannot be reached, or its answers are unusable (discovery,
    keys, a broken token endpoint). Worth trying again later."""

    kind = "unavailable"


class SignInRefused(OIDCError):
    """This sign-in attempt is refused: wrong or missing state, a code the
    provider refused (replayed, expired), an ID token that does not verify, a
    missing user-name claim."""

    kind = "refused"


# -- one sign-in attempt -----------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def safe_next(value: str | None) -> str:
    """The local path to open after signing in; "/" when none is given.

    Raises:
        ValueError: ``value`` could lead off this server (``//host``, ``https://…``,
            backslashes, which browsers read as slashes, control characters).
    """
    if value is None or value == "":
        return "/"
    if len(value) > _MAX_NEXT:
        raise ValueError("next is too long")
    if not value.startswith("/") or value.startswith("//"):
        raise ValueError("next must be a path on this server, starting with one /")
    if "\\" in value or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError("next may not hold backslashes or control characters")
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        raise ValueError("next must be a path on this server")
    return value


@dataclass(frozen=True)
class PendingLogin:
    """The secrets of one sign-in attempt, kept by the browser that started it."""

    state: str
    nonce: str
    verifier: str
    redirect_uri: str
    next: str = "/"
    created: float = 0.0

    @classmethod
    def new(cls, redirect_uri: str, next_path: str = "/") -> PendingLogin:
        """A fresh attempt: 256-bit state, nonce and PKCE verifier."""
        return cls(
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            verifier=secrets.token_urlsafe(48),  # 64 characters (RFC 7636: 43-128)
            redirect_uri=redirect_uri,
            next=next_path,
            created=time.time(),
        )

    @property
    def challenge(self) -> str:
        """The PKCE S256 code challenge of the verifier."""
        return _b64(hashlib.sha256(self.verifier.encode("ascii")).digest())

    def encode(self) -> str:
        """The cookie value (URL-safe base64 of JSON)."""
        data = {
            "s": self.state, "n": self.nonce, "v": self.verifier, "r": self.redirect_uri,
            "x": self.next, "t": int(self.created),
        }  # fmt: skip
        return _b64(json.dumps(data, separators=(",", ":")).encode())

    @classmethod
    def decode(cls, value: str | None, now: float | None = None) -> PendingLogin:
        """The attempt a cookie value holds.

        Raises:
            SignInRefused: no value, a malformed one, or one older than
                :data:`PENDING_SECONDS`.
        """
        if not value:
            raise SignInRefused("no sign-in attempt in this browser (cookie missing)", kind="state")
        try:
            if len(value) > _MAX_COOKIE:
                raise ValueError("too long")
            data = json.loads(_unb64(value))
            pending = cls(
                state=str(data["s"]), nonce=str(data["n"]), verifier=str(data["v"]),
                redirect_uri=str(data["r"]), next=safe_next(str(data["x"])),
                created=float(data["t"]),
            )  # fmt: skip
        except (ValueError, KeyError, TypeError):
            raise SignInRefused("the sign-in attempt cookie is malformed", kind="state") from None
        now = time.time() if now is None else now
        if not pending.created - LEEWAY_SECONDS <= now <= pending.created + PENDING_SECONDS:
            raise SignInRefused("the sign-in attempt is older than 10 minutes", kind="expired")
        return pending

    def check_state(self, state: str | None) -> None:
        """Raises :class:`SignInRefused` unless ``state`` is this attempt's
        (compared in constant time)."""
        if not state or not hmac.compare_digest(state.encode(), self.state.encode()):
            raise SignInRefused(
                "the state returned by the provider is not this browser's", kind="state"
            )


@dataclass(frozen=True)
class Identity:
    """Who signed in, from a verified ID token."""

    name: str
    groups: tuple[str, ...]
    subject: str


# -- the provider ------------------------------------------------------------


@dataclass(frozen=True)
class Provider:
    """What notifyd uses of a provider's discovery document."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    token_auth_methods: tuple[str, ...]
    algorithms: tuple[str, ...]


def _endpoint_ok(url: object, issuer: str) -> bool:
    if not isinstance(url, str) or len(url) > 2048:
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if parts.scheme == "https" and parts.hostname:
        return True
    # plain HTTP only for a provider that is itself on this machine over HTTP
    return is_local_http(url) and is_local_http(issuer)


def parse_discovery(document: Any, configured_issuer: str) -> Provider:
    """The :class:`Provider` a discovery document describes.

    Raises:
        ProviderUnavailable: not a discovery document of ``configured_issuer``.
    """
    if not isinstance(document, dict):
        raise ProviderUnavailable("the discovery document is not a JSON object")
    issuer = document.get("issuer")
    if not isinstance(issuer, str) or issuer.rstrip("/") != configured_issuer.rstrip("/"):
        raise ProviderUnavailable(
            f"the discovery document names issuer {str(issuer)[:200]!r}, not oidc_issuer "
            f"{configured_issuer!r}"
        )
    for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        if not _endpoint_ok(document.get(key), issuer):
            raise ProviderUnavailable(f"the discovery document's {key} is missing or not https")
    methods = document.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    algs = document.get("id_token_signing_alg_values_supported") or ["RS256"]
    if not isinstance(methods, list) or not isinstance(algs, list):
        raise ProviderUnavailable("the discovery document is malformed")
    usable = tuple(a for a in SIGNING_ALGORITHMS if a in algs)
    if not usable:
        raise ProviderUnavailable(
            f"the provider signs ID tokens with none of {', '.join(SIGNING_ALGORITHMS)}"
        )
    return Provider(
        issuer=issuer,
        authorization_endpoint=document["authorization_endpoint"],
        token_endpoint=document["token_endpoint"],
        jwks_uri=document["jwks_uri"],
        token_auth_methods=tuple(m for m in methods if isinstance(m, str)),
        algorithms=usable,
    )


class RelyingParty:
    """notifyd as a client of the provider named by ``oidc_issuer``.

    One instance serves the whole process; it caches the discovery document and
    the key set (see the module docstring) and is safe to use from many tasks.
    """

    def __init__(self, config: Config, client_secret: str | None, transport: Transport) -> None:
        self.transport = transport
        self.issuer = config.oidc_issuer
        self.client_id = config.oidc_client_id
        self.client_secret = client_secret
        self.scopes = tuple(config.oidc_scopes)
        self.user_claim = config.oidc_user_claim
        self.groups_claim = config.oidc_groups_claim
        self.policy = config.destination_policy
        self._provider: Provider | None = None
        self._provider_until = 0.0
        self._failed_until = 0.0
        self._failure = ""
        self._keys: KeySet | None = None
        self._keys_until = 0.0
        self._keys_refetched = -JWKS_REFETCH_SECONDS
        self._lock = trio.Lock()

    @classmethod
    def from_config(cls, config: Config, transport: Transport) -> RelyingParty:
        """The relying party for ``config`` (reads ``oidc_client_secret_file``).

        Raises:
            ProviderUnavailable: the secret file cannot be read (names the file,
                never its content).
        """
        secret = None
        if config.oidc_client_secret_file:
            try:
                with open(config.oidc_client_secret_file, encoding="utf-8") as f:
                    secret = f.read().strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise ProviderUnavailable(
                    f"cannot read oidc_client_secret_file {config.oidc_client_secret_file}: "
                    f"{type(exc).__name__}"
                ) from None
            if not secret:
                raise ProviderUnavailable(
                    f"oidc_client_secret_file {config.oidc_client_secret_file} is empty"
                )
        return cls(config, secret, transport)

    # -- HTTP to the provider --------------------------------------------------

    async def _request(
        self, method: str, url: str, *, form: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None, what: str,
    ) -> tuple[int, Any]:  # fmt: skip
        """One request to the provider: the status and the JSON answer (None when
        the body is not JSON).

        Raises:
            ProviderUnavailable: unreachable, refused by the destination policy,
                slower than :data:`REQUEST_TIMEOUT`, redirected, or an answer over
                :data:`ANSWER_CAP`.
        """
        allow = destinations.may_reach_private(self.policy, owner_is_admin=True)
        host = urlsplit(url).netloc
        with destinations.outbound(allow, self.policy) as rule:
            try:
                with trio.fail_after(REQUEST_TIMEOUT):
                    status, body = await self.transport(
                        method, url, form=form, auth=auth, cap=ANSWER_CAP
                    )
            except trio.TooSlowError:
                raise ProviderUnavailable(f"{what} at {host} timed out") from None
            except TransportFailed as exc:
                if rule.refused:
                    raise ProviderUnavailable(f"{what}: refused: {rule.refusal()}") from None
                raise ProviderUnavailable(f"cannot reach {what} at {host}: {exc}") from None
        if 300 <= status < 400:
            raise ProviderUnavailable(f"{what} at {host} answered a redirect ({status})")
        try:
            return status, json.loads(body)
        except ValueError:
            return status, None

    # -- discovery and keys ----------------------------------------------------

    async def provider(self) -> Provider:
        """The provider's discovery document (cached for :data:`CACHE_SECONDS`).

        Raises:
            ProviderUnavailable: it cannot be fetched or is unusable. A failure is
                remembered for :data:`RETRY_SECONDS`, so a crowd of browsers does not
                hammer a provider that is down.
        """
        now = trio.current_time()
        if self._provider is not None and now < self._provider_until:
            return self._provider
        async with self._lock:
            now = trio.current_time()
            if self._provider is not None and now < self._provider_until:
                return self._provider
            if now < self._failed_until:
                raise ProviderUnavailable(self._failure)
            url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
            try:
                status, document = await self._request("GET", url, what="the discovery document")
                if status != 200:
                    raise ProviderUnavailable(f"the discovery document answered {status}")
                provider = parse_discovery(document, self.issuer)
            except ProviderUnavailable as exc:
                if self._provider is not None:
                    # a provider that is briefly down keeps working for sign-ins that
                    # need nothing new from it
                    log.warning("single sign-on: %s; using the cached document", exc.reason)
                    self._provider_until = now + RETRY_SECONDS
                    return self._provider
                self._failed_until = now + RETRY_SECONDS
                self._failure = exc.reason
                raise
            self._provider, self._provider_until = provider, now + CACHE_SECONDS
            return provider

    async def _key_set(self, provider: Provider, *, refetch: bool = False) -> KeySet:
        """The provider's signing keys; ``refetch``: a token named a key id they
        lack, so they are fetched again, at once the first time and then at most
        every :data:`JWKS_REFETCH_SECONDS` (a rotation needs one fetch; a provider
        that keeps naming unknown keys does not get one per sign-in)."""
        async with self._lock:
            now = trio.current_time()
            fresh = self._keys is not None and now < self._keys_until
            again = refetch and now - self._keys_refetched >= JWKS_REFETCH_SECONDS
            if fresh and not again:
                assert self._keys is not None
                return self._keys
            if again:
                self._keys_refetched = now
            status, document = await self._request("GET", provider.jwks_uri, what="the JWKS")
            if status != 200 or not isinstance(document, dict):
                raise ProviderUnavailable(f"the JWKS answered {status}, not a key set")
            try:
                keys = KeySet.import_key_set(document)  # type: ignore[arg-type]
            except (JoseError, ValueError, TypeError, KeyError) as exc:
                raise ProviderUnavailable(f"the JWKS is unusable: {type(exc).__name__}") from None
            self._keys, self._keys_until = keys, now + CACHE_SECONDS
            return keys

    # -- the flow --------------------------------------------------------------

    async def authorization_url(self, pending: PendingLogin) -> str:
        """Where to send the browser to sign in at the provider.

        Raises:
            ProviderUnavailable: discovery failed.
        """
        provider = await self.provider()
        query = urlencode({
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": pending.redirect_uri,
            "scope": " ".join(self.scopes),
            "state": pending.state,
            "nonce": pending.nonce,
            "code_challenge": pending.challenge,
            "code_challenge_method": "S256",
        })  # fmt: skip
        joiner = "&" if urlsplit(provider.authorization_endpoint).query else "?"
        return provider.authorization_endpoint + joiner + query

    async def finish(self, pending: PendingLogin, code: str) -> Identity:
        """Exchange ``code`` at the token endpoint and verify the ID token.

        Raises:
            ProviderUnavailable: the provider cannot be asked.
            SignInRefused: the code was refused (used already, expired, not ours) or
                the ID token does not verify or names no user.
        """
        provider = await self.provider()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": pending.redirect_uri,
            "code_verifier": pending.verifier,
        }
        auth = None
        if self.client_secret is None:
            form["client_id"] = self.client_id  # a public client: PKCE is its proof
        elif (
            "client_secret_basic" not in provider.token_auth_methods
            and "client_secret_post" in provider.token_auth_methods
        ):
            form["client_id"] = self.client_id
            form["client_secret"] = self.client_secret
        else:
            # RFC 6749 §2.3.1: both parts form-urlencoded before Basic
            auth = (_form_quote(self.client_id), _form_quote(self.client_secret))
        status, answer = await self._request(
            "POST", provider.token_endpoint, form=form, auth=auth, what="the token endpoint"
        )
        if status != 200:
            error = answer.get("error") if isinstance(answer, dict) else None
            error = str(error)[:64] if error else f"HTTP {status}"
            if status >= 500:
                raise ProviderUnavailable(f"the token endpoint answered {status}")
            raise SignInRefused(
                f"the provider refused the code ({error}): used already, expired, or "
                "not issued to this client",
                kind="code",
            )
        if not isinstance(answer, dict) or not isinstance(answer.get("id_token"), str):
            raise SignInRefused("the token endpoint answered without an ID token", kind="token")
        claims = await self.verify_id_token(provider, answer["id_token"], pending.nonce)
        return self.identity(claims)

    async def verify_id_token(
        self, provider: Provider, id_token: str, nonce: str, now: float | None = None
    ) -> dict[str, Any]:
        """The claims of ``id_token`` once its signature (against the provider's
        keys) and its claims check out.

        Raises:
            SignInRefused: it does not verify (kind ``token``).
            ProviderUnavailable: the keys cannot be fetched.
        """
        if len(id_token) > 64 * 1024:
            raise SignInRefused("the ID token is too large", kind="token")
        keys = await self._key_set(provider)
        try:
            try:
                token = jwt.decode(id_token, keys, algorithms=list(provider.algorithms))
            except (InvalidKeyIdError, BadSignatureError):
                # an unknown kid, or (tokens without kid) a key that no longer
                # verifies: the provider may have rotated its keys
                keys = await self._key_set(provider, refetch=True)
                token = jwt.decode(id_token, keys, algorithms=list(provider.algorithms))
        except JoseError as exc:
            raise SignInRefused(
                f"the ID token's signature does not verify: {exc.error}", kind="token"
            ) from None
        except (ValueError, TypeError):
            raise SignInRefused("the ID token is malformed", kind="token") from None
        claims = token.claims
        stamp = int(time.time() if now is None else now)
        registry = jwt.JWTClaimsRegistry(
            now=stamp,
            leeway=LEEWAY_SECONDS,
            iss={"essential": True, "value": provider.issuer},
            aud={"essential": True, "value": self.client_id},
            exp={"essential": True},
            iat={"essential": True},
            sub={"essential": True},
            nonce={"essential": True},
        )
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise SignInRefused(
                f"the ID token is not valid: {exc.description or exc.error}", kind="token"
            ) from None
        iat = claims["iat"]
        if not isinstance(iat, int | float) or iat > stamp + LEEWAY_SECONDS:
            raise SignInRefused("the ID token was issued in the future", kind="token")
        audience = claims["aud"]
        azp = claims.get("azp")
        several = isinstance(audience, list) and len(audience) > 1
        if (several or azp is not None) and azp != self.client_id:
            raise SignInRefused("the ID token was issued to another client (azp)", kind="token")
        sent = claims["nonce"]
        if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), nonce.encode()):
            raise SignInRefused("the ID token's nonce is not this sign-in's", kind="token")
        return claims

    def identity(self, claims: dict[str, Any]) -> Identity:
        """The user name and groups in verified claims.

        Raises:
            SignInRefused: the user-name claim is missing or not a string.
        """
        name = claims.get(self.user_claim)
        if not isinstance(name, str) or not name.strip():
            raise SignInRefused(
                f"the ID token has no {self.user_claim!r} claim (oidc_user_claim)", kind="claim"
            )
        try:
            groups = groups_from_claim(claims.get(self.groups_claim), self.groups_claim)
        except NotifydError:
            raise SignInRefused(
                f"the ID token's {self.groups_claim!r} claim is not a list of group names "
                "(oidc_groups_claim)",
                kind="claim",
            ) from None
        return Identity(name=name.strip(), groups=groups, subject=str(claims.get("sub", "")))


def _form_quote(value: str) -> str:
    return quote_plus(value, safe="")
