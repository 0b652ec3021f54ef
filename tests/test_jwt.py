"""Identity from the application (issue 16 §1): JWTs as bearer credentials, and the
identity core every external identity uses (users created on first sight,
``default_grants`` with ``{user}``, ``group_grants``, a session's groups).

The core is tested in process on a real SQLite store; the JWT doors against a real
daemon and a real JWKS server over HTTP (tests/jwks.py), with keys made per run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from notifyd.core.accounts import Accounts
from notifyd.core.config import Config
from notifyd.core.errors import Unauthorized
from notifyd.core.storage import open_store
from notifyd.core.store import Store

# -- the identity core (in process) ----------------------------------------------------


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = open_store(Config(data_dir=str(tmp_path), database_url=f"sqlite://{tmp_path}/id.db"))
    await s.start()
    try:
        yield s
    finally:
        await s.close()


def accounts(store: Store, **settings: object) -> Accounts:
    return Accounts(store, None, Config(**settings))  # type: ignore[arg-type]


@pytest.mark.trio
async def test_external_users_are_created_once_even_when_first_seen_twice_at_once(
    store: Store,
) -> None:
    acc = accounts(store)
    seen = []

    async def sight() -> None:
        seen.append(await acc.external_user("4f9a8c1e-2b7d-4e55-9a31-0c6f1d2e8b77", "jwt"))

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(sight)
    assert len({u.id for u in seen}) == 1
    user = seen[0]
    assert user.role == "user"
    assert await store.password_hash(user.name) is None  # no password: signs in only externally


@pytest.mark.trio
async def test_external_user_refusals_say_why(store: Store) -> None:
    acc = accounts(store)
    with pytest.raises(Unauthorized, match="the JWT claim 'sub'.*not a usable user name"):
        await acc.external_user("Alice@Example.com", "jwt", source="the JWT claim 'sub'")
    off = accounts(store, auto_create_users=False)
    with pytest.raises(Unauthorized, match="auto_create_users is off.*notifyd users add"):
        await off.external_user("bob", "proxy")
    await acc.create_user("bob", "user", None)
    assert (await off.external_user("bob", "proxy")).name == "bob"


@pytest.mark.trio
async def test_rule_grants_reach_every_credential_and_are_limited_like_acl_rows(
    store: Store,
) -> None:
    acc = accounts(
        store,
        default_grants=["user/{user}/*:read", "announce:write"],
        group_grants={"ops": ["alerts/*:rw"]},
    )
    alice = await acc.create_user("alice", "user", None)
    await acc.grant("alice", "own/*", "rw")
    # a session signed in with groups keeps them; one without has none
    with_ops = await acc.authenticate_session(await acc.create_session(alice, None, 1, ("ops",)))
    plain = await acc.authenticate_session(await acc.create_session(alice, None, 1))
    for p in (with_ops, plain):
        assert p.can_read("user/alice/inbox") and not p.can_write("user/alice/inbox")
        assert not p.can_read("user/bob/inbox") and not p.can_read("user/alice")
        assert p.can_write("announce") and not p.can_read("announce")
        assert p.can_read("own/x") and p.can_write("own/x")  # ACL rows still count
    assert with_ops.can_write("alerts/disk") and with_ops.can_read("alerts/disk")
    assert not plain.can_read("alerts/disk")
    # a token narrowed to publishing does not read through the rules either
    from notifyd.core.acl import Principal

    socket = await acc.socket_principal("alice")
    assert socket.can_read("user/alice/x")
    caller = Principal(alice.id, "alice", "user", via="socket")
    _, token = await acc.create_token(caller, "alice", ["publish"], None, None)
    secret, _ = await acc.create_token(caller, "alice", ["publish"], "user/*", None)
    p = await acc.authenticate_token(secret)
    assert not p.can_read("user/alice/x") and not p.can_write("announce")
    assert token.scopes == ("publish",)
