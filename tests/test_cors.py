"""Cross-origin use of the API (``cors_origins``, ``notifyd/api/cors.py``), over plain
HTTP against a real daemon: preflights, the headers of FastAPI's answers, of the
publish fast path and of both SSE heads (the raw transport and the ASGI fallback),
the component's script, and that cookies never count across origins."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest
from conftest import Daemon

APP = "https://app.example.org"
#: the same origin as the config lists it, written differently (case, default port)
APP_SPELLED = "https://APP.example.org:443"
FOREIGN = "https://evil.example.net"
PASSWORD = "correct-horse-battery"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(
        tmp_path_factory.mktemp("cors") / "data",
        extra_env={"NOTIFYD_CORS_ORIGINS": f"{APP_SPELLED}, http://localhost:8081"},
    )
    d.data_dir.mkdir()
    d.start()
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.stop()


@pytest.fixture(scope="module")
def token(daemon: Daemon) -> str:
    with daemon.admin() as c:
        r = c.post("/v1/users", json={"name": "carol", "role": "user", "password": PASSWORD})
        assert r.status_code == 201, r.text
    return daemon.user("carol", grants={"user/carol/*": "rw"})


def no_credentials(r: httpx.Response) -> None:
    assert "access-control-allow-credentials" not in r.headers, r.headers


def shared_with(r: httpx.Response, origin: str) -> None:
    """The answer is readable by ``origin``, and by it alone."""
    assert r.headers.get("access-control-allow-origin") == origin, r.headers
    assert "origin" in r.headers.get("vary", "").lower(), r.headers
    assert "retry-after" in r.headers.get("access-control-expose-headers", "").lower()
    no_credentials(r)


def not_shared(r: httpx.Response) -> None:
    assert "access-control-allow-origin" not in r.headers, r.headers
    no_credentials(r)


def test_preflight_allowed_for_a_listed_origin_only(daemon: Daemon) -> None:
    ask = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
    }
    with httpx.Client(base_url=daemon.url) as c:
        for path in ("/v1/events", "/v1/stream/sse", "/v1/inbox/read-all", "/v1/events/1/read"):
            r = c.options(path, headers={**ask, "Origin": APP})
            assert r.status_code == 204, (path, r.text)
            assert r.headers["access-control-allow-origin"] == APP
            assert "POST" in r.headers["access-control-allow-methods"]
            allowed = r.headers["access-control-allow-headers"].lower()
            for name in ("authorization", "content-type", "last-event-id", "idempotency-key"):
                assert name in allowed, allowed
            assert int(r.headers["access-control-max-age"]) > 0
            assert "origin" in r.headers["vary"].lower()
            no_credentials(r)
        # Chromium's Private Network Access question is answered for a listed origin
        r = c.options(
            "/v1/events",
            headers={**ask, "Origin": APP, "Access-Control-Request-Private-Network": "true"},
        )
        assert r.headers["access-control-allow-private-network"] == "true"
        # another origin, or a listed one on another scheme or port: refused, no CORS header
        for origin in (FOREIGN, "http://app.example.org", "https://app.example.org:8443", "null"):
            r = c.options("/v1/events", headers={**ask, "Origin": origin})
            assert r.status_code == 403, (origin, r.text)
            assert r.json()["error"]["code"] == "cors"
            not_shared(r)
            assert "access-control-allow-methods" not in r.headers
        # an OPTIONS that is no preflight is left to the routes (405 as before)
        assert c.options("/v1/events", headers={"Origin": APP}).status_code == 405
        # outside the API (the page, ntfy's topics): never shared
        r = c.options("/", headers={**ask, "Origin": APP})
        not_shared(r)


def test_answers_carry_the_origin_when_listed(daemon: Daemon, token: str) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=daemon.url) as c:
        r = c.get("/v1/events", headers={**auth, "Origin": APP})
        assert r.status_code == 200, r.text
        shared_with(r, APP)
        # the origin is echoed as the browser sent it; a second listed origin works too
        r = c.get("/v1/inbox/count", headers={**auth, "Origin": "http://localhost:8081"})
        shared_with(r, "http://localhost:8081")
        # errors are readable too: a 401 is how the page learns to fetch a new token
        r = c.get("/v1/events", headers={"Origin": APP, "Authorization": "Bearer nfy_wrong"})
        assert r.status_code == 401
        shared_with(r, APP)
        assert "www-authenticate" in r.headers["access-control-expose-headers"].lower()
        # another origin: the answer is made (bearer tokens are not ambient) but not shared
        r = c.get("/v1/events", headers={**auth, "Origin": FOREIGN})
        assert r.status_code == 200
        not_shared(r)
        assert "origin" in r.headers.get("vary", "").lower()
        # no Origin at all (curl, same-origin GET): no CORS header
        not_shared(c.get("/v1/events", headers=auth))


def test_a_large_body_refused_before_it_is_read_is_shared(daemon: Daemon) -> None:
    """A request whose body is large is authenticated from its head before the
    body is read (``server._authenticate_first``, outside the CORS middleware): a
    listed origin still reads the 401, so the page fetches a fresh token instead of
    seeing a network error."""
    body = b'{"topic": "user/carol/x", "message": "' + b"x" * 16_000 + b'"}'
    bad = {"Authorization": "Bearer nfy_wrong", "Content-Type": "application/json"}
    with httpx.Client(base_url=daemon.url) as c:
        for method, path in (("POST", "/v1/events"), ("PUT", "/v1/preferences")):
            r = c.request(method, path, content=body, headers={**bad, "Origin": APP})
            assert r.status_code == 401, (path, r.text)
            assert r.json()["error"]["code"] == "unauthorized"
            shared_with(r, APP)
        r = c.put("/v1/preferences", content=body, headers={**bad, "Origin": FOREIGN})
        assert r.status_code == 401
        not_shared(r)


def test_publish_fast_path_is_shared(daemon: Daemon, token: str) -> None:
    auth = {"Authorization": f"Bearer {token}", "Origin": APP}
    with httpx.Client(base_url=daemon.url) as c:
        r = c.post("/v1/events", json={"topic": "user/carol/x", "title": "hi"}, headers=auth)
        assert r.status_code == 201, r.text
        shared_with(r, APP)
        r = c.post("/v1/events", json={"topic": "user/carol/x", "priority": 9}, headers=auth)
        assert r.status_code == 422, r.text
        shared_with(r, APP)
        r = c.post("/v1/events", content=b"{", headers={**auth, "Content-Type": "application/json"})
        assert r.status_code == 400
        shared_with(r, APP)
        r = c.post(
            "/v1/events",
            json={"topic": "user/carol/x", "title": "hi"},
            headers={"Authorization": f"Bearer {token}", "Origin": FOREIGN},
        )
        assert r.status_code == 201
        not_shared(r)


def raw_head(daemon: Daemon, request: bytes) -> tuple[str, dict[str, str]]:
    """Send ``request`` on a new connection (the raw stream transport takes it);
    the status line and headers of the answer."""
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as s:
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return head[0], headers


def test_sse_heads_are_shared(daemon: Daemon, token: str) -> None:
    def sse(origin: str, credential: str) -> tuple[str, dict[str, str]]:
        return raw_head(
            daemon,
            b"GET /v1/stream/sse?since=all HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Accept: text/event-stream\r\n"
            + f"Authorization: Bearer {credential}\r\nOrigin: {origin}\r\n\r\n".encode(),
        )

    # the raw transport: the stream head, and its refusals
    status, headers = sse(APP, token)
    assert status == "HTTP/1.1 200 OK"
    assert headers["content-type"] == "text/event-stream"
    assert headers["access-control-allow-origin"] == APP
    assert "access-control-allow-credentials" not in headers
    status, headers = sse(APP, "nfy_wrong")
    assert status.startswith("HTTP/1.1 401")
    assert headers["access-control-allow-origin"] == APP
    status, headers = sse(FOREIGN, token)
    assert status == "HTTP/1.1 200 OK"
    assert "access-control-allow-origin" not in headers

    # the ASGI fallback: a stream asked for on a connection that served a request before
    with httpx.Client(base_url=daemon.url) as c:
        assert c.get("/healthz").status_code == 200
        with c.stream(
            "GET",
            "/v1/stream/sse",
            headers={"Authorization": f"Bearer {token}", "Origin": APP},
        ) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            shared_with(r, APP)


def test_the_component_script_is_importable_by_listed_origins(daemon: Daemon) -> None:
    with httpx.Client(base_url=daemon.url) as c:
        r = c.get("/embed/notifyd-inbox.js", headers={"Origin": APP})
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/javascript")
        assert r.headers["access-control-allow-origin"] == APP
        assert "customElements.define" in r.text and "innerHTML" not in r.text
        etag = r.headers["etag"]
        assert "no-cache" in r.headers["cache-control"]  # cached, revalidated
        r = c.get("/embed/notifyd-inbox.js", headers={"Origin": APP, "If-None-Match": etag})
        assert r.status_code == 304
        assert r.headers["access-control-allow-origin"] == APP
        r = c.get("/embed/notifyd-inbox.js", headers={"Origin": FOREIGN})
        not_shared(r)
        assert "origin" in r.headers["vary"].lower()
        assert c.get("/embed/other.js").status_code == 404


def test_cookies_never_count_across_origins(daemon: Daemon, token: str) -> None:
    with httpx.Client(base_url=daemon.url) as web:
        r = web.post("/v1/session", json={"username": "carol", "password": PASSWORD})
        assert r.status_code == 200, r.text
        csrf = r.json()["csrf"]
        secret = web.cookies["notifyd_session"]
        assert web.get("/v1/events").status_code == 200  # same origin: fine
        # even a listed origin cannot use the session cookie
        for origin in (APP, FOREIGN):
            r = web.get("/v1/events", headers={"Origin": origin})
            assert r.status_code == 403 and r.json()["error"]["code"] == "csrf", r.text
            no_credentials(r)
            r = web.post(
                "/v1/events",
                json={"topic": "user/carol/x", "title": "no"},
                headers={"Origin": origin, "X-CSRF-Token": csrf},
            )
            assert r.status_code == 403 and r.json()["error"]["code"] == "csrf", r.text
            no_credentials(r)
            status, _ = raw_head(
                daemon,
                b"GET /v1/stream/sse HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                + f"Cookie: notifyd_session={secret}\r\nOrigin: {origin}\r\n\r\n".encode(),
            )
            assert status.startswith("HTTP/1.1 403"), status
            # WebSockets know no CORS: the cookie check alone keeps another origin out
            status, _ = raw_head(
                daemon,
                b"GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n"
                + f"Cookie: notifyd_session={secret}\r\nOrigin: {origin}\r\n\r\n".encode(),
            )
            assert status.startswith("HTTP/1.1 403"), status
    # a cross-origin WebSocket with ?token= is accepted (that is how apps may use it)
    status, _ = raw_head(
        daemon,
        f"GET /v1/stream?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\nOrigin: {FOREIGN}\r\n\r\n".encode(),
    )
    assert status.startswith("HTTP/1.1 101"), status
