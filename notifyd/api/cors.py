"""Cross-origin use of notifyd's own API by the applications in ``cors_origins``.

An application that embeds ``<notifyd-inbox>`` (``/embed/notifyd-inbox.js``) runs
on another origin than notifyd: its pages import the component, call ``/v1/…``
with a bearer token and open ``/v1/stream/sse`` with ``fetch``. Browsers let them
read the answers only when notifyd says so (CORS). This module is the one place
that decides, for the three places answers are written:

- :class:`CORSMiddleware`, around the FastAPI app: preflights (``OPTIONS`` with
  ``Access-Control-Request-Method``) and the headers of every answer;
- the publish fast path (``fastpath.py``), which answers ``POST /v1/events``
  before the FastAPI app sees it: :func:`wrap_send`;
- the raw stream transport (``rawstream.py``), which writes the SSE head itself:
  :func:`raw_lines`.

Only the exact origins listed are allowed (``Access-Control-Allow-Origin`` echoes
the origin, with ``Vary: Origin``); every other origin gets no CORS header at all,
so the browser keeps the answer from the page. Credentials never count across
origins: there is no ``Access-Control-Allow-Credentials``, so browsers send no
cookie with such requests, and a cookie request carrying a foreign ``Origin`` is
refused anyway (``auth.check_cookie_request``). The list is read from
``svc.config`` on every request, so a reload takes effect at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from ..core.config import Config
from ..core.errors import Forbidden
from ..core.services import Services
from .responses import render_notifyd

#: paths whose answers other origins may read: notifyd's API and the component
PREFIXES = ("/v1/", "/embed/")
ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE"
ALLOW_HEADERS = "Authorization, Content-Type, Last-Event-ID, Idempotency-Key, Accept, Cache-Control"
#: headers a page may read beyond the CORS-safelisted ones
EXPOSE_HEADERS = "Retry-After, ETag, WWW-Authenticate"
#: how long a browser may reuse a preflight's answer (Chromium caps it at 2 h)
MAX_AGE = "600"

Send = Callable[[dict[str, Any]], Awaitable[None]]

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _normal(origin: str) -> str | None:
    """``origin`` as browsers write it (lower case, no default port), or None."""
    try:
        parts = urlsplit(origin.strip())
        scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
    except ValueError:
        return None
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


@lru_cache(maxsize=8)
def _allowed(origins: tuple[str, ...]) -> frozenset[str]:
    return frozenset(n for n in map(_normal, origins) if n is not None)


def applies(path: str) -> bool:
    """Whether answers on ``path`` may be shared with listed origins."""
    return path.startswith(PREFIXES)


def allowed_origin(config: Config, origin: str | None) -> str | None:
    """The origin to echo in ``Access-Control-Allow-Origin``, or None when
    ``origin`` is absent or not in ``cors_origins``. The header must repeat the
    origin exactly as the browser sent it."""
    if not origin or not config.cors_origins or len(origin) > 512:
        return None
    if _normal(origin) in _allowed(tuple(config.cors_origins)):
        return origin
    return None


def response_headers(config: Config, origin: str | None) -> list[tuple[str, str]]:
    """The CORS headers of an answer on a shared path: Allow-Origin and
    Expose-Headers for a listed origin, and ``Vary: Origin`` whenever the answer
    depends on the origin (caches must not hand one origin's answer to another)."""
    if not config.cors_origins:
        return []
    allowed = allowed_origin(config, origin)
    if allowed is None:
        return [("Vary", "Origin")]
    return [
        ("Access-Control-Allow-Origin", allowed),
        ("Access-Control-Expose-Headers", EXPOSE_HEADERS),
        ("Vary", "Origin"),
    ]


def preflight_headers(config: Config, headers: dict[str, str]) -> list[tuple[str, str]] | None:
    """The answer to a preflight from a listed origin, or None to refuse it."""
    allowed = allowed_origin(config, headers.get("origin"))
    if allowed is None:
        return None
    out = [
        ("Access-Control-Allow-Origin", allowed),
        ("Access-Control-Allow-Methods", ALLOW_METHODS),
        ("Access-Control-Allow-Headers", ALLOW_HEADERS),
        ("Access-Control-Max-Age", MAX_AGE),
        ("Vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
    ]
    # Chromium asks before a public page reaches a private address (Private
    # Network Access); a listed origin is trusted to do that
    if headers.get("access-control-request-private-network", "").lower() == "true":
        out.append(("Access-Control-Allow-Private-Network", "true"))
    return out


def _encoded(headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]


def wrap_send(send: Send, headers: list[tuple[str, str]]) -> Send:
    """``send`` adding ``headers`` to the response head (``Vary`` merged with one
    the app set). Returns ``send`` itself when there is nothing to add."""
    if not headers:
        return send
    extra = _encoded(headers)

    async def sending(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            own = [h for h in message.get("headers", []) if h[0].lower() != b"vary"]
            vary = [h[1] for h in message.get("headers", []) if h[0].lower() == b"vary"]
            added = []
            for name, value in extra:
                if name == b"vary" and vary:
                    value = b", ".join([*vary, value])
                added.append((name, value))
            message = {**message, "headers": [*own, *added]}
        await send(message)

    return sending


def raw_lines(headers: list[tuple[str, str]]) -> bytes:
    """``headers`` as HTTP/1.1 header lines, for heads written by hand."""
    return b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers)


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


class CORSMiddleware:
    """ASGI middleware around the FastAPI app (see the module's docstring).

    A preflight on a shared path is answered here, 204 for a listed origin and
    403 in notifyd's error shape, without CORS headers, for any other; every other
    answer on a shared path gets :func:`response_headers`. WebSockets pass
    untouched: browsers do not apply CORS to them, and ``?token=`` or a bearer
    header is what authenticates them."""

    def __init__(self, app: Any, svc: Services) -> None:
        self.app = app
        self.svc = svc

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Send) -> None:
        if scope["type"] != "http" or not applies(scope["path"]):
            await self.app(scope, receive, send)
            return
        config = self.svc.config
        if scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method"):
            await self._preflight(config, scope, send)
            return
        headers = response_headers(config, _header(scope, b"origin"))
        await self.app(scope, receive, wrap_send(send, headers))

    @staticmethod
    async def _preflight(config: Config, scope: dict[str, Any], send: Send) -> None:
        wanted = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in scope["headers"]
            if k in (b"origin", b"access-control-request-private-network")
        }
        answer = preflight_headers(config, wanted)
        if answer is None:
            refusal = Forbidden(
                "this origin may not use notifyd's API (it is not in cors_origins)", code="cors"
            )
            await render_notifyd(refusal).send(send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 204,
                "headers": _encoded(answer) + [(b"content-length", b"0")],
            }
        )
        await send({"type": "http.response.body", "body": b""})
