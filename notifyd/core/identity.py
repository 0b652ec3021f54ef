"""Grants that come from configuration rather than ACL rows.

An application that already knows its users should not have to mirror one ACL row
per user into notifyd. Two settings give rights by rule instead:

- ``default_grants``: held by every user, whatever credential they use (a token, a
  session, a password, the socket, a JWT, the proxy header). ``{user}`` in a
  pattern is the user's name, so ``"user/{user}/*:read"`` gives everyone an inbox
  topic of their own. User names are topic-safe (``[a-z0-9_.-]``, see
  :data:`.accounts.NAME_RE`), so the substitution cannot smuggle a ``*`` or a
  ``/`` into the pattern.
- ``group_grants``: held by the members of a group, for as long as the credential
  that says so lasts (a JWT's groups claim, a web session signed in through single
  sign-on, the proxy's groups header).

Both become ordinary :class:`.acl.Grant` values on the :class:`.acl.Principal`, so
they are limited exactly like ACL rows (and a token's scopes and topic pattern
still narrow them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .acl import SCOPES, Grant
from .errors import Unauthorized
from .models import check_pattern

#: the placeholder in a ``default_grants`` / ``group_grants`` pattern
USER_PLACEHOLDER = "{user}"
PERMISSIONS = {"read": (True, False), "write": (False, True), "rw": (True, True)}
#: groups read from one credential at most (a hostile header or claim can be long)
MAX_GROUPS = 100
#: a group name's length at most
MAX_GROUP_NAME = 200


def parse_grant(setting: str) -> tuple[str, bool, bool]:
    """``"PATTERN:read|write|rw"`` → (pattern template, read, write). Raises
    ``ValueError`` with a message naming what is wrong. The pattern is checked with
    a sample name in place of ``{user}``."""
    pattern, sep, perm = setting.rpartition(":")
    if not sep or perm not in PERMISSIONS or not pattern:
        raise ValueError(f"{setting!r} is not PATTERN:read, PATTERN:write or PATTERN:rw")
    check_pattern(pattern.replace(USER_PLACEHOLDER, "user"))
    return (pattern, *PERMISSIONS[perm])


def _expand(template: str, read: bool, write: bool, user: str) -> Grant:
    pattern = template.replace(USER_PLACEHOLDER, user) if USER_PLACEHOLDER in template else template
    # normalised like a stored ACL row; checked at start with a sample name, and a
    # user name is topic-safe, so this cannot fail for a real user
    return Grant(check_pattern(pattern, stored=True), read, write)


def clean_groups(groups: Iterable[object]) -> tuple[str, ...]:
    """The usable group names among ``groups``: strings, stripped, non-empty, of
    sane length, without duplicates, at most :data:`MAX_GROUPS`."""
    out: dict[str, None] = {}
    for group in groups:
        if not isinstance(group, str):
            continue
        group = group.strip()
        if group and len(group) <= MAX_GROUP_NAME:
            out[group] = None
            if len(out) >= MAX_GROUPS:
                break
    return tuple(out)


@dataclass(frozen=True)
class GrantRules:
    """``default_grants`` and ``group_grants``, parsed once (see the module docstring)."""

    defaults: tuple[tuple[str, bool, bool], ...] = ()
    groups: dict[str, tuple[tuple[str, bool, bool], ...]] = field(default_factory=dict)

    @classmethod
    def from_settings(
        cls, default_grants: Iterable[str], group_grants: dict[str, list[str]]
    ) -> GrantRules:
        """Raises ``ValueError`` for a malformed entry (the config check runs this
        at start, so the daemon never meets one)."""
        return cls(
            defaults=tuple(parse_grant(g) for g in default_grants),
            groups={
                group: tuple(parse_grant(g) for g in grants)
                for group, grants in group_grants.items()
            },
        )

    @property
    def empty(self) -> bool:
        return not self.defaults and not self.groups

    def for_user(self, name: str, groups: Iterable[str] = ()) -> tuple[Grant, ...]:
        """The grants ``name`` holds by rule, as a member of ``groups``."""
        out = [_expand(t, r, w, name) for t, r, w in self.defaults]
        for group in groups:
            for t, r, w in self.groups.get(group, ()):
                out.append(_expand(t, r, w, name))
        return tuple(dict.fromkeys(out))


def grants_from_claim(value: object, claim: str) -> tuple[tuple[Grant, ...], str | None]:
    """The grants and the role a JWT's grants claim (``jwt_grants_claim``) gives:
    ``{"read": [patterns], "write": [patterns], "role": "user" | "admin"}``, every
    key optional. Absent (``None``): nothing. Raises :class:`Unauthorized` naming
    the claim for any other shape: an issuer's mistake must not widen or silently
    narrow what a token does."""
    if value is None:
        return (), None
    if not isinstance(value, dict):
        raise Unauthorized(f"the token's {claim!r} claim must be an object")
    unknown = sorted(k for k in value if k not in ("read", "write", "role"))
    if unknown:
        raise Unauthorized(
            f"the token's {claim!r} claim has unknown keys ({', '.join(unknown)[:60]}): "
            "it takes read, write and role"
        )
    role = value.get("role")
    if role is not None and role not in ("user", "admin"):
        raise Unauthorized(f"the token's {claim!r} claim: role must be 'user' or 'admin'")
    grants: list[Grant] = []
    for mode in ("read", "write"):
        patterns = value.get(mode, [])
        if not isinstance(patterns, list) or len(patterns) > MAX_GROUPS:
            raise Unauthorized(
                f"the token's {claim!r} claim: {mode} must be a list of topic patterns"
            )
        for pattern in patterns:
            try:
                checked = check_pattern(pattern)
            except ValueError:
                shown = repr(pattern[:40]) if isinstance(pattern, str) else "a non-string"
                raise Unauthorized(
                    f"the token's {claim!r} claim: {mode} holds {shown}, not a topic pattern"
                ) from None
            grants.append(Grant(checked, mode == "read", mode == "write"))
    return tuple(grants), role


def groups_from_claim(value: object, claim: str) -> tuple[str, ...]:
    """The groups a JWT's groups claim names: a list of strings, or one string.
    Absent: none. Raises :class:`Unauthorized` naming the claim for other shapes."""
    if value is None:
        return ()
    if isinstance(value, str):
        return clean_groups([value])
    if isinstance(value, list) and all(isinstance(g, str) for g in value[:MAX_GROUPS]):
        return clean_groups(value[:MAX_GROUPS])
    raise Unauthorized(f"the token's {claim!r} claim must be a list of group names")


def scopes_from_claim(value: object, role: str) -> frozenset[str]:
    """What a JWT may do, from its ``scope`` claim (a space-separated string, or a
    list). When it names any of notifyd's scopes, exactly those (``admin`` only for
    an admin); when it is absent or names none of ours (an identity provider's
    ``openid profile email``), every scope, like a web session: the grants and the
    role still bound what the token reaches."""
    if isinstance(value, str):
        named = set(value.split()[:MAX_GROUPS])
    elif isinstance(value, list):
        named = {s for s in value[:MAX_GROUPS] if isinstance(s, str)}
    else:
        named = set()
    ours = named & set(SCOPES)
    if not ours:
        return frozenset(SCOPES)
    if role != "admin":
        ours.discard("admin")
    return frozenset(ours)
