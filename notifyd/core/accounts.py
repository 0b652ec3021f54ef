"""Users, tokens and ACL grants, and turning credentials into a :class:`Principal`.

Tokens are ``nfy_`` + 40 random characters, shown once at creation and stored as a
SHA-256 digest (they carry 240 bits of entropy, so a slow hash adds nothing but
latency to every request). Tokens made through the Gotify API have Gotify's form
instead (:data:`GOTIFY_TOKEN_RE`: ``A`` or ``C`` and 14 random characters, 84 bits),
because Gotify clients such as shoutrrr check it; they are stored and used like the
others. Passwords are hashed with argon2 in a worker thread.

Authenticated principals are cached in memory for :data:`CACHE_TTL` seconds. Every
change made through this class is signalled to every node (``Store.signal``), and
each node forgets its cached principals when it hears it (well within a second on
PostgreSQL); the TTL bounds staleness should a signal be lost, and a node that may
have missed signals (its LISTEN connection dropped) forgets everything.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import time
from typing import Literal

import trio
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from .acl import SCOPES, Grant, Principal
from .config import Config
from .errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationFailed
from .hub import Hub
from .identity import (
    GrantRules,
    clean_groups,
    grants_from_claim,
    groups_from_claim,
    scopes_from_claim,
)
from .jwt import MAX_TOKEN, JwtVerifier, looks_like_jwt
from .models import check_pattern
from .store import AclEntry, Signal, Store, Token, User
from .throttle import SignInThrottle
from .upstream import SYSTEM_USER as UPSTREAM_USER

#: User names are topic-safe: ``{user}`` is substituted into topic patterns
#: (``default_grants``), so no ``*`` or ``/`` may appear. Up to 64 characters with a
#: leading digit allowed, so an identity provider's subject fits (Keycloak's ``sub``
#: is a UUID). One topic segment holds 64 characters, so ``user/{user}/…`` works.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,63}$")
NAME_RULE = "1–64 characters: a lowercase letter or digit, then a–z 0–9 _ . -"
TOKEN_PREFIX = "nfy_"
#: Gotify's token form (its auth/token.go: a kind letter, then 14 characters), as
#: notifyd makes them: ``A`` for applications, ``C`` for clients, the 14 drawn from
#: ``A–Z a–z 0–9 - _`` (Gotify's alphabet without its ``.``, so that a token's prefix
#: is a plain word everywhere one is shown or exported)
GOTIFY_TOKEN_RE = re.compile(r"[AC][A-Za-z0-9_\-]{14}")
_GOTIFY_ALPHABET = string.ascii_letters + string.digits + "-_"
#: how a token's secret looks: notifyd's own, or Gotify's application or client form
TokenForm = Literal["nfy", "gotify_app", "gotify_client"]
_GOTIFY_LETTER = {"gotify_app": "A", "gotify_client": "C"}
SESSION_PREFIX = "nfs_"
CACHE_TTL = 30.0
#: accounts notifyd keeps for itself: no external identity may name them
SYSTEM_USERS = frozenset({UPSTREAM_USER})
_hasher = PasswordHasher()
_argon_limiter = trio.CapacityLimiter(2)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def is_token(value: str) -> bool:
    """Whether ``value`` has the form of a notifyd token (``nfy_…``, or the Gotify form
    tokens made through the Gotify API have). Says nothing of whether it exists."""
    return value.startswith(TOKEN_PREFIX) or GOTIFY_TOKEN_RE.fullmatch(value) is not None


def new_secret(form: TokenForm = "nfy") -> tuple[str, str]:
    """A new token secret of ``form`` and the prefix of it that is kept to show
    (``nfy_`` and 4 characters; for the short Gotify form, its letter and 3)."""
    if form == "nfy":
        secret = TOKEN_PREFIX + secrets.token_urlsafe(30)
        return secret, secret[:8]
    secret = _GOTIFY_LETTER[form] + "".join(secrets.choice(_GOTIFY_ALPHABET) for _ in range(14))
    return secret, secret[:4]


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise ValidationFailed(
            f"user names are {NAME_RULE}",
            field="name",
        )
    return name


def parse_scopes(scopes: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise ValidationFailed(
            f"scopes must be a non-empty list of {', '.join(SCOPES)}", field="scopes"
        )
    return tuple(dict.fromkeys(scopes))


class Accounts:
    def __init__(self, store: Store, hub: Hub | None = None, config: Config | None = None) -> None:
        self.store = store
        self.hub = hub
        self.config = config if config is not None else Config()
        #: default_grants and group_grants (see :mod:`.identity`)
        self.rules = GrantRules.from_settings(self.config.default_grants, self.config.group_grants)
        #: checks JWTs from jwt_issuer; None: JWTs are not accepted
        self.jwt = JwtVerifier.from_config(self.config)
        self._cache: dict[str, tuple[float, Principal]] = {}
        #: counts the changes heard (signals); see :meth:`_remember`
        self._generation = 0
        #: keys the digests under which authenticate_password remembers successes
        self._password_key = secrets.token_bytes(32)
        #: failed password checks, shared by every door that takes a password
        self.signin = SignInThrottle(store)
        #: token id → last use (unix time), flushed to the store by housekeeping
        self.token_uses: dict[int, float] = {}

    def _invalidate(self, user_id: int | None = None) -> None:
        """A user's rights or credentials changed (``None``: anyone's): every node
        forgets what it remembered and drops the streams that may have lost rights."""
        self.store.signal({"kind": "rights", "user": user_id})

    def hear_signal(self, message: Signal) -> None:
        """A signal from any node (this one included): see :meth:`_invalidate`."""
        kind = message.get("kind")
        if kind in ("rights", "resync"):
            self._generation += 1
            self._cache.clear()
            user = message.get("user")
            if kind == "rights" and self.hub is not None:
                self.hub.user_changed(user if isinstance(user, int) else None)
        elif kind == "forget" and isinstance(message.get("key"), str):
            self._generation += 1
            self._cache.pop(message["key"], None)

    def _remember(
        self, key: str, principal: Principal, generation: int, ttl: float = CACHE_TTL
    ) -> None:
        """Cache ``principal`` under ``key`` for ``ttl`` seconds (at most
        :data:`CACHE_TTL`) unless a change was heard since the lookup began
        (``generation``): what it read may already be stale."""
        if generation != self._generation or ttl <= 0:
            return
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (time.monotonic() + min(ttl, CACHE_TTL), principal)

    # -- authentication --------------------------------------------------------

    async def principal_for(
        self,
        user: User,
        via: str,
        groups: tuple[str, ...] = (),
        extra: tuple[Grant, ...] = (),
    ) -> Principal:
        """``user`` with every scope their role has: their ACL rows, the
        ``default_grants``, the ``group_grants`` of ``groups`` and ``extra``."""
        return Principal(
            user.id, user.name, user.role, await self.grants_of(user, groups, extra), via=via
        )

    async def grants_of(
        self, user: User, groups: tuple[str, ...] = (), extra: tuple[Grant, ...] = ()
    ) -> tuple[Grant, ...]:
        """Everything ``user`` may read and write through a credential that names
        ``groups`` and carries ``extra`` grants (a JWT's claim), ACL rows included."""
        stored = await self.store.grants(user.id)
        if self.rules.empty and not extra:
            return stored
        return tuple(dict.fromkeys((*stored, *self.rules.for_user(user.name, groups), *extra)))

    async def external_user(self, name: str, via: str, *, source: str | None = None) -> User:
        """The user an external identity names (a JWT, single sign-on, the proxy
        header): found, or created (role ``user``, no password) when
        ``auto_create_users`` is on. ``source`` says where the name came from for
        the error message (e.g. "the JWT claim 'sub'"). Raises :class:`Unauthorized`:
        the name is not a usable user name, or the user does not exist and may not
        be created. Two first requests of the same new user at once both succeed."""
        where = source or f"the {via} identity"
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            shown = repr(name[:70]) if isinstance(name, str) else "a non-string value"
            raise Unauthorized(
                f"{where} holds {shown}, which is not a usable user name: user names are "
                f"{NAME_RULE} (set the claim or header to one that is)"
            )
        if name in SYSTEM_USERS:
            raise Unauthorized(
                f"{where} names {name!r}, an account notifyd keeps for itself: it cannot "
                "be signed in to"
            )
        user = await self.store.get_user(name)
        if user is not None:
            return user
        if not self.config.auto_create_users:
            raise Unauthorized(
                f"no user named {name!r}: auto_create_users is off; an admin creates users "
                "with `notifyd users add`"
            )
        try:
            return await self.store.create_user(name, "user", None)
        except Conflict:  # created meanwhile (another request, another node)
            user = await self.store.get_user(name)
            if user is None:  # created and removed at once: say so rather than guess
                raise Unauthorized(f"the user {name!r} was removed meanwhile") from None
            return user

    async def authenticate_token(self, token: str) -> Principal:
        """The principal of a bearer credential: a notifyd token (``nfy_…``, or one of
        Gotify's form) or a JWT from ``jwt_issuer`` (told apart by shape). Every door
        that takes a token comes here. Raises :class:`Unauthorized`."""
        if not is_token(token):
            if looks_like_jwt(token):
                return await self.authenticate_jwt(token)
            raise Unauthorized(
                "that is not a notifyd token (they start with 'nfy_', or are the "
                "15 characters of a token made through the Gotify API)"
            )
        digest = hash_token(token)
        hit = self._cache.get(digest)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            if hit[1].token_id is not None:
                self.token_uses[hit[1].token_id] = time.time()
            return hit[1]
        generation = self._generation
        tok = await self.store.token_by_hash(digest)
        if tok is None:
            raise Unauthorized("unknown or revoked token")
        user = await self.store.get_user_by_id(tok.user_id)
        if user is None:
            raise Unauthorized("unknown or revoked token")
        grants = await self.grants_of(user)
        principal = Principal(
            user.id, user.name, user.role, grants, frozenset(tok.scopes), tok.topics, tok.id
        )
        self._remember(digest, principal, generation)
        self.token_uses[tok.id] = time.time()
        return principal

    async def authenticate_jwt(self, token: str) -> Principal:
        """The principal of a JWT from ``jwt_issuer`` (see :mod:`.jwt` for what is
        checked): the user its ``jwt_user_claim`` names (created on first sight
        when ``auto_create_users``), with their ACL rows, the grants of its
        ``jwt_grants_claim``, ``default_grants`` and the ``group_grants`` of its
        ``jwt_groups_claim``; its role from the grants claim if it says one; its
        scopes from ``scope`` (:func:`.identity.scopes_from_claim`). Remembered
        until it expires or :data:`CACHE_TTL` passes, whichever is first, and
        forgotten on any account change like the rest."""
        if self.jwt is None:
            raise Unauthorized(
                "this server accepts no JWTs (jwt_issuer is not set): use a notifyd token (nfy_…)"
            )
        if len(token) > MAX_TOKEN:
            raise Unauthorized(f"the token is longer than {MAX_TOKEN // 1024} KiB")
        key = "jwt:" + hash_token(token)
        hit = self._cache.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        generation = self._generation
        verified = await self.jwt.verify(token)
        principal = await self._jwt_principal(verified.claims)
        principal.expires_at = verified.expires_at + self.jwt.leeway
        self._remember(key, principal, generation, principal.expires_at - time.time())
        return principal

    async def _jwt_principal(self, claims: dict[str, object]) -> Principal:
        cfg = self.config
        name = claims.get(cfg.jwt_user_claim)
        if not isinstance(name, str):
            raise Unauthorized(
                f"the token has no {cfg.jwt_user_claim!r} claim naming the user (jwt_user_claim)"
            )
        extra, role = grants_from_claim(claims.get(cfg.jwt_grants_claim), cfg.jwt_grants_claim)
        groups = groups_from_claim(claims.get(cfg.jwt_groups_claim), cfg.jwt_groups_claim)
        user = await self.external_user(
            name, "jwt", source=f"the token's claim {cfg.jwt_user_claim!r}"
        )
        role = role or user.role
        grants = await self.grants_of(user, groups, extra)
        scopes = scopes_from_claim(claims.get("scope"), role)
        return Principal(user.id, user.name, role, grants, scopes, via="jwt")

    async def proxy_principal(self, name: str, groups: tuple[str, ...]) -> Principal:
        """The principal a trusted reverse proxy names (``proxy_user_header``, and
        ``proxy_groups_header``'s groups): like a web session, every scope the
        role has; users are created on first sight as for JWTs. The caller has
        made sure the proxy is trusted (``trusted_proxies``)."""
        groups = clean_groups(groups)
        key = "proxy:" + "\0".join((name[:200], *groups))
        hit = self._cache.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        generation = self._generation
        user = await self.external_user(
            name, "proxy", source=f"the header {self.config.proxy_user_header}"
        )
        principal = await self.principal_for(user, "proxy", groups)
        self._remember(key, principal, generation)
        return principal

    # -- web sessions --------------------------------------------------------------

    async def create_session(
        self, user: User, user_agent: str | None, days: float, groups: tuple[str, ...] = ()
    ) -> str:
        """Start a web session for ``user``; returns its secret (the cookie value).
        ``groups``: what the sign-in said the user is a member of (single sign-on);
        their ``group_grants`` hold for as long as the session lasts."""
        secret = SESSION_PREFIX + secrets.token_urlsafe(30)
        await self.store.create_session(
            user.id,
            hash_token(secret),
            (user_agent or "")[:200] or None,
            time.time() + days * 86400,
            clean_groups(groups),
        )
        return secret

    async def authenticate_session(self, secret: str) -> Principal:
        """The principal of a live session: the user with every scope their role has."""
        if not secret.startswith(SESSION_PREFIX):
            raise Unauthorized("not a notifyd session; sign in again")
        digest = hash_token(secret)
        key = "session:" + digest
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        generation = self._generation
        found = await self.store.session(digest, time.time())
        user = None if found is None else await self.store.get_user_by_id(found[0])
        if user is None or found is None:
            raise Unauthorized("the session has ended; sign in again")
        principal = await self.principal_for(user, "session", found[1])
        self._remember(key, principal, generation)
        return principal

    async def end_session(self, secret: str) -> None:
        await self.store.delete_session(hash_token(secret))
        self.store.signal({"kind": "forget", "key": "session:" + hash_token(secret)})

    @staticmethod
    def csrf_token(secret: str) -> str:
        """The anti-CSRF value of a session: derived from its secret, so nothing more is
        stored, and only a page that could read a same-origin response can know it."""
        return hashlib.sha256(b"csrf:" + secret.encode()).hexdigest()[:32]

    async def flush_token_uses(self) -> int:
        """Write the last-use times noted since the previous flush."""
        if not self.token_uses:
            return 0
        uses, self.token_uses = self.token_uses, {}
        await self.store.touch_tokens(list(uses.items()))
        return len(uses)

    async def socket_principal(self, name: str) -> Principal:
        hit = self._cache.get("socket:" + name)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        generation = self._generation
        user = await self.store.get_user(name)
        if user is None:
            raise Unauthorized(f"the socket user {name!r} does not exist")
        principal = await self.principal_for(user, "socket")
        self._remember("socket:" + name, principal, generation)
        return principal

    async def authenticate_password(
        self, name: str, password: str, via: str, address: str
    ) -> Principal:
        """The principal of a user name and password (HTTP Basic in the compatibility
        layers): the user with every scope their role has, like a web session.
        Failures from ``address`` are throttled like the web sign-in's
        (:class:`RateLimited` once used up).

        Phone apps send the password with every request, and argon2 is slow on
        purpose, so a success is remembered for :data:`CACHE_TTL` seconds under a
        keyed digest of the pair (never the password itself); any account change,
        a new password included, forgets it. Raises :class:`Unauthorized`."""
        name, password = name[:64], password[:1024]
        # A remembered success is the right password, not a guess: it skips the
        # throttle (no database round trip per phone request on a cluster), and
        # it does not clear the failures a guesser elsewhere piles up meanwhile.
        digest = hmac.new(self._password_key, f"{name}\0{password}".encode(), hashlib.sha256)
        key = "password:" + digest.hexdigest()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        async with self.signin.attempt(name, address):
            generation = self._generation
            user = await self.check_password(name, password)
            principal = await self.principal_for(user, via)
            self._remember(key, principal, generation)
            return principal

    async def check_password(self, name: str, password: str) -> User:
        row = await self.store.password_hash(name)
        if row is None:
            # spend the same time as a real check so names cannot be probed
            await trio.to_thread.run_sync(lambda: _hasher.hash(password), limiter=_argon_limiter)
            raise Unauthorized("wrong user name or password")
        user_id, stored = row

        def verify() -> bool:
            try:
                return _hasher.verify(stored, password)
            except (VerificationError, InvalidHashError):
                return False

        if not await trio.to_thread.run_sync(verify, limiter=_argon_limiter):
            raise Unauthorized("wrong user name or password")
        user = await self.store.get_user_by_id(user_id)
        assert user is not None
        return user

    # -- users -----------------------------------------------------------------

    async def ensure_user(self, name: str, role: str = "admin") -> tuple[User, bool]:
        user = await self.store.get_user(name)
        if user is not None:
            return user, False
        return await self.store.create_user(check_name(name), role, None), True

    async def create_user(self, name: str, role: str, password: str | None) -> User:
        check_name(name)
        if role not in ("admin", "user"):
            raise ValidationFailed("role must be 'admin' or 'user'", field="role")
        digest = None
        if password is not None:
            digest = await self._hash_password(password)
        return await self.store.create_user(name, role, digest)

    async def _hash_password(self, password: str) -> str:
        if not 8 <= len(password) <= 1024:
            raise ValidationFailed("passwords are 8–1024 characters", field="password")
        return await trio.to_thread.run_sync(lambda: _hasher.hash(password), limiter=_argon_limiter)

    async def change_password(
        self,
        caller: Principal,
        name: str,
        password: str,
        current: str | None,
        *,
        address: str = "local",
        session: str | None = None,
    ) -> None:
        """Set a password on behalf of ``caller``: over the socket, or by an admin
        for someone else, without the current one; a user's own password only with
        the current one (a stolen session or an ``account`` token must not lock the
        owner out and take over). Wrong guesses count like failed sign-ins.

        Every web session of the user ends but ``session`` (the secret of the
        session making the change, which stays signed in)."""
        own = name == caller.name
        if not own:
            caller.require_admin()
        elif caller.via != "socket":
            caller.require_account()
            if current is None:
                raise Forbidden(
                    "changing your own password needs your current password in 'current_password'",
                    field="current_password",
                )
            try:
                async with self.signin.attempt(name, address):
                    await self.check_password(name, current)
            except Unauthorized:
                # 403, not 401: the caller is signed in, only this check failed
                raise Forbidden(
                    "the current password is wrong (a user without a password gets "
                    "one from an admin)",
                    field="current_password",
                ) from None
        user = await self.store.get_user(name)
        if user is None:
            raise NotFound(f"no user named {name!r}", field="name")
        keep = hash_token(session) if session is not None and own else None
        await self.store.set_password(name, await self._hash_password(password), keep)
        # remembered passwords (authenticate_password) and ended sessions no longer
        # hold; streams close and reconnect with whatever credential still works
        self._invalidate(user.id)

    async def delete_user(self, name: str, *, keep: str | None = None) -> None:
        """Remove ``name`` and everything that is theirs (see :meth:`Store.delete_user`)
        at once: their tokens and sessions stop working and their streams close.
        ``keep``: a user that must not be removed (the socket's), refused with 409."""
        if keep is not None and name == keep:
            raise Conflict(
                f"{name!r} is the socket_user: the Unix socket acts as this user; "
                "set another socket_user in the config first",
                field="name",
            )
        user = await self.store.get_user(name)
        await self.store.delete_user(name)
        self._invalidate(user.id if user else None)

    # -- tokens ------------------------------------------------------------------

    async def create_token(
        self,
        caller: Principal,
        user_name: str,
        scopes: list[str] | None,
        topics: str | None,
        label: str | None,
        *,
        form: TokenForm = "nfy",
    ) -> tuple[str, Token]:
        """A new token of ``user_name`` on behalf of ``caller``: its secret (shown this
        once) and what is stored. ``form``: ``nfy_…``, or Gotify's application
        (``A…``) or client (``C…``) form; every form works the same everywhere."""
        user = await self.store.get_user(user_name)
        if user is None:
            raise NotFound(f"no user named {user_name!r}", field="user")
        if user.id != caller.user_id:
            caller.require_admin()
        else:
            caller.require_account()
        if scopes is None:
            scopes = ["publish", "subscribe"] + (["admin"] if user.role == "admin" else [])
        parsed = parse_scopes(scopes)
        if "admin" in parsed and user.role != "admin":
            raise ValidationFailed(
                "only admin users can hold tokens with scope 'admin'", field="scopes"
            )
        if topics is not None:
            try:
                topics = check_pattern(topics)  # normalised: what is stored is what matches
            except ValueError as exc:
                raise ValidationFailed(str(exc), field="topics") from None
        if not caller.can_grant(parsed, topics):
            # A narrowed credential may hand out only what it holds itself.
            wider = sorted(set(parsed) - caller.scopes)
            if wider:
                raise Forbidden(
                    f"this token's scopes are {', '.join(sorted(caller.scopes))}: it cannot "
                    f"create a token with {', '.join(wider)}",
                    field="scopes",
                )
            raise Forbidden(
                f"this token is limited to topics {caller.token_pattern!r}: new tokens must "
                "be limited to that pattern or a narrower one",
                field="topics",
            )
        if label is not None and len(label) > 64:
            raise ValidationFailed("labels are at most 64 characters", field="label")
        secret, prefix = new_secret(form)
        token = await self.store.create_token(
            user.id, hash_token(secret), prefix, parsed, topics, label
        )
        return secret, token

    async def revoke_token(self, caller: Principal, token_id: int) -> None:
        # Any token may revoke itself (signing out, e.g. the Gotify app): that only
        # narrows. Revoking others needs the account scope.
        if token_id != caller.token_id:
            caller.require_account()
        owner = None if caller.is_admin and "admin" in caller.scopes else caller.user_id
        self._invalidate(await self.store.revoke_token(token_id, owner))

    # -- acl -----------------------------------------------------------------------

    async def grant(self, user: str, pattern: str, permission: str) -> AclEntry:
        try:
            pattern = check_pattern(pattern)  # "a**" and "a*" are one grant
        except ValueError as exc:
            raise ValidationFailed(str(exc), field="pattern") from None
        modes = {"read": (True, False), "write": (False, True), "rw": (True, True)}
        if permission not in modes:
            raise ValidationFailed("permission must be read, write or rw", field="permission")
        entry = await self.store.grant(user, pattern, *modes[permission])
        target = await self.store.get_user(user)
        self._invalidate(target.id if target else None)
        return entry

    async def revoke(self, user: str, pattern: str) -> None:
        await self.store.revoke_acl(user, pattern)
        target = await self.store.get_user(user)
        self._invalidate(target.id if target else None)
