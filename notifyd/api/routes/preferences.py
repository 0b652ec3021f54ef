"""``/v1/preferences``: rules, mute, quiet hours, digests, rate limit."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request

from ...core.acl import Principal
from ...core.errors import ValidationFailed
from ...core.prefs import Preferences
from ..auth import principal, services
from ..responses import JSON
from .channels import _target_user

router = APIRouter(prefix="/v1", tags=["preferences"])
Caller = Annotated[Principal, Depends(principal)]

EXAMPLE = {
    "rules": [
        {"topic": "ci/*", "min_priority": "high", "channels": ["phone"]},
        {"topic": "noisy/*", "mute": True},
    ],
    "quiet_hours": {"start": "22:00", "end": "07:00"},
    "timezone": "Europe/Berlin",
    "digests": {"email": 600},
    "rate_limit_per_minute": 20,
}


@router.get("/preferences", summary="The caller's preferences (admins: ?user=)")
async def get_preferences(request: Request, caller: Caller, user: str | None = None) -> JSON:
    svc = services(request)
    user_id = await _target_user(svc, caller, user)
    doc = await svc.store.get_preferences(user_id)
    return JSON(Preferences.from_json(doc).to_json())


@router.put("/preferences", summary="Replace the caller's preferences (admins: ?user=)")
async def put_preferences(
    request: Request,
    caller: Caller,
    body: Annotated[dict[str, Any], Body(openapi_examples={"typical": {"value": EXAMPLE}})],
    user: str | None = None,
) -> JSON:
    caller.require_account()  # muting or rerouting is an account change
    svc = services(request)
    user_id = await _target_user(svc, caller, user)
    try:
        prefs = Preferences.from_json(body, stored=False)
    except ValueError as exc:
        field, _, message = str(exc).partition(": ")
        raise ValidationFailed(f"{field}: {message}", field=field) from None
    doc = prefs.to_json()
    await svc.store.set_preferences(user_id, doc)
    # open streams (on every node) re-read preferences (mutes) when they reconnect
    svc.store.signal({"kind": "prefs", "user": user_id})
    return JSON(doc)
