"""Who is calling: the Unix socket (acts as ``socket_user``), or a bearer token."""

from __future__ import annotations

from fastapi import Request

from ..core.acl import Principal
from ..core.errors import Unauthorized
from ..core.services import Services

SOCKET_SCOPE_KEY = "notifyd.via_socket"


def services(request: Request) -> Services:
    return request.app.state.services


def bearer(header: str | None) -> str | None:
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized("use 'Authorization: Bearer <token>'")
    return value.strip()


async def resolve(svc: Services, via_socket: bool, authorization: str | None,
                  query_token: str | None = None) -> Principal:  # fmt: skip
    if via_socket:
        return await svc.accounts.socket_principal(svc.config.socket_user)
    token = bearer(authorization) or query_token
    if token is None:
        raise Unauthorized("authentication required: send 'Authorization: Bearer <token>'")
    return await svc.accounts.authenticate_token(token)


async def principal(request: Request) -> Principal:
    """FastAPI dependency: the authenticated caller, or 401."""
    return await resolve(
        services(request),
        bool(request.scope.get(SOCKET_SCOPE_KEY)),
        request.headers.get("authorization"),
    )
