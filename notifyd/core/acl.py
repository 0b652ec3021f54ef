"""Who may read and write which topics.

A :class:`Principal` is the caller of an operation: a user, seen through the
credential it used (a token narrows the user's rights by scopes and an optional
topic pattern; the Unix socket and a web session carry the user's full rights).
Its grants are the user's ACL rows plus the rule grants of :mod:`.identity` and,
for a JWT, those of its claims.
ACL patterns are globs where ``*`` matches any run of characters, ``/`` included.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from .errors import Forbidden
from .globs import glob_match as glob_match  # also re-exported: callers import it from here

#: ``account``: change the user's own account (password, tokens, channels, push
#: subscriptions, preferences). ``admin`` on an admin user implies every scope.
SCOPES = ("publish", "subscribe", "account", "admin")


@dataclass(frozen=True)
class Grant:
    pattern: str
    read: bool
    write: bool


@dataclass(frozen=True)
class Visibility:
    """The set of topics a principal may read, in a form a store can turn into a query.

    ``everything``: no restriction. Otherwise a topic is visible when it matches one
    of ``any_of`` and, if set, also ``also_matching`` (a token's topic pattern).
    """

    everything: bool
    any_of: tuple[str, ...] = ()
    also_matching: str | None = None

    def allows(self, topic: str) -> bool:
        if self.also_matching is not None and not glob_match(self.also_matching, topic):
            return False
        if self.everything:
            return True
        return any(glob_match(p, topic) for p in self.any_of)

    @property
    def empty(self) -> bool:
        return not self.everything and not self.any_of


@dataclass
class Principal:
    user_id: int
    name: str
    role: str  # "admin" | "user"
    grants: tuple[Grant, ...] = ()
    scopes: frozenset[str] = frozenset(SCOPES)
    token_pattern: str | None = None
    token_id: int | None = None
    via: str = "token"  # "token" | "socket" | "session" | "basic" | "jwt" | "proxy"
    #: when the credential stops being valid (unix time; a JWT's exp plus leeway),
    #: for what outlives a request (streams); None: until revoked
    expires_at: float | None = None
    _cache: dict[tuple[str, str], bool] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def _allowed(self, topic: str, mode: str) -> bool:
        key = (mode, topic)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        scope = "publish" if mode == "write" else "subscribe"
        ok = scope in self.scopes or "admin" in self.scopes
        if ok and self.token_pattern is not None:
            ok = glob_match(self.token_pattern, topic)
        if ok and not self.is_admin:
            ok = any(
                (g.write if mode == "write" else g.read) and glob_match(g.pattern, topic)
                for g in self.grants
            )
        if len(self._cache) < 10_000:
            self._cache[key] = ok
        return ok

    def can_read(self, topic: str) -> bool:
        return self._allowed(topic, "read")

    def can_write(self, topic: str) -> bool:
        return self._allowed(topic, "write")

    def visibility(self) -> Visibility:
        if "subscribe" not in self.scopes and "admin" not in self.scopes:
            return Visibility(everything=False)
        if self.is_admin:
            return Visibility(everything=True, also_matching=self.token_pattern)
        return Visibility(
            everything=False,
            any_of=tuple(g.pattern for g in self.grants if g.read),
            also_matching=self.token_pattern,
        )

    def require_write(self, topic: str) -> None:
        if not self.can_write(topic):
            raise Forbidden(f"not allowed to publish to topic {topic!r}", field="topic")

    def require_read(self, topic: str) -> None:
        if not self.can_read(topic):
            raise Forbidden(f"not allowed to read topic {topic!r}", field="topic")

    def require_admin(self) -> None:
        if not self.is_admin or "admin" not in self.scopes:
            raise Forbidden("this needs an admin (an admin user, with a token of scope 'admin')")

    @property
    def can_change_account(self) -> bool:
        """True for the socket, a web session, a password, a token with scope
        ``account``, and an admin's token with scope ``admin`` (it manages every
        user's account already, this one included)."""
        return "account" in self.scopes or (self.is_admin and "admin" in self.scopes)

    def require_account(self) -> None:
        """Account changes (password, tokens, channels, push subscriptions,
        preferences) widen or redirect what the user's credentials reach, so a
        token narrowed to publishing or reading may not make them."""
        if not self.can_change_account:
            raise Forbidden(
                "changing the account (password, tokens, channels, push subscriptions, "
                "preferences) needs the 'account' scope: use a token with scope 'account', "
                "the web page's session or the Unix socket"
            )

    def can_grant(self, scopes: Collection[str], pattern: str | None) -> bool:
        """May this credential create a token with ``scopes`` and topic ``pattern``?
        Only if the new token is no wider: its scopes are among this one's and its
        pattern lies within this one's (``None`` = every topic). Sessions, the socket
        and passwords hold every scope and no pattern; an admin's ``admin`` scope
        already manages every account, so its pattern does not bind what it grants.
        Whether the owner may hold the scopes (``admin``) is checked elsewhere."""
        if self.is_admin and "admin" in self.scopes:
            return True
        if not set(scopes) <= self.scopes:
            return False
        if self.token_pattern is None:
            return True
        # Every topic the new pattern matches is matched by ours if ours matches the
        # new pattern read as a plain string: its '*' can only fall inside what one
        # of our '*' covers (our literal pieces hold no '*'), so any expansion of it
        # is covered too.
        return pattern is not None and glob_match(self.token_pattern, pattern)
