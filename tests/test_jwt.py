"""Identity from the application (issue 16 §1): JWTs as bearer credentials, and the
identity core every external identity uses (users created on first sight,
``default_grants`` with ``{user}``, ``group_grants``, a session's groups).

The core is tested in process on a real SQLite store; the JWT doors against a real
daemon and a real JWKS server over HTTP (tests/jwks.py), with keys made per run.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import jwks
import pytest
import trio
import trio_websocket
from conftest import Daemon, wait_for
from joserfc.jwk import OctKey, RSAKey

from notifyd.core.accounts import Accounts
from notifyd.core.config import Config
from notifyd.core.doctor import check_jwks
from notifyd.core.errors import Unauthorized
from notifyd.core.jwt import FetchFailed, JwtVerifier, KeyFileError, load_key_file, parse_key_set
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


# -- PEM key files (in process: the verifier alone) --------------------------------------


@pytest.mark.trio
async def test_pem_keys_of_each_kind_verify_and_refuse_algorithm_confusion(
    tmp_path: Path,
) -> None:
    for name, key in jwks.new_keys().items():
        pem = tmp_path / f"{name}.pem"
        pem.write_bytes(key.as_pem(private=False))
        verifier = JwtVerifier(
            jwks.ISSUER, jwks.AUDIENCE, 30, key=load_key_file(str(pem), secret=False)
        )
        verified = await verifier.verify(jwks.mint(key, "pem-user"))
        assert verified.claims["sub"] == "pem-user"
        if isinstance(key, RSAKey):
            forged = jwks.forge_hs256(key, jwks.claims("mallory"))
            with pytest.raises(Unauthorized, match="algorithm 'HS256' does not fit"):
                await verifier.verify(forged)
    short = tmp_path / "short.secret"
    short.write_bytes(b"too short\n")
    with pytest.raises(KeyFileError, match="at least 32 bytes"):
        load_key_file(str(short), secret=True)
    with pytest.raises(KeyFileError, match="not a PEM public key"):
        load_key_file(str(short), secret=False)


@pytest.mark.trio
async def test_a_jwt_principal_knows_when_it_ends_and_is_forgotten_on_changes(
    store: Store, tmp_path: Path
) -> None:
    key = jwks.new_keys()["ed"]
    pem = tmp_path / "ed.pem"
    pem.write_bytes(key.as_pem(private=False))
    acc = accounts(
        store, jwt_issuer=jwks.ISSUER, jwt_audience=jwks.AUDIENCE, jwt_public_key_file=str(pem)
    )
    exp = int(time.time()) + 120
    token = jwks.mint(key, "lena", exp=exp)
    first = await acc.authenticate_token(token)
    assert first.via == "jwt" and first.expires_at == exp + 30  # exp + leeway
    assert await acc.authenticate_token(token) is first  # remembered
    acc.hear_signal({"kind": "rights", "user": first.user_id})
    assert await acc.authenticate_token(token) is not first  # forgotten on a change
    with pytest.raises(Unauthorized, match="no JWTs"):
        await accounts(store).authenticate_token(token)


# -- a daemon trusting a JWKS server ------------------------------------------------------

GRANTS = {"default_grants": ["user/{user}/*:read"], "group_grants": {"ops": ["alerts/*:rw"]}}


def _toml(settings: dict[str, object]) -> str:
    """A config file: scalars and lists first, then one table per dict."""
    plain = {k: v for k, v in settings.items() if not isinstance(v, dict)}
    lines = [f"{k} = {json.dumps(v)}" for k, v in plain.items()]
    for k, v in settings.items():
        if isinstance(v, dict):
            lines.append(f"[{k}]")
            lines += [f"{json.dumps(name)} = {json.dumps(value)}" for name, value in v.items()]
    return "\n".join(lines) + "\n"


def start_daemon(folder: Path, settings: dict[str, object]) -> Daemon:
    folder.mkdir(exist_ok=True)
    config = folder / "notifyd.toml"
    config.write_text(_toml(settings))
    data = folder / "data"
    data.mkdir()
    return Daemon(data, extra_args=["--config", str(config)]).start()


@pytest.fixture(scope="module")
def keys() -> dict[str, Any]:
    return jwks.new_keys()


@pytest.fixture(scope="module")
def issuer(keys: dict[str, Any]) -> Iterator[jwks.JwksServer]:
    with jwks.JwksServer(list(keys.values())) as server:
        yield server


@pytest.fixture(scope="module")
def jwt_daemon(
    tmp_path_factory: pytest.TempPathFactory, issuer: jwks.JwksServer
) -> Iterator[Daemon]:
    d = start_daemon(
        tmp_path_factory.mktemp("jwt"),
        {
            "jwt_issuer": jwks.ISSUER,
            "jwt_audience": jwks.AUDIENCE,
            "jwt_jwks_url": issuer.url,
            **GRANTS,
        },
    )
    try:
        yield d
    finally:
        d.stop()


def publish(d: Daemon, token: str, topic: str, **kw: Any) -> httpx.Response:
    with d.http(token) as c:
        return c.post("/v1/events", json={"topic": topic, "title": "hi", **kw})


def refused(r: httpx.Response, words: str) -> None:
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == "unauthorized"
    assert words in r.json()["error"]["message"], r.json()


def basic(password: str, user: str = "") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def first_sse_event(d: Daemon, token: str, topics: str) -> dict[str, Any]:
    def read() -> dict[str, Any]:
        params = {"token": token, "topics": topics, "since": "0"}
        with httpx.stream("GET", d.url + "/v1/stream/sse", params=params, timeout=10) as r:
            assert r.status_code == 200, r.read()
            for line in r.iter_lines():
                if line.startswith("data:"):
                    frame = json.loads(line[5:])
                    if frame["type"] == "event":
                        return frame["event"]
        raise AssertionError("the stream ended without an event")

    return await trio.to_thread.run_sync(read)


async def first_ws_event(d: Daemon, token: str, topics: str) -> dict[str, Any]:
    url = (
        d.url.replace("http://", "ws://")
        + "/v1/stream?"
        + urlencode({"token": token, "topics": topics, "since": "0"})
    )
    async with trio_websocket.open_websocket_url(url, connect_timeout=10) as ws:
        with trio.fail_after(10):
            while True:
                frame = json.loads(await ws.get_message())
                if frame["type"] == "event":
                    return frame["event"]


@pytest.mark.trio
async def test_a_jwt_is_accepted_on_every_door(jwt_daemon: Daemon, keys: dict[str, Any]) -> None:
    d = jwt_daemon
    grants = {"notifyd": {"read": ["doors*"], "write": ["doors*"]}}
    rsa, ec, ed = (jwks.mint(keys[k], "door-user", **grants) for k in ("rsa", "ec", "ed"))
    # notifyd: Bearer publish (each key kind), then both streams with ?token=
    for token in (rsa, ec, ed):
        r = publish(d, token, "doors/a")
        assert r.status_code == 201, r.text
    event = r.json()
    assert (await first_sse_event(d, ec, "doors/a"))["topic"] == "doors/a"
    assert (await first_ws_event(d, ed, "doors/a"))["topic"] == "doors/a"
    with d.http(rsa) as c:
        assert c.get(f"/v1/events/{event['id']}").status_code == 200
        # ntfy: Bearer publish, Basic with the token as the password (empty user name)
        r = c.post("/other-ntfy", content=b"from ntfy")
        assert r.status_code == 403, r.text  # outside the token's grants: not a 401
        r = c.post("/doors-ntfy", content=b"from ntfy")
    assert r.status_code == 200, r.text
    with httpx.Client(base_url=d.url, timeout=10) as c:
        r = c.get("/doors-ntfy/json", params={"poll": "1"}, headers=basic(ec))
        assert r.status_code == 200, r.text
        assert [json.loads(line)["message"] for line in r.text.splitlines()] == ["from ntfy"]
        r = c.post("/doors-ntfy", content=b"again", headers=basic(ed))
        assert r.status_code == 200, r.text
        # Gotify: the token as ?token= and as X-Gotify-Key
        r = c.get("/message", params={"token": rsa})
        assert r.status_code == 200, r.text
        assert c.get("/current/user", headers={"X-Gotify-Key": ec}).json()["name"] == "door-user"
        r = c.post("/message", params={"token": ed}, json={"message": "hi"})
        assert r.status_code == 403 and "not a Gotify application" in r.text, r.text
        # a JWT-shaped password with a user name stays a password
        r = c.get("/doors-ntfy/json", params={"poll": "1"}, headers=basic(ec, "door-user"))
        assert r.status_code == 401 and "user name or password" in r.json()["error"], r.text


@pytest.mark.trio
async def test_each_invalid_token_is_refused_with_401(
    jwt_daemon: Daemon, keys: dict[str, Any]
) -> None:
    d, rsa = jwt_daemon, keys["rsa"]
    good = jwks.mint(rsa, "carol")
    head, body, sig = good.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=="))
    payload["sub"] = "admin"
    tampered_body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    stranger = RSAKey.generate_key(2048, parameters={"kid": "rsa"})  # same kid, other key
    cases = {
        "expired": (jwks.mint(rsa, lifetime=-120), "expired"),
        "not yet valid": (jwks.mint(rsa, nbf=int(time.time()) + 600), "not valid yet"),
        "wrong issuer": (jwks.mint(rsa, iss="https://evil.example"), "issuer"),
        "wrong audience": (jwks.mint(rsa, aud="another-app"), "audience"),
        "no expiry": (jwks.mint(rsa, exp=None), "'exp'"),
        "unknown key": (jwks.mint(rsa, header={"kid": "nobody-knows"}), "signing key"),
        "signed by another key": (jwks.mint(stranger), "signature does not verify"),
        "alg none": (jwks.unsigned(jwks.claims()), "alg 'none'"),
        "HS256 with the RSA public key": (
            jwks.forge_hs256(rsa, jwks.claims()),
            "algorithm 'HS256' does not fit",
        ),
        "tampered payload": (f"{head}.{tampered_body}.{sig}", "signature does not verify"),
        "not JSON inside": ("e30.bm90IGpzb24.c2ln", "well-formed"),
        "huge": ("a" * 9000 + ".b.c", "longer than 8 KiB"),
        "no user claim": (jwks.mint(rsa, None), "'sub'"),
        "unusable user name": (jwks.mint(rsa, "Carol@Example.com"), "not a usable user name"),
        "bad grants claim": (jwks.mint(rsa, notifyd={"write": "x"}), "'notifyd' claim"),
        "bad pattern in grants": (jwks.mint(rsa, notifyd={"read": ["a b"]}), "not a topic"),
    }
    for name, (token, words) in cases.items():
        r = publish(d, token, "user/carol/x")
        assert r.status_code == 401, (name, r.text)
        assert words in r.json()["error"]["message"], (name, r.json())
    # the stream doors and ntfy's refuse them the same way
    with httpx.Client(base_url=d.url, timeout=10) as c:
        token = cases["expired"][0]
        r = c.get("/v1/stream/sse", params={"token": token})
        assert r.status_code == 401 and "expired" in r.json()["error"]["message"]
        assert c.post("/carol", content=b"x", headers=basic(token)).status_code == 401
    assert "Traceback" not in d.log()


@pytest.mark.trio
async def test_grants_come_from_claims_defaults_and_groups_limited_like_acls(
    jwt_daemon: Daemon, keys: dict[str, Any]
) -> None:
    d, rsa = jwt_daemon, keys["rsa"]
    dave = jwks.mint(rsa, "dave", groups=["ops", "unmapped"], notifyd={"write": ["dave-out/*"]})
    admin_event = d.publish("user/dave/inbox", title="for dave")
    d.publish("user/erin/inbox", title="for erin")
    with d.http(dave) as c:
        # default_grants: user/{user}/*:read — his own inbox only, read only
        listed = c.get("/v1/events").json()["events"]
        assert [e["id"] for e in listed] == [admin_event["id"]]
        assert c.get("/v1/events", params={"topic": "user/erin/inbox"}).json()["events"] == []
        assert publish(d, dave, "user/dave/inbox").status_code == 403
        # group_grants: ops → alerts/*:rw; the grants claim: write dave-out/*
        assert publish(d, dave, "alerts/disk").status_code == 201
        assert publish(d, dave, "dave-out/x").status_code == 201
        assert publish(d, dave, "dave-outside").status_code == 403
        assert publish(d, dave, "elsewhere").status_code == 403
        assert c.get("/v1/users").status_code == 403
    # a group the token does not name gives nothing; stored ACL rows count too
    frank = jwks.mint(rsa, "frank", groups="dev")
    assert publish(d, frank, "alerts/disk").status_code == 403
    with d.admin() as c:
        r = c.post("/v1/acl", json={"user": "frank", "pattern": "team/*", "permission": "rw"})
        assert r.status_code == 201, r.text
    assert publish(d, frank, "team/x").status_code == 201
    # role admin in the claim: an admin for this token
    boss = jwks.mint(rsa, "boss", notifyd={"role": "admin"})
    assert publish(d, boss, "anything/at/all").status_code == 201
    with d.http(boss) as c:
        assert c.get("/v1/users").status_code == 200
    # scope: ours narrow the token; an identity provider's own leave it whole
    reader = jwks.mint(rsa, "dave", scope="subscribe openid", groups=["ops"])
    assert publish(d, reader, "alerts/disk").status_code == 403
    with d.http(reader) as c:
        assert c.get("/v1/events").status_code == 200
    oidc_like = jwks.mint(rsa, "dave", scope="openid profile email", groups=["ops"])
    assert publish(d, oidc_like, "alerts/disk").status_code == 201
    not_admin = jwks.mint(rsa, "dave", scope=["publish", "admin"], groups=["ops"])
    assert publish(d, not_admin, "alerts/disk").status_code == 201
    with d.http(not_admin) as c:
        assert c.get("/v1/users").status_code == 403


@pytest.mark.trio
async def test_key_rotation_is_picked_up_and_refetching_is_rate_limited(
    jwt_daemon: Daemon, keys: dict[str, Any], issuer: jwks.JwksServer
) -> None:
    d = jwt_daemon
    assert publish(d, jwks.mint(keys["rsa"], "gina"), "user/gina/x").status_code == 403  # known
    fetched = issuer.fetches
    rotated = RSAKey.generate_key(2048, parameters={"kid": "rsa-2"})
    issuer.serve([*keys.values(), rotated])
    token = jwks.mint(rotated, "gina", groups=["ops"])
    attempts = []

    def accepted() -> bool:
        attempts.append(publish(d, token, "alerts/rotated").status_code)
        return attempts[-1] == 201

    # an unknown kid fetches the set again at once, unless it was fetched less than
    # 10 s ago: then the token is refused until that time has passed
    await trio.to_thread.run_sync(lambda: wait_for(accepted, timeout=30, interval=0.5))
    assert set(attempts[:-1]) <= {401}
    assert issuer.fetches == fetched + 1, (issuer.fetches, fetched, attempts)
    # right after a fetch, a kid nobody knows does not make the daemon fetch again
    assert publish(d, jwks.mint(rotated, header={"kid": "rsa-3"}), "x").status_code == 401
    assert issuer.fetches == fetched + 1


@pytest.mark.trio
async def test_streams_end_when_their_token_expires(
    jwt_daemon: Daemon, keys: dict[str, Any]
) -> None:
    """Grants from a token last as long as the token: every stream opened with a JWT
    ends at its ``exp`` plus ``jwt_leeway_seconds`` (30 here), notifyd's with a
    resync saying why, ntfy's and Gotify's as on revocation. The token expired 27 s ago, so it is still accepted for 3 s."""
    d = jwt_daemon
    exp = int(time.time()) - 27
    token = jwks.mint(keys["ec"], "ivan", exp=exp, notifyd={"read": ["expiring"]})
    ends_at = exp + 30
    ended: dict[str, Any] = {}

    def sse() -> None:
        params = {"token": token, "topics": "expiring"}
        with httpx.stream("GET", d.url + "/v1/stream/sse", params=params, timeout=15) as r:
            assert r.status_code == 200, r.read()
            frames = [json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data:")]
        ended["sse"] = (time.time(), frames)

    def ntfy() -> None:
        with httpx.stream("GET", d.url + "/expiring/json", headers=basic(token), timeout=15) as r:
            assert r.status_code == 200, r.read()
            events = [json.loads(line)["event"] for line in r.iter_lines() if line]
        ended["ntfy"] = (time.time(), events)

    async def ws(door: str, path: str) -> None:
        url = d.url.replace("http://", "ws://") + path + "?" + urlencode({"token": token})
        async with trio_websocket.open_websocket_url(url, connect_timeout=10) as conn:
            frames = []
            with trio.fail_after(15), pytest.raises(trio_websocket.ConnectionClosed) as closed:
                while True:
                    frames.append(json.loads(await conn.get_message()))
        ended[door] = (time.time(), frames, closed.value.reason)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, sse)
        nursery.start_soon(trio.to_thread.run_sync, ntfy)
        nursery.start_soon(ws, "ws", "/v1/stream")
        nursery.start_soon(ws, "gotify", "/stream")
    reason = "the token has expired; reconnect with a fresh token and since=<last id>"
    resync = {"type": "resync", "reason": reason}
    at, frames, close = ended["ws"]
    assert frames[-1] == resync and (close.code, close.reason) == (4000, "resync")
    assert at >= ends_at - 0.5
    at, frames = ended["sse"]
    assert frames[-1] == resync and at >= ends_at - 0.5
    at, events = ended["ntfy"]
    assert events[0] == "open" and at >= ends_at - 0.5  # ntfy's stream just ends
    at, _, close = ended["gotify"]
    assert close.code == 4000 and at >= ends_at - 0.5  # as on revocation
    # a fresh token opens the stream again
    fresh = jwks.mint(keys["ec"], "ivan", notifyd={"read": ["expiring"], "write": ["expiring"]})
    assert publish(d, fresh, "expiring").status_code == 201
    assert (await first_sse_event(d, fresh, "expiring"))["topic"] == "expiring"


def test_doctor_fetches_the_jwk_set_like_the_daemon(issuer: jwks.JwksServer) -> None:
    config = Config(jwt_jwks_url=issuer.url)
    check = check_jwks(config)
    assert check.status == "ok" and "signing key(s) (rsa, ec, ed" in check.detail, check
    assert check.data is not None and check.data["max_age"] == 300
    check = check_jwks(Config(jwt_jwks_url=issuer.url.replace("/jwks", "/missing")))
    assert check.status == "fail" and "answered 404" in check.detail, check


# -- a daemon with a shared HS256 secret, creating no users -------------------------------


@pytest.mark.trio
async def test_hs256_secret_and_auto_create_users_off(tmp_path: Path, keys: dict[str, Any]) -> None:
    secret = OctKey.import_key(b"s3cret-" * 8)
    secret_file = tmp_path / "jwt.secret"
    secret_file.write_bytes(b"s3cret-" * 8 + b"\n")  # a trailing newline is not part of it
    d = start_daemon(
        tmp_path / "hs",
        {
            "jwt_issuer": jwks.ISSUER,
            "jwt_audience": jwks.AUDIENCE,
            "jwt_secret_file": str(secret_file),
            "auto_create_users": False,
            "default_grants": ["user/{user}/*:rw"],
        },
    )
    try:
        token = jwks.mint(secret, "henry")
        refused(publish(d, token, "user/henry/x"), "auto_create_users is off")
        d.user("henry")
        assert publish(d, token, "user/henry/x").status_code == 201
        assert publish(d, token, "user/other/x").status_code == 403
        wrong = jwks.mint(OctKey.import_key(b"another-secret-" * 4), "henry")
        refused(publish(d, wrong, "user/henry/x"), "signature does not verify")
        refused(publish(d, jwks.mint(keys["rsa"], "henry"), "user/henry/x"), "does not fit")
    finally:
        d.stop()


def test_a_jwk_set_never_yields_a_symmetric_key() -> None:
    """A JWK set is public: an ``oct`` key in it would be a secret anyone can read
    and sign HS256 tokens with. It is skipped; the RSA key beside it is kept."""
    secret = OctKey.generate_key(256).as_dict()
    public = RSAKey.generate_key(2048).as_dict(private=False)
    with pytest.raises(FetchFailed):
        parse_key_set({"keys": [secret]})
    (kept,) = parse_key_set({"keys": [secret, public]})
    assert isinstance(kept, RSAKey)
