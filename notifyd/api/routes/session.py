"""``/v1/session``: signing in to the web page with a user name and password
(single sign-on is in ``oidc.py`` and ends in the same cookie), and which ways
to sign in this server offers (``GET /v1/session/methods``, for the page).

``password_login = false`` refuses ``POST /v1/session`` (403) and the page hides
its password form; tokens, the socket and the ntfy/Gotify apps' Basic auth are
not affected.

The session secret travels only in an HttpOnly, SameSite=Strict cookie (Secure
when the page is served over HTTPS); the page gets the anti-CSRF value to send
with state-changing requests in the JSON body instead. Failed sign-ins are
throttled per client address and per (user, address).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from ...core.acl import Principal
from ...core.errors import Forbidden, Unauthorized
from ...core.store import User
from ..auth import (
    SESSION_COOKIE,
    check_cookie_request,
    check_origin,
    proxy_principal,
    services,
    session_cookie,
)
from ..clientaddr import proxy_identity
from ..responses import JSON

router = APIRouter(prefix="/v1", tags=["session"])


class SignIn(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=1024)


def secure_cookies(request: Request) -> bool:
    """Whether cookies get the Secure flag: the page is served over HTTPS."""
    base = services(request).config.base_url
    return request.url.scheme == "https" or base.startswith("https://")


def set_session_cookie(request: Request, response: Response, secret: str, days: float) -> None:
    """The session cookie, the same for every way of signing in."""
    response.set_cookie(
        SESSION_COOKIE, secret, max_age=int(days * 86400), path="/", httponly=True,
        samesite="strict", secure=secure_cookies(request),
    )  # fmt: skip


def _body(user: User, csrf: str) -> dict:
    return {"user": {"name": user.name, "role": user.role, "tz": user.tz}, "csrf": csrf}


@router.post(
    "/session",
    summary="Sign in (web page): sets the session cookie",
    responses={401: {"description": "wrong user name or password"},
               403: {"description": "password sign-in is off (password_login = false)"},
               429: {"description": "too many failed attempts (see Retry-After)"}},
)  # fmt: skip
async def sign_in(body: SignIn, request: Request) -> Response:
    svc = services(request)
    if not svc.config.password_login:
        raise Forbidden(
            "password sign-in is turned off on this server (password_login = false): "
            + ("use single sign-on" if svc.config.oidc_issuer else "use a token"),
            code="password_login_disabled",
        )
    address = request.client.host if request.client else "local"
    async with svc.accounts.signin.attempt(body.username, address):
        user = await svc.accounts.check_password(body.username, body.password)
    days = svc.config.session_days
    secret = await svc.accounts.create_session(user, request.headers.get("user-agent"), days)
    response = JSON(_body(user, svc.accounts.csrf_token(secret)))
    set_session_cookie(request, response, secret, days)
    return response


@router.get(
    "/session/methods",
    summary="The ways to sign in to the web page (anonymous)",
    responses={200: {"description": '`{"password": bool, "sso": null | {"label", "start"}}`'}},
)
async def methods(request: Request) -> Response:
    """What the sign-in page offers: the password form (``password_login``) and
    single sign-on (``oidc_issuer``) with its button's label."""
    cfg = services(request).config
    sso = None
    if cfg.oidc_issuer:
        sso = {"label": cfg.oidc_button_label, "start": "/v1/session/oidc/start"}
    return JSON({"password": cfg.password_login, "sso": sso})


@router.get("/session", summary="The signed-in user and the page's anti-CSRF value")
async def current(request: Request) -> Response:
    """The page's session. Behind a forward-auth proxy (``proxy_user_header``) the
    proxy's user is signed in here: a session is begun for them (or the page's
    own kept, when it is theirs), so the page works as after any sign-in."""
    svc = services(request)
    secret = session_cookie(request.headers.get("cookie"))
    identity = proxy_identity()
    if identity is not None:
        check_origin(svc, request.headers)
        return await _proxy_session(request, await proxy_principal(svc, identity), secret)
    if secret is None:
        raise Unauthorized("not signed in")
    caller = await svc.accounts.authenticate_session(secret)
    user = await svc.store.get_user_by_id(caller.user_id)
    if user is None:
        raise Unauthorized("not signed in")
    return JSON(_body(user, svc.accounts.csrf_token(secret)))


async def _proxy_session(request: Request, principal: Principal, secret: str | None) -> Response:
    svc = services(request)
    if secret is not None:
        try:
            mine = (await svc.accounts.authenticate_session(secret)).user_id == principal.user_id
        except Unauthorized:
            mine = False
        if mine:
            user = await svc.store.get_user_by_id(principal.user_id)
            if user is not None:
                return JSON(_body(user, svc.accounts.csrf_token(secret)))
    user = await svc.store.get_user_by_id(principal.user_id)
    if user is None:
        raise Unauthorized("not signed in")
    days = svc.config.session_days
    identity = proxy_identity()
    groups = identity.groups if identity is not None else ()
    secret = await svc.accounts.create_session(
        user, request.headers.get("user-agent"), days, groups=tuple(groups)
    )
    response = JSON(_body(user, svc.accounts.csrf_token(secret)))
    set_session_cookie(request, response, secret, days)
    return response


@router.delete("/session", status_code=204, summary="Sign out: ends the session")
async def sign_out(request: Request) -> Response:
    svc = services(request)
    secret = session_cookie(request.headers.get("cookie"))
    if secret is not None:
        check_cookie_request(svc, secret, request.method, request.headers)
        await svc.accounts.end_session(secret)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                           secure=secure_cookies(request))  # fmt: skip
    return response
