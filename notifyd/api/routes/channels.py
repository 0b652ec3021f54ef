"""``/v1/channels``, ``/v1/deliveries`` and ``/v1/stats``."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from ...core import destinations
from ...core.acl import Principal
from ...core.channels import ChannelRecord, DeliveryError
from ...core.errors import NotFound, ValidationFailed
from ...core.models import SLUG_RE
from ...core.ratelimit import require_channel_room
from ...core.services import Services
from ..auth import principal, services
from ..responses import JSON

router = APIRouter(prefix="/v1", tags=["delivery"])
Caller = Annotated[Principal, Depends(principal)]


def public_channel(svc: Services, ch: ChannelRecord) -> dict[str, Any]:
    """A channel as the API shows it: the plugin decides what of its config is safe."""
    impl = svc.channels.get(ch.kind)
    shown = type(impl).public(ch.config) if impl is not None else {}
    out = asdict(ch)
    out["config"] = shown
    out["available"] = impl is not None
    return out


async def _target_user(svc: Services, caller: Principal, user: str | None) -> int:
    if user is None or user == caller.name:
        return caller.user_id
    caller.require_admin()
    found = await svc.store.get_user(user)
    if found is None:
        raise NotFound(f"no user named {user!r}", field="user")
    return found.id


async def _channel(svc: Services, caller: Principal, name: str, user: str | None) -> ChannelRecord:
    user_id = await _target_user(svc, caller, user)
    ch = await svc.store.get_channel(user_id, name)
    if ch is None:
        raise NotFound(f"no channel named {name!r}", field="name")
    return ch


class ChannelIn(BaseModel):
    name: str = Field(max_length=32, description="a slug: a–z, 0–9, '-' and '_'")
    url: str | None = Field(None, max_length=4096, description="an Apprise URL (kind apprise)")
    kind: str | None = Field(None, description="default: apprise when url is given")
    config: dict[str, Any] | None = None
    user: str | None = Field(None, description="admins may add channels for others")


@router.get("/channels", summary="The caller's channels (admins: ?user= or all=true)")
async def list_channels(
    request: Request, caller: Caller, user: str | None = None, all: bool = False
) -> JSON:
    svc = services(request)
    if all:
        caller.require_admin()
        chans = await svc.store.list_channels()
    else:
        chans = await svc.store.list_channels(await _target_user(svc, caller, user))
    return JSON({"channels": [public_channel(svc, c) for c in chans]})


@router.post(
    "/channels",
    status_code=201,
    summary="Add a channel (an Apprise URL, or kind + config)",
    responses={409: {"description": "The name is taken, or max_channels_per_user is reached"}},
)
async def add_channel(request: Request, caller: Caller, body: ChannelIn) -> JSON:
    caller.require_account()  # a channel receives everything its owner may read
    svc = services(request)
    if not SLUG_RE.fullmatch(body.name):
        raise ValidationFailed("channel names are slugs: a–z, 0–9, '-' and '_'", field="name")
    kind = body.kind or ("apprise" if body.url is not None else None)
    if kind is None:
        raise ValidationFailed("give an Apprise 'url', or a 'kind' and its 'config'", field="url")
    impl = svc.channels.get(kind)
    if impl is None:
        known = ", ".join(sorted(svc.channels)) or "none"
        raise ValidationFailed(f"unknown channel kind {kind!r} (available: {known})", field="kind")
    config = dict(body.config or {})
    if body.url is not None:
        config["url"] = body.url
    try:
        config = type(impl).validate(config)
    except ValueError as exc:
        raise ValidationFailed(
            str(exc), field="url" if body.url is not None else "config"
        ) from None
    user_id = await _target_user(svc, caller, body.user)
    await check_destinations(
        svc, type(impl), config, user_id, field="url" if body.url is not None else "config"
    )
    await require_channel_room(svc.store, svc.config, user_id)
    ch = await svc.store.create_channel(user_id, body.name, kind, config)
    return JSON(public_channel(svc, ch), status_code=201)


async def check_destinations(
    svc: Services, kind: type, config: dict[str, Any], owner_id: int, field: str
) -> None:
    """422 when the channel would connect to a private address that its owner may
    not reach under ``private_destinations`` (the sends are checked again)."""
    targets = kind.destinations(config) if hasattr(kind, "destinations") else []
    if not targets:
        return
    allowed = await destinations.owner_may_reach_private(svc.config, svc.store, owner_id)
    try:
        await destinations.check_destinations(
            targets, allow_private=allowed, policy=svc.config.destination_policy
        )
    except destinations.DestinationRefused as exc:
        raise ValidationFailed(str(exc), field=field, code="private_destination") from None


#: the most characters of a failed test's error shown back (a plugin may quote a peer)
TEST_ERROR_CHARS = 500


@router.post("/channels/{name}/test", summary="Send a test notification now")
async def test_channel(
    request: Request, caller: Caller, name: str, user: str | None = None
) -> JSON:
    caller.require_account()
    svc = services(request)
    ch = await _channel(svc, caller, name, user)
    assert svc.outbox is not None
    try:
        await svc.outbox.send_test(ch)
    except DeliveryError as exc:
        error = str(exc)
        if len(error) > TEST_ERROR_CHARS:
            error = error[: TEST_ERROR_CHARS - 1] + "…"
        return JSON({"ok": False, "error": error, "retryable": exc.retryable})
    return JSON({"ok": True})


@router.delete("/channels/{name}", status_code=204, summary="Remove a channel")
async def remove_channel(
    request: Request, caller: Caller, name: str, user: str | None = None
) -> Response:
    caller.require_account()
    svc = services(request)
    ch = await _channel(svc, caller, name, user)
    await svc.store.delete_channel(ch.id)
    return Response(status_code=204)


DeliveryState = Literal["pending", "sent", "dead"]


@router.get("/deliveries", summary="Deliveries, newest first (admins see everyone's)")
async def list_deliveries(
    request: Request,
    caller: Caller,
    state: DeliveryState | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JSON:
    svc = services(request)
    owner = None if caller.is_admin and "admin" in caller.scopes else caller.user_id
    return JSON({"deliveries": await svc.store.list_deliveries(owner, state, limit)})


@router.post("/deliveries/{delivery_id}/retry", summary="Send a dead or pending delivery again now")
async def retry_delivery(
    request: Request, caller: Caller, delivery_id: Annotated[int, Path(ge=1, le=2**62)]
) -> JSON:
    svc = services(request)
    assert svc.outbox is not None
    owner = None if caller.is_admin and "admin" in caller.scopes else caller.user_id
    await svc.store.retry_delivery(delivery_id, owner, svc.outbox.clock())
    svc.wake_delivery()
    return JSON({"id": delivery_id, "state": "pending"})


@router.get("/stats", summary="Deliveries by channel kind and state; by category")
async def stats(request: Request, caller: Caller) -> JSON:
    svc = services(request)
    owner = None if caller.is_admin and "admin" in caller.scopes else caller.user_id
    return JSON(await svc.store.delivery_stats(owner))
