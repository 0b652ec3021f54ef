"""Who is calling: the Unix socket (acts as ``socket_user``), a bearer token (a
notifyd token or a JWT), the user a trusted reverse proxy names, or the web page's
session cookie.

A cookie is sent by the browser on its own, so requests it authenticates get two
extra checks: state-changing methods must carry ``X-CSRF-Token`` (the value the
page got from ``/v1/session``, derived from the session secret), and when the
browser says where the request comes from (``Origin``), it must be this server.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from urllib.parse import urlsplit

from fastapi import Request

from ..core.acl import Principal
from ..core.errors import Forbidden, Unauthorized
from ..core.services import Services
from .clientaddr import ProxyIdentity, proxy_identity

SOCKET_SCOPE_KEY = "notifyd.via_socket"
SESSION_COOKIE = "notifyd_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def services(request: Request) -> Services:
    return request.app.state.services


def bearer(header: str | None) -> str | None:
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized("use 'Authorization: Bearer <token>'")
    return value.strip()


def session_cookie(cookie_header: str | None) -> str | None:
    """The session secret from a ``Cookie`` header, if there is one.

    A plain split on ``;`` (RFC 6265 §5.4): linear in the header's length whatever
    it holds. (The standard library's ``SimpleCookie`` unquotes backslash escapes in
    quadratic time before Python 3.11.10, CVE-2024-7592.) Session secrets are plain
    tokens, so a value with quotes or escapes is simply not one we issued."""
    if not cookie_header or SESSION_COOKIE not in cookie_header:
        return None
    for pair in cookie_header.split(";"):
        name, eq, value = pair.partition("=")
        if eq and name.strip() == SESSION_COOKIE:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return value or None
    return None


def _netloc(url: str) -> str | None:
    """The lower-case host[:port] of ``url``; None when it is not a URL at all
    (``urlsplit`` raises ValueError on e.g. ``http://[``)."""
    try:
        return urlsplit(url).netloc.lower()
    except ValueError:
        return None


def check_origin(svc: Services, headers: Mapping[str, str]) -> None:
    """When the browser says where a request comes from (``Origin``), it must be
    this server: for credentials the browser adds on its own (the session cookie,
    and whatever a forward-auth proxy adds for it)."""
    origin = headers.get("origin")
    if origin:
        allowed = {headers.get("host", "").lower(), _netloc(svc.config.base_url or "")}
        netloc = _netloc(origin)
        if not netloc or netloc not in allowed:
            raise Forbidden("cross-origin request refused", code="csrf")


def check_cookie_request(
    svc: Services, secret: str, method: str, headers: Mapping[str, str]
) -> None:
    """The CSRF and origin checks of a cookie-authenticated request."""
    check_origin(svc, headers)
    if method.upper() not in SAFE_METHODS:
        sent = headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent, svc.accounts.csrf_token(secret)):
            raise Forbidden(
                "missing or wrong X-CSRF-Token header (sign in again if this persists)",
                code="csrf",
            )


async def proxy_principal(svc: Services, identity: ProxyIdentity) -> Principal:
    """The caller a trusted reverse proxy names (:mod:`.clientaddr`)."""
    if identity.repeated:
        raise Unauthorized(
            f"the header {svc.config.proxy_user_header} came more than once: neither copy is "
            "believed (check the reverse proxy's configuration)"
        )
    return await svc.accounts.proxy_principal(identity.user, identity.groups)


async def resolve(
    svc: Services,
    via_socket: bool,
    authorization: str | None,
    query_token: str | None = None,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
) -> Principal:
    """The caller. ``headers`` (lower-case names) are needed only to accept the
    session cookie: the socket, a bearer token (``nfy_…`` or a JWT) or ``?token=``,
    and then a trusted proxy's identity header, come first."""
    if via_socket:
        return await svc.accounts.socket_principal(svc.config.socket_user)
    token = bearer(authorization) or query_token
    if token is not None:
        return await svc.accounts.authenticate_token(token)
    identity = proxy_identity()
    if identity is not None:
        if headers is not None:
            check_origin(svc, headers)  # the proxy vouches for a browser: not cross-site
        return await proxy_principal(svc, identity)
    secret = session_cookie(headers.get("cookie")) if headers is not None else None
    if secret is not None and headers is not None:
        check_cookie_request(svc, secret, method, headers)
        return await svc.accounts.authenticate_session(secret)
    raise Unauthorized("authentication required: send 'Authorization: Bearer <token>' or sign in")


async def principal(request: Request) -> Principal:
    """FastAPI dependency: the authenticated caller, or 401."""
    return await resolve(
        services(request),
        bool(request.scope.get(SOCKET_SCOPE_KEY)),
        request.headers.get("authorization"),
        method=request.method,
        headers=request.headers,
    )
