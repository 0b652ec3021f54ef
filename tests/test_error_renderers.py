"""One error renderer per wire dialect (``notifyd.api.responses``): the renderers
themselves (shape, headers, ``Retry-After`` rounding, the three forms of one answer),
and, against a real daemon, a 401, 413 and 429 from every door in that door's
dialect — notifyd's publish fast path, FastAPI routes and connection guard, ntfy's
publish fast path and routes, Gotify's routes and WebSocket, and the raw-socket
stream doors."""

from __future__ import annotations

import base64
import itertools
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import orjson
import pytest
from conftest import Daemon
from starlette.exceptions import HTTPException as StarletteHTTPException

from notifyd.api.compat.ntfy_params import NtfyError
from notifyd.api.responses import (
    GOTIFY,
    NOTIFYD,
    NTFY,
    BodyTooLarge,
    ErrorAnswer,
    check_body_size,
    declared_length,
    render,
    render_gotify,
    render_notifyd,
    render_ntfy,
    retry_after_value,
    status_error,
)
from notifyd.core.errors import (
    NotifydError,
    PayloadTooLarge,
    RateLimited,
    StoreUnavailable,
    Unauthorized,
    ValidationFailed,
)

# -- the renderers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "header"),
    [(0.2, "1"), (1.0, "1"), (1.01, "2"), (0, "1"), (0.0, "1"), (59.5, "60"), (None, None)],
)
def test_retry_after_is_whole_seconds_rounded_up_never_zero(
    seconds: float | None, header: str | None
) -> None:
    assert retry_after_value(seconds) == header
    for answer in (
        render_notifyd(RateLimited("slow down", retry_after=seconds)),
        render_ntfy(RateLimited("slow down", retry_after=seconds)),
        render_gotify(RateLimited("slow down", retry_after=seconds)),
        render_ntfy(NtfyError(429, 42901, "limit reached", retry_after=seconds)),
    ):
        assert dict(answer.headers).get("Retry-After") == header, answer


def forms_agree(answer: ErrorAnswer) -> None:
    """The ASGI messages, the Starlette response and the raw bytes carry the same
    status, body and headers."""
    start, body = answer.asgi()
    assert start["type"] == "http.response.start" and body["type"] == "http.response.body"
    assert start["status"] == answer.status and body["body"] == answer.body
    asgi = {k.decode(): v.decode() for k, v in start["headers"]}
    assert asgi["content-length"] == str(len(answer.body))
    for name, value in answer.headers:
        assert asgi[name.lower()] == value
    response = answer.response()
    assert response.status_code == answer.status and response.body == answer.body
    for name, value in answer.headers:
        assert response.headers[name] == value
    raw = answer.raw()
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert rest == answer.body
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith(f"HTTP/1.1 {answer.status} ")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    assert fields["Content-Length"] == str(len(answer.body))
    assert fields["Connection"] == "close"  # the raw doors always end the connection
    for name, value in answer.headers:
        assert fields[name] == value
    ws_start, ws_body = answer.asgi(websocket=True)
    assert ws_start["type"] == "websocket.http.response.start"
    assert ws_body["type"] == "websocket.http.response.body"


def test_notifyd_renderer() -> None:
    answer = render_notifyd(ValidationFailed("priority: too high", field="priority"))
    assert answer.status == 422
    assert orjson.loads(answer.body) == {
        "error": {"code": "invalid", "message": "priority: too high", "field": "priority"}
    }
    assert answer.headers == (("Content-Type", "application/json"),)
    forms_agree(answer)

    answer = render_notifyd(Unauthorized("no token"), close=True)
    assert orjson.loads(answer.body) == {"error": {"code": "unauthorized", "message": "no token"}}
    headers = dict(answer.headers)
    assert headers["WWW-Authenticate"] == 'Bearer realm="notifyd"'
    assert headers["Connection"] == "close" and "Retry-After" not in headers
    forms_agree(answer)

    answer = render_notifyd(StoreUnavailable("disk full", retry_after=4.5))
    assert answer.status == 503 and dict(answer.headers)["Retry-After"] == "5"
    assert orjson.loads(answer.body)["error"]["code"] == "store_unavailable"
    forms_agree(answer)

    # extra headers are kept (Starlette's Allow on a 405), never a second Content-Type
    answer = render_notifyd(status_error(405, "Method Not Allowed"),
                            headers={"Allow": "GET", "content-type": "text/plain"})  # fmt: skip
    assert orjson.loads(answer.body)["error"]["code"] == "method_not_allowed"
    assert answer.headers == (("Content-Type", "application/json"), ("Allow", "GET"))
    forms_agree(answer)


def test_ntfy_renderer() -> None:
    answer = render_ntfy(Unauthorized("wrong user name or password"))
    assert answer.status == 401 and answer.body.endswith(b"\n")
    assert orjson.loads(answer.body) == {
        "code": 40101, "http": 401, "error": "unauthorized, wrong user name or password",
        "link": "https://ntfy.sh/docs/publish/#authentication",  # as ntfy's 401 has it
    }  # fmt: skip
    assert dict(answer.headers)["WWW-Authenticate"] == 'Basic realm="notifyd"'
    forms_agree(answer)

    # notifyd's 422 is ntfy's 400, with ntfy's code for the field
    answer = render_ntfy(ValidationFailed("priority: bad", field="priority"), close=True)
    assert answer.status == 400
    assert orjson.loads(answer.body)["code"] == 40007
    assert dict(answer.headers)["Connection"] == "close"
    forms_agree(answer)

    answer = render_ntfy(NtfyError(413, 41303, "JSON body too large", link="https://ntfy.sh/docs"))
    assert orjson.loads(answer.body) == {
        "code": 41303, "http": 413, "error": "JSON body too large", "link": "https://ntfy.sh/docs",
    }  # fmt: skip
    forms_agree(answer)

    answer = render_ntfy(BodyTooLarge(4096))
    assert answer.status == 413 and orjson.loads(answer.body)["code"] == 41301


def test_gotify_renderer() -> None:
    answer = render_gotify(ValidationFailed("Field 'message' is required", field="message"))
    assert answer.status == 400
    assert orjson.loads(answer.body) == {
        "error": "Bad Request", "errorCode": 400, "errorDescription": "Field 'message' is required",
    }  # fmt: skip
    forms_agree(answer)

    answer = render_gotify(Unauthorized("you need to provide a valid access token"))
    assert answer.status == 401
    assert dict(answer.headers)["WWW-Authenticate"] == 'Basic realm="notifyd"'
    forms_agree(answer)

    answer = render_gotify(status_error(501, "not supported by notifyd: users"))
    assert orjson.loads(answer.body)["error"] == "Not Implemented"


@pytest.mark.parametrize("door", [NOTIFYD, NTFY, GOTIFY])
def test_render_picks_the_doors_dialect(door: str) -> None:
    internal = orjson.loads(render(door, NotifydError("internal error")).body)
    limited = render(door, RateLimited("slow down", retry_after=0.5), close=True)
    assert limited.status == 429 and dict(limited.headers)["Retry-After"] == "1"
    assert dict(limited.headers)["Connection"] == "close"
    if door == NOTIFYD:
        assert internal == {"error": {"code": "internal", "message": "internal error"}}
    elif door == NTFY:
        assert internal["http"] == 500 and internal["code"] == 50001
    else:
        assert internal["errorCode"] == 500 and internal["error"] == "Internal Server Error"


def test_one_body_size_limit() -> None:
    exc = BodyTooLarge(4096)
    assert isinstance(exc, PayloadTooLarge) and isinstance(exc, StarletteHTTPException)
    assert exc.status == exc.status_code == 413 and exc.code == "too_large"
    assert exc.message == "the request body is larger than 4096 bytes (max_request_bytes)"
    check_body_size(4096, 4096)
    check_body_size(-1, 4096)  # no Content-Length
    with pytest.raises(BodyTooLarge):
        check_body_size(4097, 4096)
    assert declared_length(b"12") == 12 and declared_length("12") == 12
    assert declared_length(None) == declared_length("1e3") == declared_length("²") == -1


# -- every door of a real daemon ------------------------------------------------------------

LIMIT = 4096  # max_request_bytes
EVENT = {"topic": "a", "title": "t"}
BIG = b"{" + b" " * (2 * LIMIT) + b"}"
ENV = {
    "NOTIFYD_MAX_REQUEST_BYTES": str(LIMIT),
    "NOTIFYD_ATTACHMENT_MAX_BYTES": str(LIMIT),  # ntfy stores a long body as a file
    # one event, then 100 s until the next: the second publish of a token is a 429
    "NOTIFYD_PUBLISH_RATE": "0.01",
    "NOTIFYD_PUBLISH_BURST": "1",
    "NOTIFYD_MAX_STREAMS_PER_USER": "1",
}


@pytest.fixture(scope="module")
def d(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    daemon = Daemon(tmp_path_factory.mktemp("renderers"), extra_env=ENV)
    daemon.start()
    yield daemon
    daemon.stop()


_n = itertools.count()


def token(d: Daemon, **kw: Any) -> str:
    return d.user(f"r{next(_n)}", grants={"*": "rw"}, **kw)


def notifyd_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    common_headers(r, status, "Bearer")


def ntfy_error(r: httpx.Response, status: int, code: int) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.content.endswith(b"\n")
    body = r.json()
    link = {"link"} if status in (401, 403) else set()  # ntfy links its auth docs there
    assert set(body) == {"code", "http", "error"} | link, body
    assert body["http"] == status and body["code"] == code, body
    common_headers(r, status, "Basic")


def gotify_error(r: httpx.Response, status: int) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"error", "errorCode", "errorDescription"}, body
    assert body["errorCode"] == status, body
    common_headers(r, status, "Basic")


def common_headers(r: httpx.Response, status: int, scheme: str) -> None:
    if status == 401:
        assert r.headers["www-authenticate"] == f'{scheme} realm="notifyd"', r.headers
    else:
        assert "www-authenticate" not in r.headers, r.headers
    if status == 429:
        retry = r.headers["retry-after"]
        assert retry.isdigit() and 1 <= int(retry) <= 100, retry
    else:
        assert "retry-after" not in r.headers, r.headers
    if status == 413:  # the body was left unread
        assert r.headers["connection"] == "close", r.headers


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def call(d: Daemon, method: str, path: str, **kw: Any) -> httpx.Response:
    """One request on a connection of its own (so that stream paths reach the
    raw-socket doors, which serve a connection's first request)."""
    with httpx.Client(base_url=d.url, timeout=10) as c:
        return c.request(method, path, **kw)


@contextmanager
def held_stream(d: Daemon, path: str, secret: str) -> Iterator[None]:
    """A stream kept open meanwhile (the user's one stream: max_streams_per_user 1)."""
    with (
        httpx.Client(base_url=d.url, timeout=10) as c,
        c.stream("GET", path, headers=bearer(secret)) as held,
    ):
        assert held.status_code == 200
        yield


def raw_exchange(d: Daemon, request: bytes) -> httpx.Response:
    """Send ``request`` as is on a new connection; the answer (head and
    Content-Length body) as an httpx.Response."""
    with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
        s.sendall(request)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            assert chunk, buf
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = [tuple(line.split(": ", 1)) for line in lines[1:]]
        length = int(next(v for k, v in headers if k.lower() == "content-length"))
        while len(body) < length:
            chunk = s.recv(65536)
            assert chunk, body
            body += chunk
    return httpx.Response(int(lines[0].split()[1]), headers=headers, content=body[:length])


def ws_request(path: str, headers: dict[str, str] | None = None) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return (
        f"GET {path} HTTP/1.1\r\nHost: notifyd\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode()


def test_notifyd_publish_fast_path(d: Daemon) -> None:
    """``POST /v1/events`` (the bare-ASGI publish fast path)."""
    good = token(d)
    notifyd_error(call(d, "POST", "/v1/events", json=EVENT, headers=bearer("nfy_wrong")),
                  401, "unauthorized")  # fmt: skip
    notifyd_error(call(d, "POST", "/v1/events", content=BIG, headers=bearer(good)),
                  413, "too_large")  # fmt: skip
    assert call(d, "POST", "/v1/events", json=EVENT, headers=bearer(good)).status_code == 201
    notifyd_error(call(d, "POST", "/v1/events", json=EVENT, headers=bearer(good)),
                  429, "rate_limited")  # fmt: skip


def test_notifyd_fastapi_routes_and_the_guard(d: Daemon) -> None:
    """notifyd's FastAPI routes (the exception handlers) and the connection guard's
    check of credentials before a large body."""
    admin = token(d, role="admin")
    notifyd_error(call(d, "GET", "/v1/events"), 401, "unauthorized")
    notifyd_error(call(d, "POST", "/v1/channels", content=BIG, headers=bearer(admin)),
                  413, "too_large")  # fmt: skip
    # a large body without credentials: refused by the guard before any of it is read
    r = call(d, "POST", "/v1/channels", content=BIG, headers=bearer("nfy_wrong"))
    notifyd_error(r, 401, "unauthorized")
    assert r.headers["connection"] == "close"
    # an unknown endpoint and a wrong method: Starlette's errors, notifyd's shape
    notifyd_error(call(d, "GET", "/v1/nothing-here"), 404, "not_found")
    r = call(d, "PATCH", "/v1/events")
    notifyd_error(r, 405, "method_not_allowed")
    assert "allow" in r.headers


def test_notifyd_raw_stream_doors(d: Daemon) -> None:
    """``/v1/stream/sse`` and ``/v1/stream`` on the raw socket: 401 and the stream cap's
    429, with ``Connection: close``."""
    r = call(d, "GET", "/v1/stream/sse")
    notifyd_error(r, 401, "unauthorized")
    assert r.headers["connection"] == "close"
    r = raw_exchange(d, ws_request("/v1/stream", bearer("nfy_wrong")))
    notifyd_error(r, 401, "unauthorized")
    assert r.headers["connection"] == "close"
    good = token(d)
    with held_stream(d, "/v1/stream/sse", good):
        r = call(d, "GET", "/v1/stream/sse", headers=bearer(good))  # over the cap of 1
        notifyd_error(r, 429, "rate_limited")
        assert r.headers["connection"] == "close"


def test_ntfy_publish_fast_path(d: Daemon) -> None:
    """``PUT``/``POST /<topic>`` and ``POST /`` (ntfy's bare-ASGI publish)."""
    good = token(d)
    ntfy_error(call(d, "POST", "/nt1", content=b"hi", headers=bearer("nfy_wrong")), 401, 40101)
    ntfy_error(call(d, "POST", "/nt1", content=BIG, headers=bearer(good)), 413, 41301)
    ntfy_error(call(d, "PUT", "/", content=BIG, headers=bearer(good)), 413, 41301)
    assert call(d, "POST", "/nt1", content=b"hi", headers=bearer(good)).status_code == 200
    ntfy_error(call(d, "POST", "/nt1", content=b"hi", headers=bearer(good)), 429, 42901)
    ntfy_error(call(d, "PUT", "/", json={"topic": "nt1", "message": "hi"}, headers=bearer(good)),
               429, 42901)  # fmt: skip


def test_ntfy_routes(d: Daemon) -> None:
    """ntfy's FastAPI routes (``NtfyRoute``): webhooks and ``/auth``."""
    ntfy_error(call(d, "GET", "/nt2/auth", headers=bearer("nfy_wrong")), 401, 40101)
    good = token(d)
    path = "/nt2/publish?message=hi"
    assert call(d, "GET", path, headers=bearer(good)).status_code == 200
    ntfy_error(call(d, "GET", path, headers=bearer(good)), 429, 42901)
    # paths under /v1 keep notifyd's 404
    notifyd_error(call(d, "GET", "/v1/nothing/json"), 404, "not_found")


def test_ntfy_raw_stream_doors(d: Daemon) -> None:
    """``/<topics>/json|sse|raw|ws`` on the raw socket: 401 and the stream cap's 429."""
    r = call(d, "GET", "/nt3/json", headers=bearer("nfy_wrong"))
    ntfy_error(r, 401, 40101)
    assert r.headers["connection"] == "close"
    ntfy_error(raw_exchange(d, ws_request("/nt3/ws", bearer("nfy_wrong"))), 401, 40101)
    good = token(d)
    with held_stream(d, "/nt3/json", good):
        r = call(d, "GET", "/nt3/sse", headers=bearer(good))  # over the cap of 1
        ntfy_error(r, 429, 42901)
        assert r.headers["connection"] == "close"


def test_gotify_routes(d: Daemon) -> None:
    """``POST /message`` (``GotifyRoute``) and ``/stream`` (a WebSocket denial)."""
    app = token(d, scopes=["publish"])
    gotify_error(call(d, "POST", "/message", json={"message": "hi"}), 401)
    gotify_error(call(d, "POST", "/message", params={"token": app}, content=BIG,
                      headers={"Content-Type": "application/json"}), 413)  # fmt: skip
    r = call(d, "POST", "/message", params={"token": app}, json={"message": "hi"})
    assert r.status_code == 200, r.text
    gotify_error(call(d, "POST", "/message", params={"token": app}, json={"message": "hi"}), 429)
    gotify_error(raw_exchange(d, ws_request("/stream", {"X-Gotify-Key": "nfy_wrong"})), 401)
