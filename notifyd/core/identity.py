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

from .acl import Grant
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
