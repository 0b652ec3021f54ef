"""``/v1/session/oidc/*``: single sign-on for the web page (OpenID Connect).

A browser flow, so answers are pages and redirects, not JSON:

- ``GET /v1/session/oidc/start[?next=/path]`` remembers a fresh attempt (state,
  nonce, PKCE verifier; :class:`~notifyd.core.oidc.PendingLogin`) in a 10-minute
  cookie scoped to this path (HttpOnly, SameSite=Lax so that it comes back with
  the provider's redirect, Secure over HTTPS) and redirects to the provider. A
  provider that cannot be reached gets a 503 page; ``next`` must be a local path.
- ``GET /v1/session/oidc/callback?code&state`` checks the state against the
  cookie, exchanges the code, verifies the ID token and signs the user in with the
  same session cookie as a password sign-in. That cookie is SameSite=Strict: set
  on this answer to a cross-site navigation it is stored, but a redirect from here
  would still count as part of the cross-site navigation and go without it. So
  success answers a tiny same-origin page that moves on to the app (meta refresh),
  and the app's first load is a same-site navigation that carries the cookie.
- Failures redirect to the sign-in page with ``?sso_error=<kind>``, which the page
  turns into a message; the reason is logged (never a code, token or secret).
"""

from __future__ import annotations

import html
import logging

import httpx
from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ... import __version__
from ...core.errors import NotifydError
from ...core.oidc import (
    Identity,
    OIDCError,
    PendingLogin,
    ProviderUnavailable,
    RelyingParty,
    SignInRefused,
    TransportFailed,
    safe_next,
)
from ...core.services import Services
from ..auth import services
from .session import secure_cookies, set_session_cookie

log = logging.getLogger("notifyd.oidc")

# Not in the OpenAPI document: these are pages for a browser (HTML and redirects),
# not API operations with JSON errors. docs/sso.md describes them.
router = APIRouter(prefix="/v1/session/oidc", tags=["session"], include_in_schema=False)

PATH = "/v1/session/oidc"
PENDING_COOKIE = "notifyd_oidc"
CALLBACK = PATH + "/callback"
#: the pages here load nothing but the app's stylesheet, run no script, and never
#: tell another site where the browser came from (the callback URL holds the code)
_PAGE_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
}


def relying_party(svc: Services, app_state: object) -> RelyingParty | None:
    """The process's relying party (None when ``oidc_issuer`` is empty); made again
    when a reload changed the settings it was made from."""
    cfg = svc.config
    if not cfg.oidc_issuer:
        return None
    key = (
        cfg.oidc_issuer, cfg.oidc_client_id, cfg.oidc_client_secret_file, tuple(cfg.oidc_scopes),
        cfg.oidc_user_claim, cfg.oidc_groups_claim, cfg.destination_policy,
    )  # fmt: skip
    cached = getattr(app_state, "oidc", None)
    if cached is None or cached[0] != key:
        cached = (key, RelyingParty.from_config(cfg, transport=_http))
        setattr(app_state, "oidc", cached)  # noqa: B010 - Starlette's State is attribute-based
    rp: RelyingParty = cached[1]
    return rp


async def _http(
    method: str, url: str, *, form: dict[str, str] | None, auth: tuple[str, str] | None,
    cap: int,
) -> tuple[int, bytes]:  # fmt: skip
    """The relying party's HTTP (:class:`~notifyd.core.oidc.Transport`): a client per
    request (sign-ins are rare, and no pooled connection outlives the destination
    policy of the request that opened it), no redirects, the body read up to ``cap``."""
    try:
        async with (
            httpx.AsyncClient(
                timeout=httpx.Timeout(10.0, connect=5.0),
                follow_redirects=False,
                headers={"User-Agent": f"notifyd/{__version__}", "Accept": "application/json"},
            ) as client,
            client.stream(method, url, data=form, auth=auth) as resp,
        ):
            body = bytearray()
            async for chunk in resp.aiter_bytes():
                body += chunk
                if len(body) > cap:
                    raise TransportFailed(f"the answer is larger than {cap // 1024} KiB")
            return resp.status_code, bytes(body)
    except httpx.HTTPError as exc:  # the message may quote the URL: the type only
        raise TransportFailed(type(exc).__name__) from None


def _base_url(request: Request) -> str:
    base = services(request).config.base_url.rstrip("/")
    return base or str(request.base_url).rstrip("/")


def page(title: str, message: str, status: int, link: tuple[str, str] | None = None) -> Response:
    """A small human page (the flow's answers that are not redirects)."""
    more = ""
    if link is not None:
        more = f'<p><a class="button primary" href="{html.escape(link[0])}">{html.escape(link[1])}</a></p>'
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{html.escape(title)} · notifyd</title><link rel="stylesheet" href="/static/app.css">'
        f'</head><body><main id="main" class="view narrow"><h1>{html.escape(title)}</h1>'
        f"<p>{html.escape(message)}</p>{more}</main></body></html>"
    )
    return HTMLResponse(body, status_code=status, headers=_PAGE_HEADERS)


def _to_sign_in(request: Request, kind: str) -> Response:
    """Back to the sign-in page with a message for ``kind``; the attempt is over."""
    response = RedirectResponse(f"/?sso_error={kind}", status_code=303, headers=_PAGE_HEADERS)
    _forget_attempt(request, response)
    return response


def _forget_attempt(request: Request, response: Response) -> None:
    response.delete_cookie(PENDING_COOKIE, path=PATH, httponly=True, samesite="lax",
                           secure=secure_cookies(request))  # fmt: skip


@router.get(
    "/start",
    summary="Single sign-on: redirects to the OpenID provider",
    responses={302: {"description": "to the provider's sign-in page"},
               400: {"description": "next is not a local path"},
               404: {"description": "single sign-on is not configured"},
               503: {"description": "the provider cannot be reached"}},
)  # fmt: skip
async def start(request: Request, next: str | None = None) -> Response:  # noqa: A002
    svc = services(request)
    try:
        target = safe_next(next)
    except ValueError as exc:
        log.info("single sign-on start refused: %s", exc)
        return page("Cannot sign in", f"This sign-in link is not valid: {exc}.", 400,
                    ("/", "Back to sign-in"))  # fmt: skip
    try:
        rp = relying_party(svc, request.app.state)
        if rp is None:
            return page("Single sign-on is off", "This server has no single sign-on "
                        "(oidc_issuer is not set).", 404, ("/", "Back to sign-in"))  # fmt: skip
        pending = PendingLogin.new(_base_url(request) + CALLBACK, target)
        url = await rp.authorization_url(pending)
    except ProviderUnavailable as exc:
        log.warning("single sign-on unavailable: %s", exc.reason)
        return page(
            "Single sign-on is unavailable",
            "The identity provider cannot be reached right now. Try again in a moment; "
            "if this persists, tell the administrator of this server.",
            503, ("/", "Back to sign-in"),
        )  # fmt: skip
    response = RedirectResponse(url, status_code=302, headers=_PAGE_HEADERS)
    response.set_cookie(
        PENDING_COOKIE, pending.encode(), max_age=600, path=PATH, httponly=True,
        samesite="lax", secure=secure_cookies(request),
    )  # fmt: skip
    return response


@router.get(
    "/callback",
    summary="Single sign-on: the provider sends the browser back here",
    responses={200: {"description": "signed in: a page that opens the notification center"},
               303: {"description": "refused: back to the sign-in page with ?sso_error="}},
)  # fmt: skip
async def callback(
    request: Request,
    code: str | None = None,
    state: str | None = None,
    error: str | None = None,
) -> Response:
    svc = services(request)
    try:
        rp = relying_party(svc, request.app.state)
        if rp is None:
            return _to_sign_in(request, "off")
        if error is not None and state is None:
            # An error without state (some providers, e.g. after "deny") cannot be
            # tied to an attempt; it only ever ends one, so its message is shown.
            raise _provider_error(error)
        pending = PendingLogin.decode(request.cookies.get(PENDING_COOKIE))
        pending.check_state(state)
        if error is not None:
            raise _provider_error(error)
        if not code or len(code) > 4096:
            raise SignInRefused("the provider sent no code", kind="provider")
        identity = await rp.finish(pending, code)
        secret = await _sign_in(svc, identity, request.headers.get("user-agent"))
    except OIDCError as exc:
        log.warning("single sign-on refused: %s", exc.reason)
        return _to_sign_in(request, exc.kind)
    except NotifydError as exc:  # the user may not sign in here (unknown, bad name)
        log.warning("single sign-on refused: %s", exc.message)
        return _to_sign_in(request, "user")
    log.info("%s signed in through single sign-on", identity.name)
    target = html.escape(pending.next)
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="0;url={target}"><title>Signed in · notifyd</title>'
        f'</head><body><p>Signed in. <a href="{target}">Continue to notifyd</a></p></body></html>'
    )
    response = HTMLResponse(body, headers=_PAGE_HEADERS)
    set_session_cookie(request, response, secret, svc.config.session_days)
    _forget_attempt(request, response)
    return response


def _provider_error(error: str) -> SignInRefused:
    kind = "denied" if error == "access_denied" else "provider"
    return SignInRefused(f"the provider answered error={error[:64]!r}", kind=kind)


async def _sign_in(svc: Services, identity: Identity, user_agent: str | None) -> str:
    """Find or create the user and start a session that remembers the groups."""
    source = f"the ID token claim {svc.config.oidc_user_claim!r} (oidc_user_claim)"
    user = await svc.accounts.external_user(identity.name, via="oidc", source=source)
    return await svc.accounts.create_session(
        user, user_agent, svc.config.session_days, groups=identity.groups
    )
