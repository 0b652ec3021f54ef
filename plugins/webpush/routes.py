"""``/v1/webpush/…``: the VAPID public key and the caller's push subscriptions.

A subscription is stored as a channel of kind ``webpush`` named
``webpush-<first 8 hex digits of sha256(endpoint)>``, so the page can find its
own subscription again by hashing the endpoint it holds, and re-subscribing the
same browser keeps one channel.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from notifyd.api.auth import principal, services
from notifyd.api.responses import JSON
from notifyd.core import destinations
from notifyd.core.acl import Principal
from notifyd.core.channels import ChannelRecord
from notifyd.core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from notifyd.core.ratelimit import require_channel_room
from notifyd.core.services import Services

from .channel import WebPushChannel
from .subscription import SubscriptionError, parse_subscription
from .vapid import load_or_create, public_key_b64

router = APIRouter(prefix="/v1/webpush", tags=["webpush"])
Caller = Annotated[Principal, Depends(principal)]


class SubscriptionKeys(BaseModel):
    p256dh: str = Field(description="the browser's P-256 public key, base64url")
    auth: str = Field(description="the 16-byte authentication secret, base64url")


class SubscriptionIn(BaseModel):
    """A browser PushSubscription, as ``JSON.stringify(subscription)`` gives it."""

    endpoint: str = Field(description="the push service URL for this browser")
    expirationTime: float | None = None  # noqa: N815 - the browser's name
    keys: SubscriptionKeys


def channel_name(endpoint: str, digits: int = 8) -> str:
    return f"webpush-{hashlib.sha256(endpoint.encode()).hexdigest()[:digits]}"


def shown(ch: ChannelRecord) -> dict[str, Any]:
    """A subscription as the API shows it: never the endpoint path or the keys."""
    return {
        "id": ch.id,
        "name": ch.name,
        **WebPushChannel.public(ch.config),
        "created_at": ch.created_at,
        "last_success_at": ch.last_success_at,
        "last_error": ch.last_error,
    }


def _require_subscribe(caller: Principal) -> None:
    if "subscribe" not in caller.scopes and "admin" not in caller.scopes:
        raise Forbidden("receiving pushes needs a token with the 'subscribe' scope")


@router.get("/vapid-public-key", summary="The key to pass as applicationServerKey")
async def vapid_public_key(request: Request, caller: Caller) -> JSON:
    key = load_or_create(services(request).config.data_path)
    return JSON({"public_key": public_key_b64(key)})


@router.get("/subscriptions", summary="The caller's push subscriptions")
async def list_subscriptions(request: Request, caller: Caller) -> JSON:
    chans = await services(request).store.list_channels(caller.user_id, kind="webpush")
    return JSON({"subscriptions": [shown(c) for c in chans]})


@router.post(
    "/subscriptions",
    status_code=201,
    summary="Register this browser for pushes (201 new, 200 already registered)",
)
async def subscribe(request: Request, caller: Caller, body: SubscriptionIn) -> JSON:
    _require_subscribe(caller)
    caller.require_account()  # a subscription is a channel: it receives the user's events
    svc = services(request)
    try:
        config = parse_subscription(body.model_dump(), request.headers.get("user-agent", ""))
    except SubscriptionError as exc:
        raise ValidationFailed(str(exc), field=exc.field) from None
    try:  # the same policy as POST /v1/channels (private_destinations)
        await destinations.check_destinations(
            [config["endpoint"]],
            allow_private=await destinations.owner_may_reach_private(
                svc.config, svc.store, caller.user_id
            ),
            policy=svc.config.destination_policy,
        )
    except destinations.DestinationRefused as exc:
        raise ValidationFailed(
            f"endpoint: push services are on the public internet; {exc}",
            field="endpoint",
            code="private_destination",
        ) from None
    await _release_elsewhere(svc, caller.user_id, config["endpoint"])
    # the name is a short hash; a longer one settles the (unlikely) case of two
    # endpoints of one user sharing its first 8 digits
    for digits in (8, 16, 64):
        name = channel_name(config["endpoint"], digits)
        existing = await svc.store.get_channel(caller.user_id, name)
        if existing is None:
            await require_channel_room(svc.store, svc.config, caller.user_id)
            try:
                ch = await svc.store.create_channel(caller.user_id, name, "webpush", config)
            except Conflict:  # a concurrent request for the same browser won
                existing = await svc.store.get_channel(caller.user_id, name)
                if existing is None:
                    raise
            else:
                return JSON(shown(ch), status_code=201)
        if existing.kind != "webpush" or existing.config.get("endpoint") != config["endpoint"]:
            continue
        if existing.config.get("keys") == config["keys"]:
            return JSON(shown(existing), status_code=200)
        # same endpoint, new keys: the browser re-subscribed; the old keys are useless
        await svc.store.delete_channel(existing.id)
        ch = await svc.store.create_channel(caller.user_id, name, "webpush", config)
        return JSON(shown(ch), status_code=200)
    raise ValidationFailed("cannot name this subscription", field="endpoint")


async def _release_elsewhere(svc: Services, user_id: int, endpoint: str) -> None:
    """A browser belongs to whoever subscribed it last: when someone else signs in
    on a shared browser, the previous user's pushes must stop showing there."""
    for ch in await svc.store.list_channels(kind="webpush"):
        if ch.user_id != user_id and ch.config.get("endpoint") == endpoint:
            try:
                await svc.store.delete_channel(ch.id)
            except NotFound:
                pass  # removed meanwhile: fine


@router.delete("/subscriptions/{subscription_id}", status_code=204, summary="Unsubscribe")
async def unsubscribe(request: Request, caller: Caller, subscription_id: int) -> Response:
    caller.require_account()
    svc = services(request)
    chans = await svc.store.list_channels(caller.user_id, kind="webpush")
    if not any(c.id == subscription_id for c in chans):
        raise NotFound(f"you have no push subscription {subscription_id}", field="id")
    try:
        await svc.store.delete_channel(subscription_id)
    except NotFound:
        pass  # removed meanwhile (a 410 from the push service): the outcome is the same
    return Response(status_code=204)
