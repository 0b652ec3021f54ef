"""``/v1/users``, ``/v1/tokens``, ``/v1/acl`` and ``/v1/me``."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from ...core.acl import Principal
from ..auth import principal, services, session_cookie
from ..responses import JSON

router = APIRouter(prefix="/v1", tags=["accounts"])
Caller = Annotated[Principal, Depends(principal)]


async def admin(caller: Caller) -> Principal:
    caller.require_admin()
    return caller


Admin = Annotated[Principal, Depends(admin)]


@router.get("/me", summary="Who the caller is")
async def me(caller: Caller) -> JSON:
    return JSON(
        {
            "user": caller.name,
            "role": caller.role,
            "via": caller.via,
            "scopes": sorted(caller.scopes),
            "topics": caller.token_pattern,
        }
    )


class UserIn(BaseModel):
    name: str = Field(max_length=64)  # accounts.NAME_RE: 1–64 characters
    role: Literal["admin", "user"] = "user"
    password: str | None = Field(None, max_length=1024)


class PasswordIn(BaseModel):
    password: str = Field(max_length=1024)
    current_password: str | None = Field(
        None,
        max_length=1024,
        description="needed to change your own password (not over the Unix socket, "
        "nor for an admin setting someone else's)",
    )


@router.get("/users", summary="List users")
async def list_users(request: Request, caller: Admin) -> JSON:
    users = await services(request).store.list_users()
    return JSON({"users": [asdict(u) for u in users]})


@router.post("/users", status_code=201, summary="Create a user")
async def create_user(request: Request, caller: Admin, body: UserIn) -> JSON:
    user = await services(request).accounts.create_user(body.name, body.role, body.password)
    return JSON(asdict(user), status_code=201)


@router.delete(
    "/users/{name}",
    status_code=204,
    summary="Remove a user and everything that is theirs",
    responses={409: {"description": "the socket_user or the last admin"}},
)
async def delete_user(request: Request, caller: Admin, name: str) -> Response:
    svc = services(request)
    await svc.accounts.delete_user(name, keep=svc.config.socket_user)
    return Response(status_code=204)


@router.put(
    "/users/{name}/password",
    status_code=204,
    summary="Set a password; ends the user's other web sessions",
    responses={403: {"description": "your own: current_password missing or wrong"}},
)
async def set_password(request: Request, caller: Caller, name: str, body: PasswordIn) -> Response:
    session = session_cookie(request.headers.get("cookie")) if caller.via == "session" else None
    await services(request).accounts.change_password(
        caller,
        name,
        body.password,
        body.current_password,
        address=request.client.host if request.client else "local",
        session=session,
    )
    return Response(status_code=204)


class TokenIn(BaseModel):
    user: str | None = Field(None, description="default: the caller")
    scopes: list[Literal["publish", "subscribe", "account", "admin"]] | None = Field(
        None, description="default: publish, subscribe (and admin for admins)"
    )
    topics: str | None = Field(None, description="limit the token to topics matching this pattern")
    label: str | None = Field(None, max_length=64)


@router.post("/tokens", status_code=201, summary="Create a token (its secret is shown only here)")
async def create_token(request: Request, caller: Caller, body: TokenIn) -> JSON:
    scopes: list[str] | None = None if body.scopes is None else [*body.scopes]
    secret, token = await services(request).accounts.create_token(
        caller, body.user or caller.name, scopes, body.topics, body.label
    )
    return JSON({"token": secret, **asdict(token)}, status_code=201)


@router.get("/tokens", summary="List tokens (never their secrets)")
async def list_tokens(
    request: Request, caller: Caller, user: Annotated[str | None, Query()] = None
) -> JSON:
    svc = services(request)
    await svc.accounts.flush_token_uses()
    store = svc.store
    if caller.is_admin and "admin" in caller.scopes:
        tokens = await store.list_tokens()
        if user is not None:
            tokens = [t for t in tokens if t.user == user]
    else:
        tokens = await store.list_tokens(caller.user_id)
    return JSON({"tokens": [asdict(t) for t in tokens]})


@router.delete("/tokens/{token_id}", status_code=204, summary="Revoke a token")
async def revoke_token(
    request: Request, caller: Caller, token_id: Annotated[int, Path(ge=1, le=2**62)]
) -> Response:
    await services(request).accounts.revoke_token(caller, token_id)
    return Response(status_code=204)


class GrantIn(BaseModel):
    user: str
    pattern: str = Field(max_length=255)
    permission: Literal["read", "write", "rw"]


@router.get("/acl", summary="List ACL grants")
async def list_acl(request: Request, caller: Admin, user: str | None = None) -> JSON:
    entries = await services(request).store.list_acl(user)
    return JSON({"acl": [asdict(e) for e in entries]})


@router.post("/acl", status_code=201, summary="Grant a user read/write on a topic pattern")
async def grant(request: Request, caller: Admin, body: GrantIn) -> JSON:
    entry = await services(request).accounts.grant(body.user, body.pattern, body.permission)
    return JSON(asdict(entry), status_code=201)


@router.delete("/acl", status_code=204, summary="Revoke a grant")
async def revoke(request: Request, caller: Admin, user: str, pattern: str) -> Response:
    await services(request).accounts.revoke(user, pattern)
    return Response(status_code=204)
