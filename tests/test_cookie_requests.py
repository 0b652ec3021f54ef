"""A session cookie is sent by the browser on its own, also for a link or an
<img> on another site: no GET request may change state through it. ntfy's GET
publish and clear routes need the CSRF header like any POST; the API docs page
(which would load third-party scripts into this origin) is gone."""

from __future__ import annotations

import httpx
import pytest
from conftest import Daemon


@pytest.fixture
def web(daemon: Daemon) -> tuple[httpx.Client, str]:
    with daemon.admin() as c:
        r = c.post("/v1/users", json={"name": "alice", "password": "correct horse"})
        assert r.status_code == 201, r.text
        r = c.post("/v1/acl", json={"user": "alice", "pattern": "home*", "permission": "rw"})
        assert r.status_code == 201, r.text
    client = httpx.Client(base_url=daemon.url)
    r = client.post("/v1/session", json={"username": "alice", "password": "correct horse"})
    assert r.status_code == 200, r.text
    return client, r.json()["csrf"]


def _titles(client: httpx.Client) -> list[str]:
    return [e["title"] for e in client.get("/v1/events").json()["events"]]


def test_ntfy_get_publish_needs_the_csrf_header_with_a_cookie(
    web: tuple[httpx.Client, str],
) -> None:
    client, csrf = web
    for verb in ("publish", "send", "trigger"):
        r = client.get(f"/homedoor/{verb}", params={"title": f"forged {verb}"})
        assert r.status_code == 403, r.text
        assert r.json()["http"] == 403, r.text  # ntfy's error shape
    assert not [t for t in _titles(client) if t.startswith("forged")]
    r = client.get("/homedoor/publish", params={"title": "mine"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200, r.text
    assert "mine" in _titles(client)


def test_ntfy_get_clear_needs_the_csrf_header_with_a_cookie(
    web: tuple[httpx.Client, str], daemon: Daemon
) -> None:
    client, csrf = web
    event = daemon.publish("homedoor", title="ring", collapse_key="bell")
    r = client.get("/homedoor/bell/clear")
    assert r.status_code == 403, r.text
    assert client.get(f"/v1/events/{event['id']}").json()["read"] is False
    r = client.get("/homedoor/bell/read", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200, r.text
    assert client.get(f"/v1/events/{event['id']}").json()["read"] is True


def test_a_token_still_uses_ntfy_get_routes(daemon: Daemon) -> None:
    """ntfy's webhooks (GET …/publish) are for scripts with a token: unaffected."""
    token = daemon.user("bob", grants={"home*": "rw"})
    r = httpx.get(f"{daemon.url}/homedoor/trigger", params={"auth": ""},
                  headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["message"] == "triggered"


def test_no_interactive_docs_page_from_a_cdn(daemon: Daemon) -> None:
    assert httpx.get(f"{daemon.url}/v1/docs").status_code == 404
    assert httpx.get(f"{daemon.url}/v1/openapi.json").status_code == 200
