"""Credentials stay within their scope (the ``account`` scope), the password rule,
and complete, atomic account removal — against a real daemon.

The takeover this guards against: a token narrowed to publishing on ``ci/*`` used
to be able to set its user's password and sign in with every right, add a channel
(which then receives everything the user can read), mute everything, and revoke
the user's other tokens.
"""

from __future__ import annotations

import base64
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import Daemon, pg_rows, wait_for
from pushservice import PushService
from test_delivery import _env, add_channel

#: every daemon here runs on SQLite and on PostgreSQL (tests/conftest.py)
pytestmark = pytest.mark.both_engines

OLD, NEW = "old password", "brand new password"


@pytest.fixture
def mdaemon(make_daemon: Any) -> Daemon:
    """A daemon with the ``memory`` test channel kind."""
    return make_daemon(extra_env=_env()).start()


@pytest.fixture
def push() -> Iterator[PushService]:
    with PushService() as ps:
        yield ps


def make_user(d: Daemon, name: str, password: str | None = OLD, role: str = "user",
              grants: dict[str, str] | None = None) -> None:  # fmt: skip
    with d.admin() as c:
        r = c.post("/v1/users", json={"name": name, "role": role, "password": password})
        assert r.status_code == 201, r.text
        for pattern, perm in (grants or {}).items():
            r = c.post("/v1/acl", json={"user": name, "pattern": pattern, "permission": perm})
            assert r.status_code == 201, r.text


def make_token(
    d: Daemon, user: str, scopes: list[str], topics: str | None = None
) -> tuple[str, int]:
    with d.admin() as c:
        r = c.post("/v1/tokens", json={"user": user, "scopes": scopes, "topics": topics})
        assert r.status_code == 201, r.text
        return r.json()["token"], r.json()["id"]


class Web:
    """A browser signed in to the page: the session cookie and its CSRF header."""

    def __init__(self, d: Daemon, name: str, password: str = OLD) -> None:
        self.client = httpx.Client(base_url=d.url, timeout=10)
        r = self.client.post("/v1/session", json={"username": name, "password": password})
        assert r.status_code == 200, r.text
        self.client.headers["X-CSRF-Token"] = r.json()["csrf"]

    def __enter__(self) -> httpx.Client:
        return self.client

    def __exit__(self, *exc: object) -> None:
        self.client.close()


def sign_in(d: Daemon, name: str, password: str) -> int:
    return httpx.post(
        f"{d.url}/v1/session", json={"username": name, "password": password}
    ).status_code


def refused(r: httpx.Response, status: int = 403, field: str | None = None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == "forbidden", err
    if field is not None:
        assert err.get("field") == field, err
    return err


def assert_needs_account(r: httpx.Response) -> None:
    assert "'account' scope" in refused(r)["message"]


# -- the takeover chain ---------------------------------------------------------------


def test_a_publish_only_token_cannot_take_over_its_account(
    mdaemon: Daemon, push: PushService
) -> None:
    d = mdaemon
    make_user(d, "dev", grants={"*": "rw"})
    narrow, _ = make_token(d, "dev", ["publish"], "ci/*")
    other, other_id = make_token(d, "dev", ["subscribe"])
    with Web(d, "dev") as web:
        sub = web.post("/v1/webpush/subscriptions", json=push.subscribe().info())
        assert sub.status_code == 201, sub.text
        add_channel(web, "phone")
    with d.http(narrow) as h:
        # each step of the chain, refused
        assert_needs_account(h.put("/v1/users/dev/password", json={"password": "pwned-it-now"}))
        # ...even with the current password: the scope comes first
        r = h.put(
            "/v1/users/dev/password", json={"password": "pwned-it-now", "current_password": OLD}
        )
        assert_needs_account(r)
        assert_needs_account(h.post("/v1/channels", json={"name": "leak", "kind": "memory"}))
        assert_needs_account(h.post("/v1/channels/phone/test"))
        assert_needs_account(h.delete("/v1/channels/phone"))
        assert_needs_account(
            h.put("/v1/preferences", json={"rules": [{"topic": "*", "mute": True}]})
        )
        assert_needs_account(h.delete(f"/v1/tokens/{other_id}"))
        assert_needs_account(h.post("/v1/tokens", json={"scopes": ["publish"], "topics": "ci/*"}))
        refused(h.post("/v1/webpush/subscriptions", json=push.subscribe().info()))  # no subscribe
        assert_needs_account(h.delete(f"/v1/webpush/subscriptions/{sub.json()['id']}"))
        # reading one's own account data stays open to any credential
        assert len(h.get("/v1/channels").json()["channels"]) == 2  # phone, the subscription
        assert h.get("/v1/preferences").json()["rules"] == []
        assert len(h.get("/v1/tokens").json()["tokens"]) == 2
        # what it is for still works
        assert h.post("/v1/events", json={"topic": "ci/build", "title": "ok"}).status_code == 201
    # nothing changed
    assert sign_in(d, "dev", OLD) == 200 and sign_in(d, "dev", "pwned-it-now") == 401
    with d.http(other) as h:
        assert h.get("/v1/me").status_code == 200
        names = {c["name"] for c in h.get("/v1/channels").json()["channels"]}
        assert names == {"phone", sub.json()["name"]}
        assert h.get("/v1/preferences").json()["rules"] == []


def test_a_token_with_the_account_scope_may_change_the_account(mdaemon: Daemon) -> None:
    d = mdaemon
    make_user(d, "dev", grants={"*": "rw"})
    acct, acct_id = make_token(d, "dev", ["publish", "subscribe", "account"])
    _, other_id = make_token(d, "dev", ["subscribe"])
    with d.http(acct) as h:
        assert h.get("/v1/me").json()["scopes"] == ["account", "publish", "subscribe"]
        add_channel(h, "phone")
        assert h.post("/v1/channels/phone/test").json() == {"ok": True}
        assert h.delete("/v1/channels/phone").status_code == 204
        r = h.put("/v1/preferences", json={"rules": [{"topic": "noisy/*", "mute": True}]})
        assert r.status_code == 200, r.text
        r = h.post("/v1/tokens", json={"scopes": ["publish"], "label": "ci"})
        assert r.status_code == 201, r.text
        assert h.delete(f"/v1/tokens/{other_id}").status_code == 204
        r = h.put("/v1/users/dev/password", json={"password": NEW, "current_password": OLD})
        assert r.status_code == 204, r.text
        # it cannot reach other users' accounts
        make_user(d, "eve")
        refused(h.put("/v1/users/eve/password", json={"password": "whatever-long"}))
        refused(h.post("/v1/tokens", json={"user": "eve"}))
    assert sign_in(d, "dev", NEW) == 200


def test_any_token_may_revoke_itself(daemon: Daemon) -> None:
    make_user(daemon, "dev", grants={"*": "rw"})
    tok, tok_id = make_token(daemon, "dev", ["publish"], "ci/*")
    with daemon.http(tok) as h:
        assert h.delete(f"/v1/tokens/{tok_id}").status_code == 204
        assert h.get("/v1/me").status_code == 401


def test_a_narrowed_account_token_cannot_mint_a_wider_one(daemon: Daemon) -> None:
    make_user(daemon, "dev", grants={"*": "rw"})
    narrow, _ = make_token(daemon, "dev", ["publish", "account"], "ci/*")
    with daemon.http(narrow) as h:
        wider: list[tuple[dict[str, Any], str]] = [
            ({"scopes": ["publish", "subscribe"], "topics": "ci/*"}, "scopes"),
            ({"topics": "ci/*"}, "scopes"),  # the default scopes include subscribe
            ({"scopes": ["publish"]}, "topics"),  # every topic
            ({"scopes": ["publish"], "topics": "*"}, "topics"),
            ({"scopes": ["publish"], "topics": "c*"}, "topics"),
            ({"scopes": ["publish"], "topics": "*ci/*"}, "topics"),
            ({"scopes": ["publish"], "topics": "ops"}, "topics"),
        ]
        for body, field in wider:
            refused(h.post("/v1/tokens", json=body), field=field)
        minted = {}
        for topics in ("ci/*", "ci/build/*", "ci/main", "ci/*/logs"):
            r = h.post("/v1/tokens", json={"scopes": ["publish"], "topics": topics})
            assert r.status_code == 201, (topics, r.text)
            minted[topics] = r.json()["token"]
        r = h.post("/v1/tokens", json={"scopes": ["publish", "account"], "topics": "ci/*"})
        assert r.status_code == 201, r.text
    with daemon.http(minted["ci/build/*"]) as h:
        assert h.post("/v1/events", json={"topic": "ci/build/1", "title": "x"}).status_code == 201
        refused(h.post("/v1/events", json={"topic": "ci/main", "title": "x"}), field="topic")
        assert h.get("/v1/me").json()["scopes"] == ["publish"]
    # a session holds every scope its user may have, and no topic pattern
    with Web(daemon, "dev") as web:
        r = web.post("/v1/tokens", json={"scopes": ["publish", "subscribe", "account"]})
        assert r.status_code == 201 and r.json()["topics"] is None, r.text
        r = web.post("/v1/tokens", json={"scopes": ["admin"]})
        assert r.status_code == 422 and r.json()["error"]["field"] == "scopes", r.text


# -- passwords ---------------------------------------------------------------------------


def test_own_password_needs_the_current_one_and_ends_the_other_sessions(daemon: Daemon) -> None:
    make_user(daemon, "pat", grants={"*": "read"})
    with Web(daemon, "pat") as here, Web(daemon, "pat") as elsewhere:
        r = here.put("/v1/users/pat/password", json={"password": NEW})
        refused(r, field="current_password")
        r = here.put(
            "/v1/users/pat/password", json={"password": NEW, "current_password": "nope-nope"}
        )
        refused(r, field="current_password")
        assert sign_in(daemon, "pat", NEW) == 401 and elsewhere.get("/v1/me").status_code == 200
        r = here.put("/v1/users/pat/password", json={"password": NEW, "current_password": OLD})
        assert r.status_code == 204, r.text
        # the session that made the change goes on; the other one is signed out
        assert here.get("/v1/me").status_code == 200
        assert here.get("/v1/session").status_code == 200
        assert elsewhere.get("/v1/me").status_code == 401
    assert sign_in(daemon, "pat", OLD) == 401 and sign_in(daemon, "pat", NEW) == 200

    # changed with a token (scope account): every session ends
    acct, _ = make_token(daemon, "pat", ["subscribe", "account"])
    with Web(daemon, "pat", NEW) as web, daemon.http(acct) as h:
        refused(h.put("/v1/users/pat/password", json={"password": OLD}), field="current_password")
        r = h.put("/v1/users/pat/password", json={"password": OLD, "current_password": NEW})
        assert r.status_code == 204, r.text
        assert web.get("/v1/me").status_code == 401
        assert h.get("/v1/me").status_code == 200  # tokens are not sessions: they stay


def test_admins_and_the_socket_set_passwords_without_the_current_one(daemon: Daemon) -> None:
    make_user(daemon, "pat")
    make_user(daemon, "root", role="admin")
    root, _ = make_token(daemon, "root", ["admin"])
    with Web(daemon, "pat") as web:
        with daemon.http(root) as h:
            assert h.put("/v1/users/pat/password", json={"password": NEW}).status_code == 204
            # an admin's own password is their own: the current one is needed
            refused(
                h.put("/v1/users/root/password", json={"password": NEW}), field="current_password"
            )
        assert web.get("/v1/me").status_code == 401  # a reset ends every session
    assert sign_in(daemon, "pat", NEW) == 200
    with daemon.admin() as c:
        assert c.put("/v1/users/pat/password", json={"password": OLD}).status_code == 204
        assert c.put("/v1/users/admin/password", json={"password": OLD}).status_code == 204
    assert sign_in(daemon, "pat", OLD) == 200 and sign_in(daemon, "admin", OLD) == 200


# -- removing a user ---------------------------------------------------------------------


def user_rows(d: Daemon, user_id: int) -> dict[str, int]:
    """Rows that still name ``user_id``, per table, read from the database file
    (read-only, beside the running daemon)."""
    if d.engine == "postgresql":
        tables = [t for (t,) in pg_rows(
            d.database_url,
            "SELECT table_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND column_name = 'user_id'",
        )]  # fmt: skip
        rows = {
            t: pg_rows(d.database_url, f'SELECT count(*) FROM "{t}" WHERE user_id = %s',
                       (user_id,))[0][0]
            for t in tables
        }  # fmt: skip
        rows["users"] = pg_rows(
            d.database_url, "SELECT count(*) FROM users WHERE id = %s", (user_id,)
        )[0][0]
        return rows
    db = sqlite3.connect(f"file:{d.data_dir / 'notifyd.db'}?mode=ro", uri=True)
    try:
        tables = [
            t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if any(col[1] == "user_id" for col in db.execute(f'PRAGMA table_info("{t}")'))
        ]  # fmt: skip
        rows = {
            t: db.execute(f'SELECT count(*) FROM "{t}" WHERE user_id = ?', (user_id,)).fetchone()[0]
            for t in tables
        }
        rows["users"] = db.execute(
            "SELECT count(*) FROM users WHERE id = ?", (user_id,)
        ).fetchone()[0]
        return rows
    finally:
        db.close()


def test_removing_a_user_removes_everything_at_once(mdaemon: Daemon, push: PushService) -> None:
    d = mdaemon
    make_user(d, "rex", grants={"rex/*": "rw", "shared": "read"})
    tok, _ = make_token(d, "rex", ["publish", "subscribe", "account"])
    with d.admin() as c:
        rex_id = next(u["id"] for u in c.get("/v1/users").json()["users"] if u["name"] == "rex")
    with d.http(tok) as h:
        # a channel whose deliveries are held (a digest window): pending outbox rows
        add_channel(h, "phone")
        r = h.put("/v1/preferences", json={"digests": {"phone": 3600}})
        assert r.status_code == 200, r.text
        sub = h.post("/v1/webpush/subscriptions", json=push.subscribe().info())
        assert sub.status_code == 201, sub.text
        r = h.post(
            "/v1/events", json={"topic": "rex/a", "title": "x"}, headers={"Idempotency-Key": "k1"}
        )
        assert r.status_code == 201, r.text
        assert h.post(f"/v1/events/{r.json()['id']}/read").status_code == 200
        assert h.post("/v1/inbox/read-all").status_code == 200
        pending = [
            x for x in h.get("/v1/deliveries").json()["deliveries"] if x["state"] == "pending"
        ]
        assert pending, "a held delivery"
    web = Web(d, "rex")
    with d.admin() as c:
        assert c.post("/v1/tokens", json={"user": "rex", "scopes": ["publish"]}).status_code == 201
    before = user_rows(d, rex_id)
    for table in ("tokens", "sessions", "acl", "channels", "deliveries", "preferences",
                  "receipts", "idempotency", "users"):  # fmt: skip
        assert before[table] > 0, (table, before)

    with httpx.stream("GET", f"{d.url}/v1/stream/sse", headers={"Authorization": f"Bearer {tok}"},
                      timeout=10) as live:  # fmt: skip
        assert live.status_code == 200
        with d.admin() as c:
            assert c.delete("/v1/users/rex").status_code == 204
        # the live stream of the removed user ends (the read times out otherwise)
        for _ in live.iter_lines():
            pass
    assert all(n == 0 for n in user_rows(d, rex_id).values()), user_rows(d, rex_id)
    with d.http(tok) as h:
        assert h.get("/v1/me").status_code == 401
    with web as w:
        assert w.get("/v1/me").status_code == 401
    with d.admin() as c:
        assert c.delete("/v1/users/rex").status_code == 404
        assert "rex" not in {u["name"] for u in c.get("/v1/users").json()["users"]}
        assert [x for x in c.get("/v1/channels", params={"all": True}).json()["channels"]
                if x["user"] == "rex"] == []  # fmt: skip
    # the daemon goes on delivering to others
    with d.admin() as c:
        add_channel(c, "desk")
    d.publish("shared", title="after")
    wait_for(lambda: (d.data_dir / "memory-deliveries.jsonl").exists(), message="a delivery")


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "notifyd", *args], input=stdin,
                          capture_output=True, text=True, timeout=30, check=False)  # fmt: skip


def test_the_cli_creates_account_tokens_and_changes_passwords(daemon: Daemon) -> None:
    make_user(daemon, "dev", grants={"*": "rw"})
    sock = ("--socket", str(daemon.socket))
    run = cli("tokens", "create", "--user", "dev", "--scope", "publish,account", *sock)
    assert run.returncode == 0, run.stderr
    token = run.stdout.strip()
    with daemon.http(token) as h:
        assert h.get("/v1/me").json()["scopes"] == ["account", "publish"]
    over_tcp = ("--url", daemon.url, "--token", token)
    run = cli("users", "passwd", "dev", *over_tcp, stdin=NEW)
    assert run.returncode != 0 and "current" in run.stderr, run.stderr
    run = cli("users", "passwd", "dev", "--current", *over_tcp, stdin=f"{OLD}\n{NEW}\n")
    assert run.returncode == 0, run.stderr
    assert sign_in(daemon, "dev", NEW) == 200
    # over the socket, as before: no current password
    assert cli("users", "passwd", "dev", *sock, stdin=OLD).returncode == 0
    assert sign_in(daemon, "dev", OLD) == 200


def test_removing_through_the_cli(daemon: Daemon) -> None:
    make_user(daemon, "cli-user")
    tok, _ = make_token(daemon, "cli-user", ["publish"])
    run = cli("users", "remove", "cli-user", "--socket", str(daemon.socket))
    assert run.returncode == 0, run.stderr
    with daemon.http(tok) as h:
        assert h.get("/v1/me").status_code == 401


def test_the_socket_user_and_the_last_admin_stay(daemon: Daemon) -> None:
    make_user(daemon, "root", role="admin")
    make_user(daemon, "plain")
    root, _ = make_token(daemon, "root", ["admin"])
    with daemon.admin() as c:
        r = c.delete("/v1/users/admin")
        assert r.status_code == 409 and r.json()["error"]["field"] == "name", r.text
    with daemon.http(root) as h:
        assert h.delete("/v1/users/admin").status_code == 409  # still the socket's user
    # with the socket acting as someone else, 'admin' may go; then root is the last admin
    daemon.extra_env["NOTIFYD_SOCKET_USER"] = "plain"
    daemon.restart()
    with daemon.http(root) as h:
        assert h.delete("/v1/users/admin").status_code == 204
        r = h.delete("/v1/users/root")
        assert r.status_code == 409 and "last admin" in r.json()["error"]["message"], r.text
        assert h.get("/v1/me").status_code == 200


# -- Gotify's applications and clients are tokens too -----------------------------------


def basic(name: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()


def test_gotify_clients_and_applications_need_the_account_scope(daemon: Daemon) -> None:
    make_user(daemon, "dev", grants={"gotify/*": "rw"})
    app, _ = make_token(daemon, "dev", ["publish"])
    client, _ = make_token(daemon, "dev", ["subscribe"])
    manager, _ = make_token(daemon, "dev", ["subscribe", "account"])
    with httpx.Client(base_url=daemon.url, timeout=10) as g:
        # a publish-only token: neither as Basic password, nor as a token
        r = g.post("/client", json={"name": "x"}, headers={"Authorization": basic("dev", app)})
        assert r.status_code == 401, r.text
        r = g.post("/client", json={"name": "x"}, params={"token": app})
        assert r.status_code == 401, r.text
        # a client token reads, but does not manage the account
        for method, path in (("POST", "/client"), ("POST", "/application")):
            r = g.request(method, path, json={"name": "x"}, params={"token": client})
            assert r.status_code == 403 and "account" in r.json()["errorDescription"], r.text
        r = g.post("/client", json={"name": "Pixel"}, params={"token": manager})
        assert r.status_code == 200, r.text
        created = r.json()
        r = g.delete(f"/client/{created['id']}", params={"token": client})
        assert r.status_code == 403, r.text
        assert g.delete(f"/client/{created['id']}", params={"token": manager}).status_code == 200
        # the user's password is the user
        r = g.post("/client", json={"name": "Pixel"}, headers={"Authorization": basic("dev", OLD)})
        assert r.status_code == 200, r.text


def test_the_cli_knows_every_scope() -> None:
    from notifyd.cli import format as clifmt
    from notifyd.core.acl import SCOPES

    assert clifmt.SCOPES == SCOPES
