"""ntfy's account API for the caller's own account, in ntfy's dialect: what Home
Assistant's ntfy integration (the ``aiontfy`` library) calls when it is set up.

- ``GET /v1/account``: the caller in ntfy's account shape (``username``, ``role``,
  ``tokens``, ``limits`` and ``stats``, which ``aiontfy`` requires). The limits are
  notifyd's settings; notifyd has no tiers, reservations, e-mail or call quotas, so
  those are absent or 0.
- ``POST /v1/account/token`` ``{"label"?, "expires"?}``: a new notifyd token of the
  caller with scopes ``publish`` and ``subscribe`` (what an app that publishes and
  subscribes needs; not ``account``), within the caller's own topic pattern if its
  credential has one. Changing the account needs a password (Basic), a web session,
  the socket or a token with scope ``account`` (:meth:`.Accounts.create_token`).
  notifyd's tokens do not expire: a non-zero ``expires`` is refused.
- ``DELETE /v1/account/token``: revokes the token named by the ``X-Token`` header
  (ntfy's way; any token of the caller's, which needs the ``account`` scope), or
  else the token making the request (any token may revoke itself).

Credentials are ntfy's (:mod:`.ntfy_auth`: Basic user:password, Basic with an empty
user and a token, Bearer, ``?auth=``); there is no anonymous account (401). Errors
have ntfy's shape ``{"code", "http", "error", "link"}``; ``link`` is always there,
because ``aiontfy`` builds its exceptions from all four fields. Tokens are stored
hashed, so ``tokens`` lists each by its prefix (``nfy_AbCd…``), never in full, and
nothing here logs a token.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from starlette.responses import Response

from ...core.accounts import hash_token, is_token
from ...core.acl import Principal
from ...core.errors import NotifydError
from ...core.services import Services
from ...core.store import Token
from ...core.timeutil import now_rfc3339, parse_rfc3339
from ..auth import SOCKET_SCOPE_KEY
from ..responses import carries_body, render_ntfy
from .ntfy_auth import authenticate
from .ntfy_params import INVALID, NtfyError, from_notifyd

#: the link ntfy's 401 and 403 errors carry (server/errors.go); other errors here link
#: to ntfy's documentation of access tokens
AUTH_LINK = "https://ntfy.sh/docs/publish/#authentication"
TOKENS_LINK = "https://ntfy.sh/docs/publish/#access-tokens"
#: ntfy reads at most this much of an account API body (server_account.go)
JSON_BODY_MAX = 4096
#: ntfy's codes for what this API refuses (server/errors.go)
NO_TOKEN = 40023
JSON_INVALID = 40024
JSON_TOO_LARGE = 41303
#: the scopes of a token made here: publishing and subscribing, as an app does
NEW_TOKEN_SCOPES = ["publish", "subscribe"]
LABEL_MAX = 64


class NtfyAccountRoute(APIRoute):
    """Answers every error in ntfy's shape, with a ``link`` (``aiontfy`` needs one)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except (NtfyError, NotifydError) as exc:
                err = exc if isinstance(exc, NtfyError) else from_notifyd(exc)
                if err.link is None:
                    err.link = AUTH_LINK if err.http in (401, 403, 429) else TOKENS_LINK
                close = carries_body(request.headers)
                return render_ntfy(err, close=close).response()

        return route


router = APIRouter(include_in_schema=False, route_class=NtfyAccountRoute)


def _services(request: Request) -> Services:
    return request.app.state.services


async def _caller(request: Request) -> Principal:
    return await authenticate(
        _services(request), via_socket=bool(request.scope.get(SOCKET_SCOPE_KEY)),
        method=request.method, headers=request.headers, query=dict(request.query_params),
        address=request.client.host if request.client else "local",
    )  # fmt: skip


def _json(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body) + b"\n", media_type="application/json")


def _unix(rfc3339: str | None) -> int | None:
    if not rfc3339:
        return None
    try:
        return int(parse_rfc3339(rfc3339))
    except ValueError:
        return None


def _token_entry(token: Token) -> dict[str, Any]:
    """A token in ntfy's account shape: by its prefix (the secret is not kept)."""
    entry: dict[str, Any] = {"token": token.prefix + "…"}
    if token.label:
        entry["label"] = token.label
    # ntfy always sends last_access (aiontfy requires it): never used = created
    entry["last_access"] = _unix(token.last_used_at) or _unix(token.created_at) or 0
    return entry


def _limits(svc: Services) -> dict[str, Any]:
    cfg = svc.config
    return {
        # the limits are the server's configuration, as ntfy's are for a user
        # without a tier ("ip")
        "basis": "ip",
        # publish_rate is per token and second; a day of it (0: no limit)
        "messages": int(cfg.publish_rate * 86400),
        "messages_expiry_duration": cfg.retention_days * 86400,
        "emails": 0,
        "calls": 0,
        "reservations": 0,
        "attachment_total_size": cfg.attachment_user_quota_bytes,
        "attachment_file_size": cfg.attachment_max_bytes,
        "attachment_expiry_duration": int(cfg.attachment_expiry_seconds),
        "attachment_bandwidth": 0,
    }


@router.get("/v1/account")
async def account(request: Request) -> Response:
    """The caller's account in ntfy's shape."""
    svc = _services(request)
    principal = await _caller(request)
    limits = _limits(svc)
    used = await svc.store.attachment_usage(principal.user_id, now_rfc3339())
    tokens = await svc.store.list_tokens(principal.user_id)
    return _json(
        {
            "username": principal.name,
            "role": "admin" if principal.is_admin else "user",
            "tokens": [_token_entry(t) for t in tokens],
            "limits": limits,
            "stats": {
                # notifyd does not count a user's publishes: nothing is used up
                "messages": 0,
                "messages_remaining": limits["messages"],
                "emails": 0,
                "emails_remaining": 0,
                "calls": 0,
                "calls_remaining": 0,
                "reservations": 0,
                "reservations_remaining": 0,
                "attachment_total_size": used,
                "attachment_total_size_remaining": max(0, limits["attachment_total_size"] - used),
            },
        }
    )


async def _body(request: Request) -> dict[str, Any]:
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > JSON_BODY_MAX:
            raise NtfyError(413, JSON_TOO_LARGE, "JSON body too large",
                            f"at most {JSON_BODY_MAX} bytes")  # fmt: skip
    if not raw.strip():
        return {}  # ntfy allows an empty body here
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise NtfyError(400, JSON_INVALID, "invalid request: request body must be valid JSON") from None  # fmt: skip
    if not isinstance(body, dict):
        raise NtfyError(400, JSON_INVALID, "invalid request: request body must be a JSON object")
    return body


def _label(body: dict[str, Any]) -> str | None:
    label = body.get("label")
    if label is None:
        return None
    if not isinstance(label, str):
        raise NtfyError(400, INVALID, "invalid request", "label must be a string")
    label = label.strip()
    if len(label) > LABEL_MAX:
        raise NtfyError(400, INVALID, "invalid request", f"label is at most {LABEL_MAX} characters")
    return label or None


def _check_expires(body: dict[str, Any]) -> None:
    expires = body.get("expires")
    if expires is None or (type(expires) is int and expires == 0):
        return
    if type(expires) is not int or expires < 0:
        raise NtfyError(400, INVALID, "invalid request", "expires must be a Unix time, or 0")
    raise NtfyError(
        400, INVALID, "invalid request",
        "notifyd's tokens do not expire: send expires 0 (or leave it out), and revoke the "
        "token with DELETE /v1/account/token when it is no longer needed",
    )  # fmt: skip


@router.post("/v1/account/token")
async def create_token(request: Request) -> Response:
    """A new token of the caller (``publish`` and ``subscribe``), shown this once."""
    svc = _services(request)
    principal = await _caller(request)
    body = await _body(request)
    label = _label(body)
    _check_expires(body)
    user = await svc.store.get_user_by_id(principal.user_id)
    if user is None:
        raise NtfyError(401, 40101, "unauthorized", "the user no longer exists")
    secret, _token = await svc.accounts.create_token(
        principal, user.name, NEW_TOKEN_SCOPES, principal.token_pattern, label
    )
    answer: dict[str, Any] = {"token": secret}
    if label:
        answer["label"] = label
    answer["last_access"] = int(time.time())
    return _json(answer)


@router.delete("/v1/account/token")
async def delete_token(request: Request) -> Response:
    """Revokes the token in ``X-Token`` (or ``Token``), else the one in use."""
    svc = _services(request)
    principal = await _caller(request)
    named = (request.headers.get("x-token") or request.headers.get("token") or "").strip()
    if named:
        found = await svc.store.token_by_hash(hash_token(named)) if is_token(named) else None
        if found is None or found.user_id != principal.user_id:
            raise NtfyError(404, 40401, "page not found", "no such token of yours")
        token_id = found.id
    elif principal.token_id is not None:
        token_id = principal.token_id
    else:
        raise NtfyError(400, NO_TOKEN, "invalid request: no token provided",
                        "name the token in the X-Token header")  # fmt: skip
    await svc.accounts.revoke_token(principal, token_id)
    return _json({"success": True})
