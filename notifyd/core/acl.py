"""Who may read and write which topics.

A :class:`Principal` is the caller of an operation: a user, seen through the
credential it used (a token narrows the user's rights by scopes and an optional
topic pattern; the Unix socket and a web session carry the user's full rights).
ACL patterns are globs where ``*`` matches any run of characters, ``/`` included.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import Forbidden
from .globs import glob_match  # also re-exported: callers import it from here

SCOPES = ("publish", "subscribe", "admin")


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
    via: str = "token"  # "token" | "socket" | "session"
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
