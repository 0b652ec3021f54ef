"""Identity from a reverse proxy (issue 16 §3): ``proxy_user_header`` and
``proxy_groups_header``, believed only from ``trusted_proxies``.

One daemon trusts 127.0.0.1 as its proxy; the tests connect from 127.0.0.1 (the
"proxy") and from 127.0.0.2 (anyone else on the network), both real TCP peers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Daemon

UNTRUSTED = "127.0.0.2"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    folder: Path = tmp_path_factory.mktemp("proxy")
    config = folder / "notifyd.toml"
    config.write_text(
        'proxy_user_header = "Remote-User"\n'
        'proxy_groups_header = "Remote-Groups"\n'
        'trusted_proxies = ["127.0.0.1/32"]\n'
        'default_grants = ["user/{user}/*:read"]\n'
        "[group_grants]\n"
        'ops = ["alerts*:rw"]\n'
    )
    data = folder / "data"
    data.mkdir()
    d = Daemon(data, extra_args=["--config", str(config)]).start()
    try:
        yield d
    finally:
        d.stop()


def client(d: Daemon, source: str = "127.0.0.1", **kw: Any) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=source)
    return httpx.Client(base_url=d.url, transport=transport, timeout=10, **kw)


def as_user(name: str, groups: str | None = None) -> dict[str, str]:
    headers = {"Remote-User": name}
    if groups is not None:
        headers["Remote-Groups"] = groups
    return headers


def test_a_trusted_proxy_names_the_user_and_their_groups(daemon: Daemon) -> None:
    with client(daemon) as c:
        r = c.get("/v1/me", headers=as_user("ivan", "dev, ops"))
        assert r.status_code == 200, r.text
        assert r.json()["user"] == "ivan" and r.json()["via"] == "proxy"  # created on first sight
        event = daemon.publish("user/ivan/inbox", title="for ivan")
        r = c.get("/v1/events", headers=as_user("ivan", "dev, ops"))
        assert [e["id"] for e in r.json()["events"]] == [event["id"]]
        post = {"topic": "alerts/disk", "title": "full"}
        assert c.post("/v1/events", json=post, headers=as_user("ivan", "ops")).status_code == 201
        # without the group, the group's grants are gone; the defaults stay read-only
        assert c.post("/v1/events", json=post, headers=as_user("ivan")).status_code == 403
        r = c.post(
            "/v1/events", json={"topic": "user/ivan/inbox", "title": "t"}, headers=as_user("ivan")
        )
        assert r.status_code == 403
        # the browser behind the proxy sends the header's credential on its own, so a
        # page of another origin may not use it
        evil = {**as_user("ivan", "ops"), "Origin": "https://evil.example"}
        r = c.post("/v1/events", json=post, headers=evil)
        assert r.status_code == 403 and r.json()["error"]["code"] == "csrf", r.text
        # the ntfy door believes it too
        r = c.get("/alerts-x/json", params={"poll": "1"}, headers=as_user("ivan", "ops"))
        assert r.status_code == 200, r.text
        # two copies of the user header: neither is believed
        r = c.get("/v1/me", headers=[("Remote-User", "ivan"), ("Remote-User", "admin")])
        assert r.status_code == 401 and "more than once" in r.json()["error"]["message"]
        r = c.get("/v1/me", headers=as_user("Ivan Smith"))
        assert r.status_code == 401 and "Remote-User" in r.json()["error"]["message"]


def test_anyone_else_sending_the_header_is_not_believed(daemon: Daemon) -> None:
    daemon.user("admin")  # exists already (the socket user): the header must not reach it
    token = daemon.user("judy", grants={"judy/*": "rw"})
    with client(daemon, UNTRUSTED) as c:
        r = c.get("/v1/me", headers=as_user("admin"))
        assert r.status_code == 401, r.text
        r = c.post("/v1/events", json={"topic": "x", "title": "t"}, headers=as_user("admin", "ops"))
        assert r.status_code == 401, r.text
        # with a real credential, the header is simply ignored
        headers = {"Authorization": f"Bearer {token}", **as_user("admin")}
        assert c.get("/v1/me", headers=headers).json()["user"] == "judy"
        r = c.get("/alerts-x/json", params={"poll": "1"}, headers=as_user("admin", "ops"))
        assert r.status_code == 401, r.text
    with daemon.admin() as c:
        names = [u["name"] for u in c.get("/v1/users").json()["users"]]
    assert "admin" in names and names.count("admin") == 1


def test_the_raw_stream_door_strips_the_header_too(daemon: Daemon) -> None:
    params = {"topics": "user/kim/inbox", "since": "0"}
    daemon.publish("user/kim/inbox", title="for kim")
    sse = ("GET", "/v1/stream/sse")
    with (
        client(daemon, UNTRUSTED) as c,
        c.stream(*sse, params=params, headers=as_user("kim")) as r,
    ):
        assert r.status_code == 401
    with client(daemon) as c, c.stream(*sse, params=params, headers=as_user("kim")) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data:") and json.loads(line[5:])["type"] == "event":
                assert json.loads(line[5:])["event"]["title"] == "for kim"
                break


def test_the_web_page_is_signed_in_by_the_proxy(daemon: Daemon) -> None:
    """GET /v1/session, the page's first question, begins a session for the proxy's
    user; the same cookie answers again while the proxy names that user, and a
    different user from the proxy gets a session of their own."""
    with client(daemon) as c:
        r = c.get("/v1/session", headers=as_user("wanda"))
        assert r.status_code == 200, r.text
        assert r.json()["user"]["name"] == "wanda"
        cookie, csrf = r.cookies.get("notifyd_session"), r.json()["csrf"]
        assert cookie
        again = c.get("/v1/session", headers=as_user("wanda"))
        assert again.json()["csrf"] == csrf and "notifyd_session" not in again.cookies
        other = c.get("/v1/session", headers=as_user("xavier"))
        assert other.json()["user"]["name"] == "xavier" and other.json()["csrf"] != csrf
    with client(daemon, UNTRUSTED) as c:
        assert c.get("/v1/session", headers=as_user("wanda")).status_code == 401


def test_the_accounts_notifyd_keeps_for_itself_cannot_be_named(daemon: Daemon) -> None:
    """``ntfy-upstream`` (the admin account that owns the ntfy iOS poll channel)
    is never taken by an external identity, whatever the proxy says."""
    with client(daemon) as c:
        r = c.get("/v1/me", headers=as_user("ntfy-upstream"))
        assert r.status_code == 401, r.text
        assert "keeps for itself" in r.json()["error"]["message"]
