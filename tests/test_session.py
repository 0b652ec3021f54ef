"""Web sign-in: the session cookie, its CSRF and origin checks, sign-in throttling,
and the static page's security headers (real daemon over TCP)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from conftest import Daemon

#: every daemon here runs on SQLite and on PostgreSQL (tests/conftest.py)
pytestmark = pytest.mark.both_engines


@pytest.fixture
def alice(daemon: Daemon) -> str:
    with daemon.admin() as c:
        r = c.post("/v1/users", json={"name": "alice", "password": "correct horse"})
        assert r.status_code == 201, r.text
        r = c.post("/v1/acl", json={"user": "alice", "pattern": "home/*", "permission": "rw"})
        assert r.status_code == 201, r.text
    return "alice"


def sign_in(daemon: Daemon, password: str = "correct horse", **kw: Any) -> httpx.Response:
    return httpx.post(
        f"{daemon.url}/v1/session", json={"username": "alice", "password": password}, **kw
    )


def test_sign_in_sets_a_strict_httponly_cookie_and_the_session_works(
    daemon: Daemon, alice: str
) -> None:
    with httpx.Client(base_url=daemon.url) as web:
        r = web.post("/v1/session", json={"username": "alice", "password": "correct horse"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["user"]["name"] == "alice" and len(body["csrf"]) == 32
        cookie = r.headers["set-cookie"]
        assert "notifyd_session=nfs_" in cookie
        for attr in ("HttpOnly", "SameSite=strict", "Path=/"):
            assert attr.lower() in cookie.lower(), cookie
        assert "secure" not in cookie.lower()  # plain http on loopback
        assert web.get("/v1/me").json()["via"] == "session"
        assert web.get("/v1/session").json() == body
        # a state change needs the CSRF header…
        r = web.post("/v1/events", json={"topic": "home/door", "title": "hi"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "csrf", r.text
        r = web.post("/v1/inbox/read-all", headers={"X-CSRF-Token": "0" * 32})
        assert r.status_code == 403 and r.json()["error"]["code"] == "csrf", r.text
        # …and then works, on the fast publish path and in FastAPI alike
        h = {"X-CSRF-Token": body["csrf"]}
        r = web.post("/v1/events", json={"topic": "home/door", "title": "hi"}, headers=h)
        assert r.status_code == 201, r.text
        assert web.post("/v1/inbox/read-all", headers=h).status_code == 200
        # ACLs still apply to a session
        r = web.post("/v1/events", json={"topic": "work/x", "title": "no"}, headers=h)
        assert r.status_code == 403 and r.json()["error"]["code"] != "csrf", r.text
        # a request from another origin is refused even with the right header
        r = web.post("/v1/inbox/read-all", headers={**h, "Origin": "https://evil.example"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "csrf", r.text
        r = web.get("/v1/stream/sse", headers={"Origin": "https://evil.example"})
        assert r.status_code == 403, r.text
        # sign out: the cookie is cleared and the old secret no longer works
        old = web.cookies["notifyd_session"]
        assert web.delete("/v1/session", headers=h).status_code == 204
        assert "notifyd_session" not in web.cookies
        r = httpx.get(f"{daemon.url}/v1/me", cookies={"notifyd_session": old})
        assert r.status_code == 401, r.text


def test_a_session_cookie_opens_the_live_stream(daemon: Daemon, alice: str) -> None:
    r = sign_in(daemon)
    cookies = {"notifyd_session": r.cookies["notifyd_session"]}
    with httpx.stream("GET", f"{daemon.url}/v1/stream/sse", cookies=cookies, timeout=10) as s:
        assert s.status_code == 200
        assert s.headers["content-type"].startswith("text/event-stream")


def test_wrong_passwords_are_refused_then_throttled(daemon: Daemon, alice: str) -> None:
    for _ in range(5):
        r = sign_in(daemon, "wrong password")
        assert r.status_code == 401, r.text
        assert "set-cookie" not in r.headers
    r = sign_in(daemon, "wrong password")
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(r.headers["retry-after"]) <= 900
    # even the right password waits: the guesser cannot tell it worked
    assert sign_in(daemon).status_code == 429
    r = httpx.post(f"{daemon.url}/v1/session", json={"username": "alice"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "password", r.text


def test_garbage_cookies_are_not_sessions(daemon: Daemon, alice: str) -> None:
    for value in ("nfs_forged", "nfy_notasession", ""):
        r = httpx.get(f"{daemon.url}/v1/me", cookies={"notifyd_session": value})
        assert r.status_code == 401, (value, r.text)
    assert httpx.get(f"{daemon.url}/v1/session").status_code == 401


def test_removing_a_user_ends_their_sessions(daemon: Daemon, alice: str) -> None:
    cookies = {"notifyd_session": sign_in(daemon).cookies["notifyd_session"]}
    assert httpx.get(f"{daemon.url}/v1/me", cookies=cookies).status_code == 200
    with daemon.admin() as c:
        assert c.delete("/v1/users/alice").status_code == 204
    assert httpx.get(f"{daemon.url}/v1/me", cookies=cookies).status_code == 401


@pytest.mark.parametrize("path", ["/", "/sw.js", "/manifest.webmanifest"])
@pytest.mark.sqlite_only(reason="static files and their headers: no store call")
def test_the_page_is_served_with_a_strict_content_security_policy(
    daemon: Daemon, path: str
) -> None:
    r = httpx.get(daemon.url + path)
    assert r.status_code == 200, r.text
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    again = httpx.get(daemon.url + path, headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304


@pytest.mark.sqlite_only(reason="static file paths: no store call")
def test_static_paths_cannot_escape_the_web_directory(daemon: Daemon) -> None:
    for path in ("/static/../../config.py", "/static/%2e%2e/%2e%2e/config.py", "/static/nope.js"):
        r = httpx.get(daemon.url + path)
        assert r.status_code == 404, (path, r.status_code)
        assert r.json()["error"]["code"] == "not_found"
