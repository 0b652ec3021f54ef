"""ntfy's account API (``GET /v1/account``, ``POST``/``DELETE /v1/account/token``) and
Home Assistant's ntfy integration, against a real daemon.

Home Assistant talks to ntfy through the ``aiontfy`` library (Python ≥ 3.12, not
installable here). The tests replay the requests it makes, as its source builds them
(``aiontfy/ntfy.py``; Home Assistant's ``components/ntfy``: config_flow, __init__,
notify, services, event), and decode every answer the way its mashumaro models do:
a field those models require must be there with the right type, or Home Assistant's
setup fails (:func:`as_account`, :func:`as_token`, :func:`as_notification`,
:func:`as_error` mirror the required fields of ``Account``, ``AccountTokenResponse``,
``Notification`` and the error decoding ``raise_http_error(code, http, error, link)``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import trio
import trio_websocket
from conftest import TLS, Daemon, EngineDatabases, wait_for

#: every daemon here runs on SQLite and on PostgreSQL (tests/conftest.py)
pytestmark = pytest.mark.both_engines

PASSWORD = "correct horse battery"
#: aiohttp's User-Agent, as Home Assistant's shared session sends it
UA = "HomeAssistant/2025.7.0 aiohttp/3.12.13 Python/3.13"

# -- what aiontfy's models require ---------------------------------------------------------

EVENTS = {"open", "keepalive", "message", "poll_request", "message_clear", "message_delete"}
LIMIT_FIELDS = (
    "messages", "messages_expiry_duration", "emails", "calls", "reservations",
    "attachment_total_size", "attachment_file_size", "attachment_expiry_duration",
    "attachment_bandwidth",
)  # fmt: skip
STATS_FIELDS = (
    "messages", "messages_remaining", "emails", "emails_remaining", "calls", "calls_remaining",
    "reservations", "reservations_remaining", "attachment_total_size",
    "attachment_total_size_remaining",
)  # fmt: skip


def _int(obj: dict, key: str) -> int:
    value = obj[key]  # KeyError: a required field is missing
    assert type(value) is int, f"{key}: {value!r} is not an integer"
    return value


def _opt(obj: dict, key: str, kind: type) -> Any:
    value = obj.get(key)
    assert value is None or isinstance(value, kind), f"{key}: {value!r} is not {kind.__name__}"
    return value


def as_token(obj: dict) -> dict:
    """``AccountTokenResponse``: ``token`` and ``last_access`` required."""
    assert isinstance(obj["token"], str) and obj["token"]
    _int(obj, "last_access")
    _opt(obj, "label", str)
    _opt(obj, "last_origin", str)
    _opt(obj, "expires", int)
    return obj


def as_account(obj: dict) -> dict:
    """``Account``: ``username`` and ``stats`` (ten integers) required; ``limits`` if
    present has nine integers; each token as :func:`as_token`."""
    assert isinstance(obj["username"], str) and obj["username"]
    _opt(obj, "role", str)
    _opt(obj, "sync_topic", str)
    _opt(obj, "language", str)
    for key in STATS_FIELDS:
        _int(obj["stats"], key)
    if obj.get("limits") is not None:
        _opt(obj["limits"], "basis", str)
        for key in LIMIT_FIELDS:
            _int(obj["limits"], key)
    for token in obj.get("tokens") or []:
        as_token(token)
    for sub in obj.get("subscriptions") or []:
        assert {"base_url", "topic", "display_name"} <= set(sub)
    for res in obj.get("reservations") or []:
        assert {"topic", "everyone"} <= set(res)
    if obj.get("tier") is not None:
        assert {"code", "name"} <= set(obj["tier"])
    if obj.get("billing") is not None:
        assert {"customer", "subscription", "paid_until"} <= set(obj["billing"])
    return obj


def as_notification(obj: dict) -> dict:
    """``Notification``: ``id``, ``time``, ``event`` (one of ``Event``), ``topic``."""
    assert isinstance(obj["id"], str) and obj["id"]
    _int(obj, "time")
    assert obj["event"] in EVENTS, obj["event"]
    assert isinstance(obj["topic"], str)
    _opt(obj, "expires", int)
    _opt(obj, "message", str)
    _opt(obj, "title", str)
    assert all(isinstance(t, str) for t in obj.get("tags") or [])
    if obj.get("priority") is not None:
        assert _int(obj, "priority") in range(1, 6)  # Priority(IntEnum)
    for action in obj.get("actions") or []:
        assert action["action"] in ("view", "broadcast", "http") and isinstance(
            action["label"], str
        )
    if obj.get("attachment") is not None:
        assert isinstance(obj["attachment"]["name"], str) and obj["attachment"]["url"]
    _opt(obj, "sequence_id", str)
    return obj


def as_ntfy_error(r: httpx.Response, http: int, code: int | None = None) -> dict:
    """ntfy's error shape ``{"code", "http", "error", "link"?}``."""
    assert r.status_code == http, r.text
    body = r.json()
    assert {"code", "http", "error"} <= set(body) <= {"code", "http", "error", "link"}, body
    assert body["http"] == http and isinstance(body["error"], str)
    if code is not None:
        assert body["code"] == code, body
    return body


def as_error(r: httpx.Response, http: int, code: int | None = None) -> dict:
    """What aiontfy decodes, ``raise_http_error(**body)``: exactly ``code``, ``http``,
    ``error`` and ``link`` (without ``link`` it raises TypeError, not its error class);
    a 401/403 links where ntfy's do."""
    body = as_ntfy_error(r, http, code)
    assert set(body) == {"code", "http", "error", "link"}, body
    assert isinstance(body["link"], str) and body["link"].startswith("https://ntfy.sh/docs/")
    if http in (401, 403):
        assert body["link"] == "https://ntfy.sh/docs/publish/#authentication"
    return body


# -- helpers ---------------------------------------------------------------------------------


def basic(name: str, password: str = PASSWORD) -> str:
    # aiohttp.BasicAuth(username, password, "utf8").encode()
    return "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()


def make_user(daemon: Daemon, name: str, grants: dict[str, str], *, role: str = "user") -> None:
    with daemon.admin() as c:
        r = c.post("/v1/users", json={"name": name, "role": role, "password": PASSWORD})
        assert r.status_code == 201, r.text
        for pattern, perm in grants.items():
            r = c.post("/v1/acl", json={"user": name, "pattern": pattern, "permission": perm})
            assert r.status_code == 201, r.text


def ntfy(daemon: Daemon, auth: str | None) -> httpx.Client:
    """An aiontfy ``Ntfy`` client: its headers on every request."""
    headers = {"User-Agent": UA}
    if auth is not None:
        headers["Authorization"] = auth
    return httpx.Client(base_url=daemon.url, headers=headers, timeout=10, verify=TLS)


def message_dict(topic: str, **fields: Any) -> dict:
    """``aiontfy.Message(...).to_dict()``: every field, ``None`` and empty lists included."""
    body: dict[str, Any] = {
        "topic": topic, "message": None, "title": None, "tags": [], "priority": None,
        "actions": [], "click": None, "attach": None, "markdown": False, "icon": None,
        "filename": None, "delay": None, "email": None, "call": None, "sequence_id": None,
    }  # fmt: skip
    body.update(fields)
    return body


def stored(daemon: Daemon, event_id: int) -> dict:
    with daemon.admin() as c:
        r = c.get(f"/v1/events/{event_id}")
        assert r.status_code == 200, r.text
        return r.json()


def setup_home_assistant(daemon: Daemon, user: str = "alice") -> str:
    """Home Assistant's config flow with a user name and password (``async_step_user``):
    ``account()``, then ``generate_token("Home Assistant")``; returns the token it keeps."""
    with ntfy(daemon, basic(user)) as c:
        account = as_account(c.get("/v1/account").json())
        assert account["username"] == user  # not "*": a token is generated
        r = c.post("/v1/account/token", json={"label": "Home Assistant", "expires": 0})
        assert r.status_code == 200, r.text
        return str(as_token(r.json())["token"])


@pytest.fixture(scope="module")
def shared(
    tmp_path_factory: pytest.TempPathFactory, engine: str, request: pytest.FixtureRequest
) -> Iterator[Daemon]:
    """One daemon per engine for the module (a start costs more than the tests)."""
    databases = EngineDatabases(request, engine)
    d = Daemon(tmp_path_factory.mktemp("ntfy-account") / "data", database_url=databases.new())
    d.data_dir.mkdir()
    try:
        d.start()
        yield d
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()
        databases.drop_all()


@pytest.fixture
def alice(shared: Daemon) -> Daemon:
    """A fresh ``alice`` (rw on home, home-*) on the module's daemon: the users the
    tests make are removed first, with their tokens, sessions and grants."""
    with shared.admin() as c:
        for name in ("alice", "bob"):
            assert c.delete(f"/v1/users/{name}").status_code in (204, 404)
    make_user(shared, "alice", {"home": "rw", "home-*": "rw"})
    return shared


# -- the account API --------------------------------------------------------------------------


def test_account_in_ntfys_shape(alice: Daemon) -> None:
    daemon = alice
    with ntfy(daemon, basic("alice")) as c:
        r = c.get("/v1/account")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    account = as_account(r.json())
    assert (account["username"], account["role"]) == ("alice", "user")
    assert account["tokens"] == []
    # the limits are notifyd's settings (defaults here)
    assert account["limits"] == {
        "basis": "ip",
        "messages": 200 * 86400,  # publish_rate 200/s per token, for a day
        "messages_expiry_duration": 30 * 86400,  # retention_days
        "emails": 0, "calls": 0, "reservations": 0,
        "attachment_total_size": 100 * 1024 * 1024,  # attachment_user_quota_bytes
        "attachment_file_size": 15 * 1024 * 1024,  # attachment_max_bytes
        "attachment_expiry_duration": 3 * 86400,  # attachment_expiry
        "attachment_bandwidth": 0,
    }  # fmt: skip
    stats = account["stats"]
    assert stats["attachment_total_size"] == 0
    assert stats["attachment_total_size_remaining"] == 100 * 1024 * 1024
    assert stats["messages_remaining"] == 200 * 86400
    # an admin is "admin"; the socket is the admin too
    with daemon.admin() as c:
        assert as_account(c.get("/v1/account").json())["role"] == "admin"


def test_account_limits_follow_the_settings(make_daemon: Any) -> None:
    daemon = make_daemon(
        extra_env={
            "NOTIFYD_RETENTION_DAYS": "7",
            "NOTIFYD_PUBLISH_RATE": "0.5",
            "NOTIFYD_ATTACHMENT_MAX_BYTES": "1048576",
            "NOTIFYD_ATTACHMENT_USER_QUOTA_BYTES": "5242880",
            "NOTIFYD_ATTACHMENT_EXPIRY": "12h",
        }
    ).start()
    with daemon.admin() as c:
        limits = as_account(c.get("/v1/account").json())["limits"]
    assert limits["messages"] == 43200 and limits["messages_expiry_duration"] == 7 * 86400
    assert limits["attachment_file_size"] == 1048576
    assert limits["attachment_total_size"] == 5242880
    assert limits["attachment_expiry_duration"] == 12 * 3600


def test_account_with_each_credential_form(alice: Daemon) -> None:
    daemon = alice
    token = setup_home_assistant(daemon)
    for auth in (
        basic("alice"),
        f"Bearer {token}",
        "Basic " + base64.b64encode(f":{token}".encode()).decode(),  # ntfy: empty user, token
    ):
        with ntfy(daemon, auth) as c:
            r = c.get("/v1/account")
        assert r.status_code == 200, (auth[:6], r.text)
        assert as_account(r.json())["username"] == "alice"
    # ?auth= (base64 of the whole Authorization value), as ntfy's WebSocket clients send it
    raw = base64.urlsafe_b64encode(f"Bearer {token}".encode()).decode().rstrip("=")
    with ntfy(daemon, None) as c:
        assert c.get("/v1/account", params={"auth": raw}).json()["username"] == "alice"


def test_account_refusals_in_ntfys_shape(alice: Daemon) -> None:
    daemon = alice
    with ntfy(daemon, None) as c:
        # no anonymous account in notifyd (ntfy answers for its user "*", even with
        # anonymous access off); Home Assistant then asks for credentials (invalid_auth)
        r = c.get("/v1/account")
        as_error(r, 401, 40101)
        assert r.headers["www-authenticate"].startswith("Basic")
        as_error(c.post("/v1/account/token", json={"label": "x"}), 401, 40101)
        as_error(c.delete("/v1/account/token"), 401, 40101)
    with ntfy(daemon, basic("alice", "wrong password")) as c:
        as_error(c.get("/v1/account"), 401, 40101)
    with ntfy(daemon, "Bearer nfy_" + "x" * 40) as c:
        as_error(c.get("/v1/account"), 401, 40101)
    with ntfy(daemon, "Bearer A" + "x" * 14) as c:  # a Gotify-form string never issued
        as_error(c.get("/v1/account"), 401, 40101)


def test_generate_token_makes_an_ordinary_token(alice: Daemon) -> None:
    daemon = alice
    with ntfy(daemon, basic("alice")) as c:
        r = c.post("/v1/account/token", json={"label": "Home Assistant", "expires": 0})
        assert r.status_code == 200, r.text
        made = as_token(r.json())
        assert made["token"].startswith("nfy_") and made["label"] == "Home Assistant"
        assert "expires" not in made  # notifyd's tokens do not expire
        # listed in the account by prefix only (the secret is not kept)
        (listed,) = as_account(c.get("/v1/account").json())["tokens"]
        assert listed["token"] == made["token"][:8] + "…" and listed["label"] == "Home Assistant"
        assert made["token"] not in c.get("/v1/account").text
        # no label (ntfy allows an empty body)
        r = c.post("/v1/account/token")
        assert r.status_code == 200, r.text
        assert "label" not in as_token(r.json())
    # a notifyd token like any other: scopes publish and subscribe, no account
    with daemon.admin() as c:
        tokens = c.get("/v1/tokens", params={"user": "alice"}).json()["tokens"]
    (ha,) = [t for t in tokens if t["label"] == "Home Assistant"]
    assert ha["scopes"] == ["publish", "subscribe"] and ha["topics"] is None


def test_generate_token_refusals(alice: Daemon) -> None:
    daemon = alice
    token = setup_home_assistant(daemon)
    with ntfy(daemon, basic("alice")) as c:
        # notifyd's tokens do not expire: an expiry is refused rather than ignored
        body = as_error(c.post("/v1/account/token", json={"expires": 4102444800}), 400, 40000)
        assert "do not expire" in body["error"]
        as_error(c.post("/v1/account/token", json={"expires": "soon"}), 400, 40000)
        as_error(c.post("/v1/account/token", json={"label": 5}), 400, 40000)
        as_error(c.post("/v1/account/token", json={"label": "x" * 65}), 400, 40000)
        as_error(c.post("/v1/account/token", content=b"{not json",
                        headers={"Content-Type": "application/json"}), 400, 40024)  # fmt: skip
        as_error(c.post("/v1/account/token", json=["label"]), 400, 40024)
    # ntfy reads at most 4 KiB of JSON here (a token: the connection front lets only
    # notifyd's own credentials through before a body over 4 KiB, see below)
    with daemon.admin() as c:
        manager = c.post("/v1/tokens", json={"user": "alice", "scopes": ["account"]}).json()
    with ntfy(daemon, f"Bearer {manager['token']}") as c:
        as_error(c.post("/v1/account/token", content=b" " * 5000), 413, 41303)
    with daemon.admin() as c:
        assert c.delete(f"/v1/tokens/{manager['id']}").status_code == 204
    # the token Home Assistant keeps (publish, subscribe) cannot make tokens: 403
    with ntfy(daemon, f"Bearer {token}") as c:
        as_error(c.post("/v1/account/token", json={"label": "more"}), 403, 40301)
    with daemon.admin() as c:
        labels = [
            t["label"] for t in c.get("/v1/tokens", params={"user": "alice"}).json()["tokens"]
        ]
    assert labels == ["Home Assistant"]


def test_large_body_with_a_password_gets_ntfys_answer(alice: Daemon) -> None:
    with ntfy(alice, basic("alice")) as c:
        as_error(c.post("/v1/account/token", content=b" " * 5000), 413, 41303)


def test_publish_refusals_carry_ntfys_link(alice: Daemon) -> None:
    with ntfy(alice, "Bearer nfy_" + "x" * 40) as c:
        as_error(c.post("/", json=message_dict("home", message="x")), 401, 40101)
    with ntfy(alice, basic("alice")) as c:
        as_error(c.post("/elsewhere", content=b"x"), 403, 40301)


def test_a_token_with_account_scope_makes_tokens_within_its_topics(alice: Daemon) -> None:
    daemon = alice
    with daemon.admin() as c:
        r = c.post("/v1/tokens", json={"user": "alice", "scopes": ["publish", "subscribe",
                                       "account"], "topics": "home-*"})  # fmt: skip
        manager = r.json()["token"]
    with ntfy(daemon, f"Bearer {manager}") as c:
        made = as_token(c.post("/v1/account/token", json={"label": "narrow"}).json())
    with daemon.admin() as c:
        tokens = {
            t["label"]: t for t in c.get("/v1/tokens", params={"user": "alice"}).json()["tokens"]
        }
    assert tokens["narrow"]["topics"] == "home-*"
    with ntfy(daemon, f"Bearer {made['token']}") as c:
        assert c.post("/home-garage", content=b"ok").status_code == 200
        as_ntfy_error(c.post("/home", content=b"outside"), 403, 40301)


def test_delete_token(alice: Daemon) -> None:
    daemon = alice
    first = setup_home_assistant(daemon)
    second = setup_home_assistant(daemon)
    # naming another token changes the account: not with a publish/subscribe token
    with ntfy(daemon, f"Bearer {second}") as c:
        as_error(c.delete("/v1/account/token", headers={"X-Token": first}), 403, 40301)
    # a token revokes itself (ntfy's sign-out: DELETE with the token in use)
    with ntfy(daemon, f"Bearer {first}") as c:
        r = c.delete("/v1/account/token")
        assert r.status_code == 200 and r.json() == {"success": True}
        as_error(c.get("/v1/account"), 401, 40101)
    with ntfy(daemon, f"Bearer {second}") as c:  # gone: not found
        as_error(c.delete("/v1/account/token", headers={"X-Token": first}), 404, 40401)
    make_user(daemon, "bob", {})
    bob = setup_home_assistant(daemon, "bob")
    with ntfy(daemon, basic("alice")) as c:
        # another user's token is not found, and stays valid
        as_error(c.delete("/v1/account/token", headers={"X-Token": bob}), 404, 40401)
        as_error(c.delete("/v1/account/token", headers={"X-Token": "garbage"}), 404, 40401)
        # a password has no token in use: name one
        as_error(c.delete("/v1/account/token"), 400, 40023)
        r = c.delete("/v1/account/token", headers={"X-Token": second})
        assert r.status_code == 200 and r.json() == {"success": True}
        assert as_account(c.get("/v1/account").json())["tokens"] == []
    with ntfy(daemon, f"Bearer {second}") as c:
        as_error(c.get("/v1/account"), 401, 40101)
    with ntfy(daemon, f"Bearer {bob}") as c:
        assert c.get("/v1/account").status_code == 200


def test_nothing_logs_a_token(alice: Daemon) -> None:
    daemon = alice
    token = setup_home_assistant(daemon)
    with ntfy(daemon, f"Bearer {token}") as c:
        c.get("/v1/account")
        c.delete("/v1/account/token", headers={"X-Token": token})
    assert token not in daemon.log() and token[4:] not in daemon.log()


# -- Home Assistant's ntfy integration, end to end ------------------------------------------------


def ws_url(daemon: Daemon, topics: str, params: dict[str, str]) -> str:
    url = daemon.url.replace("http://", "ws://", 1) + f"/{topics}/ws"
    return url + ("?" + urlencode(params) if params else "")


async def _sync(fn: Any, *args: Any) -> Any:
    return await trio.to_thread.run_sync(fn, *args)


@pytest.mark.trio
async def test_home_assistant_ntfy_integration(alice: Daemon) -> None:
    """Set-up, the notify entity, the publish/clear/delete actions and the event
    entity's subscription, as Home Assistant's ntfy integration makes them."""
    daemon = alice
    # config flow: account() and generate_token("Home Assistant") with the password
    token = await _sync(setup_home_assistant, daemon)
    bearer = f"Bearer {token}"

    # async_setup_entry: Ntfy(url, session, token=token).account(); the sensors'
    # coordinator polls the same
    def setup_entry() -> dict:
        with ntfy(daemon, bearer) as c:
            r = c.get("/v1/account")
            assert r.status_code == 200, r.text
            return as_account(r.json())

    account = await _sync(setup_entry)
    assert account["username"] == "alice"

    # the event entity: can_subscribe (GET /<topics>/auth), then /<topics>/ws with
    # the subscription's filters as query parameters and the token in the header
    def can_subscribe() -> None:
        with ntfy(daemon, bearer) as c:
            r = c.get("/home/auth")
            assert r.status_code == 200 and r.json() == {"success": True}, r.text

    await _sync(can_subscribe)
    url = ws_url(daemon, "home", {"priority": "4,5"})
    received: list[dict] = []
    async with trio_websocket.open_websocket_url(
        url, extra_headers=[(b"Authorization", bearer.encode()), (b"User-Agent", UA.encode())],
        connect_timeout=10, disconnect_timeout=5,
    ) as ws:  # fmt: skip
        with trio.fail_after(10):
            opened = as_notification(json.loads(await ws.get_message()))
        assert opened["event"] == "open" and opened["topic"] == "home"

        # the notify entity: async_send_message(message, title) → POST / with
        # Message(topic, message, title).to_dict()
        def notify() -> dict:
            body = message_dict("home", message="The washing machine is done", title="Laundry")
            with ntfy(daemon, bearer) as c:
                r = c.post("/", json=body)
                assert r.status_code == 200, r.text
                return as_notification(r.json())

        sent = await _sync(notify)
        assert sent["event"] == "message" and sent["topic"] == "home"
        ev = stored(daemon, int(sent["id"]))
        assert (ev["title"], ev["body"], ev["priority"]) == (
            "Laundry", "The washing machine is done", 3
        )  # fmt: skip

        # the ntfy.publish action with every field it offers but the file upload
        def publish() -> dict:
            body = message_dict(
                "home", title="Door", message="Front door **open**", markdown=True,
                tags=["door", "warning"], priority=5, click="https://ha.example.org/lovelace/0",
                icon="https://ha.example.org/static/icons/favicon-192x192.png",
                sequence_id="front-door",
            )  # fmt: skip
            with ntfy(daemon, bearer) as c:
                r = c.post("/", json=body)
                assert r.status_code == 200, r.text
                return as_notification(r.json())

        published = await _sync(publish)
        assert published["sequence_id"] == "front-door" and published["priority"] == 5
        ev = stored(daemon, int(published["id"]))
        assert (ev["title"], ev["body"], ev["format"]) == (
            "Door",
            "Front door **open**",
            "markdown",
        )
        assert (ev["priority"], ev["tags"]) == (5, ["door", "warning"])
        assert ev["click"] == "https://ha.example.org/lovelace/0"
        assert ev["icon"] == "https://ha.example.org/static/icons/favicon-192x192.png"
        assert ev["collapse_key"] == "front-door"

        # the subscription (priority 4,5) got the urgent one only, in aiontfy's shape
        with trio.fail_after(10):
            while not received:
                frame = as_notification(json.loads(await ws.get_message()))
                if frame["event"] == "message":
                    received.append(frame)
        (got,) = received
        assert got["id"] == published["id"] and got["title"] == "Door"
        assert got["message"] == "Front door **open**" and got["tags"] == ["door", "warning"]

    # the ntfy.clear and ntfy.delete actions: PUT /<topic>/<seq>/clear, DELETE /<topic>/<seq>
    def clear_and_delete() -> tuple[dict, dict]:
        with ntfy(daemon, bearer) as c:
            cleared = c.put("/home/front-door/clear")
            deleted = c.delete("/home/front-door")
        assert cleared.status_code == 200 and deleted.status_code == 200
        return as_notification(cleared.json()), as_notification(deleted.json())

    cleared, deleted = await _sync(clear_and_delete)
    assert (cleared["event"], cleared["sequence_id"]) == ("message_clear", "front-door")
    assert (deleted["event"], deleted["sequence_id"]) == ("message_delete", "front-door")
    with daemon.http(token) as c:  # read, then archived, for alice
        r = c.get("/v1/events", params={"topic": "home", "archived": "only"})
        (ev,) = r.json()["events"]
        assert ev["id"] == int(published["id"]) and ev["read"] and ev["archived"]


def test_home_assistant_reauth_and_revoked_token(alice: Daemon) -> None:
    """A revoked token makes setup fail with 40101 (ConfigEntryAuthFailed → reauth);
    reauth with the password generates a new token, or takes a token as it is."""
    daemon = alice
    token = setup_home_assistant(daemon)
    with daemon.admin() as c:
        (ha,) = c.get("/v1/tokens", params={"user": "alice"}).json()["tokens"]
        assert c.delete(f"/v1/tokens/{ha['id']}").status_code == 204

    def account_fails() -> bool:
        with ntfy(daemon, f"Bearer {token}") as c:
            return c.get("/v1/account").status_code == 401

    wait_for(account_fails, 10, message="the revoked token to be refused")
    with ntfy(daemon, f"Bearer {token}") as c:
        as_error(c.get("/v1/account"), 401, 40101)
        as_ntfy_error(c.post("/", json=message_dict("home", message="x")), 401, 40101)
    # reauth with the password: account() (the user name must match), generate_token()
    new = setup_home_assistant(daemon)
    with daemon.admin() as c:
        other = c.post("/v1/tokens", json={"user": "alice", "scopes": ["publish"]}).json()["token"]
    # reauth with a token: account() only, and the token is kept as given
    for kept in (new, other):
        with ntfy(daemon, f"Bearer {kept}") as c:
            assert as_account(c.get("/v1/account").json())["username"] == "alice"


def test_home_assistant_publish_with_an_uploaded_file(alice: Daemon) -> None:
    """``ntfy.publish`` with ``attach_file``: aiontfy sends ``PUT /<topic>`` with the
    message as ``X-`` headers (``Message.to_x_headers()``: newlines escaped as ``\\n``,
    booleans as 0/1, empty fields left out) and the file as the body."""
    daemon = alice
    token = setup_home_assistant(daemon)
    jpeg = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 64
    headers = {
        "X-Message": "Motion at the front door\\nCamera: porch",
        "X-Title": "Doorbell",
        "X-Tags": "camera",
        "X-Priority": "4",
        "X-Markdown": "0",
        "X-Filename": "snapshot.jpg",
        "Authorization": f"Bearer {token}",
        "User-Agent": UA,
    }
    with httpx.Client(base_url=daemon.url, timeout=10, verify=TLS) as c:
        r = c.put("/home", content=jpeg, headers=headers)
        assert r.status_code == 200, r.text
        sent = as_notification(r.json())
        assert sent["attachment"]["name"] == "snapshot.jpg"
        assert c.get(sent["attachment"]["url"].removeprefix(daemon.url),
                     headers={"Authorization": f"Bearer {token}"}).content == jpeg  # fmt: skip
    ev = stored(daemon, int(sent["id"]))
    assert (ev["title"], ev["body"]) == ("Doorbell", "Motion at the front door\nCamera: porch")
    assert (ev["priority"], ev["tags"], ev["format"]) == (4, ["camera"], "text")
    assert ev["attachment"]["name"] == "snapshot.jpg" and ev["attachment"]["size"] == len(jpeg)
