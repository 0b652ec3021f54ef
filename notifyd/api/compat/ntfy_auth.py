"""Who is calling an ntfy endpoint.

ntfy's clients authenticate with ``Authorization: Bearer <token>``, with
``Basic user:password``, with ``Basic :<token>`` (a token as the password, the user
name empty), or with any of these as ``?auth=`` — the base64 of the whole
``Authorization`` value, for WebSocket clients that cannot set headers. notifyd's
tokens (``nfy_…``) play ntfy's ``tk_…`` tokens, and so do JWTs from ``jwt_issuer``
(as the password only with an empty user name: a password may look like one);
user names and passwords are notifyd's (argon2, checked in a worker thread,
failures throttled like the web sign-in). The Unix socket, a trusted proxy's identity header and the web page's
session cookie work as everywhere.
Anonymous requests are refused: 401.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

from ...core.accounts import TOKEN_PREFIX, is_token
from ...core.acl import Principal
from ...core.errors import NotifydError, RateLimited, Unauthorized
from ...core.jwt import looks_like_jwt
from ...core.services import Services
from ..auth import resolve, session_cookie
from ..clientaddr import proxy_identity
from .ntfy_params import NtfyError, from_notifyd

UNAUTHORIZED = (401, 40101, "unauthorized")


def _b64(value: str) -> bytes:
    v = value.strip()
    v += "=" * (-len(v) % 4)
    try:
        return base64.urlsafe_b64decode(v.replace("+", "-").replace("/", "_"))
    except (binascii.Error, ValueError):
        raise NtfyError(*UNAUTHORIZED, "malformed base64 in credentials") from None


async def _credentials(svc: Services, value: str, address: str) -> Principal:
    scheme, _, cred = value.strip().partition(" ")
    cred = cred.strip()
    if scheme.lower() == "bearer" and cred:
        return await svc.accounts.authenticate_token(cred)
    if scheme.lower() == "basic" and cred:
        try:
            name, sep, password = _b64(cred).decode("utf-8").partition(":")
        except UnicodeDecodeError:
            raise Unauthorized("malformed Basic credentials") from None
        if not sep:
            raise Unauthorized("malformed Basic credentials")
        if password.startswith(TOKEN_PREFIX) or (
            not name and (looks_like_jwt(password) or is_token(password))
        ):
            # a token as the password (ntfy: empty user name); a JWT or a Gotify-form
            # token too, but only without a name (a password may look like one)
            principal = await svc.accounts.authenticate_token(password)
            if name and name != principal.name:
                raise Unauthorized("that token belongs to another user")
            return principal
        if not name:
            raise Unauthorized("an empty user name needs a token as the password")
        return await svc.accounts.authenticate_password(name, password, "basic", address)
    raise Unauthorized("use Basic (user:password, or :token) or Bearer credentials")


async def authenticate(
    svc: Services,
    *,
    via_socket: bool,
    method: str,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    address: str,
) -> Principal:
    """The caller, or :class:`NtfyError` 401 (429 while throttled). ``headers`` has
    lowercase names."""
    try:
        raw = query.get("auth") or query.get("authorization")
        value = _b64(raw).decode("utf-8", "replace") if raw else headers.get("authorization", "")
        if value.strip():
            return await _credentials(svc, value, address)
        if (
            not via_socket
            and session_cookie(headers.get("cookie")) is None
            and proxy_identity() is None
        ):
            raise Unauthorized(
                "this server needs credentials: send 'Authorization: Basic' (user name and "
                "password, or an empty user name and a token) or 'Bearer <token>', or ?auth="
            )
        return await resolve(svc, via_socket, None, None, method=method, headers=headers)
    except Unauthorized as exc:
        raise NtfyError(*UNAUTHORIZED, exc.message) from None
    except RateLimited as exc:
        raise NtfyError(429, 42909, "limit reached: too many failed sign-in attempts",
                        "try again later", retry_after=exc.retry_after) from None  # fmt: skip
    except NotifydError as exc:  # e.g. a session cookie from another origin (403)
        raise from_notifyd(exc) from None
