"""``/v1/devices``: a phone app registers its push token for the calling user.

A device is a channel of kind ``fcm`` or ``apns`` (preferences, quiet hours,
digests, retries and statistics treat it like any other channel). Its config is
``{"token", "app", "label"}``; the token is a capability (with our sender
credentials it wakes that phone), so it is never logged or shown in full: the API
shows :func:`mask_token`.

Rules:

- one device per token: the same token posted again answers 200 with the same
  device (201 the first time); a new ``app`` or ``label`` replaces the stored one
  (the device keeps its id);
- a token registered by another user moves to the caller (a phone signed in as
  someone else must stop showing the previous user's notifications): the old
  owner's device is removed;
- registering needs the ``account`` scope (a device receives everything its
  owner may read) and counts against ``max_channels_per_user``;
- a platform whose sender is not configured (no ``fcm_service_account_file``, no
  APNs key) is refused with 409 ``platform_not_configured``: the device could
  never receive anything.

Token shapes: FCM registration tokens are 100–4096 characters of
``[A-Za-z0-9_:-]`` (about 160 today); APNs device tokens are hex, 64 digits today,
accepted up to 200 digits (an even number) since Apple says their length may
grow; stored in lower case.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from notifyd.api.auth import principal, services
from notifyd.api.responses import JSON
from notifyd.core.acl import Principal
from notifyd.core.channels import ChannelRecord
from notifyd.core.errors import Conflict, NotFound, ValidationFailed
from notifyd.core.ratelimit import require_channel_room
from notifyd.core.services import Services

PLATFORMS = ("fcm", "apns")
FCM_TOKEN = re.compile(r"[A-Za-z0-9_:\-]+")
FCM_TOKEN_LENGTH = (100, 4096)
APNS_TOKEN = re.compile(r"[0-9a-fA-F]+")
APNS_TOKEN_LENGTH = (64, 200)
#: an iOS bundle id (reverse DNS)
BUNDLE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-]*")
MAX_APP = 128
MAX_LABEL = 64


class DeviceError(ValueError):
    """A device field is missing or malformed; ``field`` names it. Messages never
    quote the token."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _text(value: Any, field: str, limit: int, required: bool) -> str:
    if value is None or value == "":
        if required:
            raise DeviceError(field, "required")
        return ""
    if not isinstance(value, str):
        raise DeviceError(field, "must be a string")
    value = value.strip()
    if len(value) > limit:
        raise DeviceError(field, f"longer than {limit} characters")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in value):
        raise DeviceError(field, "must not contain control characters")
    if required and not value:
        raise DeviceError(field, "required")
    return value


def check_token(platform: str, token: Any) -> str:
    """The token in its stored form, or :class:`DeviceError` (field ``token``)."""
    if not isinstance(token, str) or not token:
        raise DeviceError("token", "required: the push token the app got from its platform")
    if platform == "fcm":
        low, high = FCM_TOKEN_LENGTH
        if not low <= len(token) <= high or not FCM_TOKEN.fullmatch(token):
            raise DeviceError(
                "token",
                f"an FCM registration token is {low}–{high} characters of A–Z a–z 0–9 _ : -",
            )
        return token
    low, high = APNS_TOKEN_LENGTH
    if not low <= len(token) <= high or len(token) % 2 or not APNS_TOKEN.fullmatch(token):
        raise DeviceError(
            "token", f"an APNs device token is {low}–{high} hexadecimal digits (64 today)"
        )
    return token.lower()


def parse_device(platform: Any, data: dict[str, Any]) -> dict[str, Any]:
    """Check a device's ``token``, ``app`` and ``label`` for ``platform`` and return
    the channel config ``{"token", "app", "label"}``.

    Raises:
        DeviceError: naming the first bad field.
    """
    if platform not in PLATFORMS:
        raise DeviceError("platform", "must be 'fcm' or 'apns'")
    if not isinstance(data, dict):
        raise DeviceError("config", "expected an object with token, app and label")
    token = check_token(platform, data.get("token"))
    app = _text(data.get("app"), "app", MAX_APP, required=True)
    if platform == "apns" and not BUNDLE_ID.fullmatch(app):
        raise DeviceError("app", "for APNs, the app's bundle id (e.g. com.example.app)")
    label = _text(data.get("label"), "label", MAX_LABEL, required=False)
    return {"token": token, "app": app, "label": label}


def mask_token(token: str) -> str:
    """``abcdef…wxyz``: enough to tell devices apart, useless to send with."""
    if len(token) <= 16:
        return "…"
    return f"{token[:6]}…{token[-4:]}"


def public_device(config: dict[str, Any]) -> dict[str, Any]:
    """A device's config as the API may show it (for ``Channel.public``)."""
    return {
        "app": config.get("app") or "",
        "label": config.get("label") or "",
        "token": mask_token(str(config.get("token") or "")),
    }


def platform_configured(config: Any, platform: str) -> bool:
    """Whether the daemon can send to ``platform`` at all."""
    if platform == "fcm":
        return bool(config.fcm_service_account_file)
    return bool(config.apns_key_file)


def _slug(label: str) -> str:
    text = unicodedata.normalize("NFKD", label).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:20].strip("-")


def channel_name(platform: str, token: str, label: str, digits: int = 8) -> str:
    """A readable channel name: the label's slug (else the platform) and a short
    hash of the token, e.g. ``pixel-8-3f2a9c1b`` or ``apns-0b7d44e2``."""
    prefix = _slug(label) or platform
    digest = hashlib.sha256(token.encode()).hexdigest()[:digits]
    return f"{prefix[: 31 - digits]}-{digest}"


def shown(ch: ChannelRecord) -> dict[str, Any]:
    """A device as ``/v1/devices`` shows it."""
    return {
        "id": ch.id,
        "platform": ch.kind,
        "name": ch.name,
        **public_device(ch.config),
        "created_at": ch.created_at,
        "last_success_at": ch.last_success_at,
        "last_error": ch.last_error,
    }


# -- routes ----------------------------------------------------------------------

router = APIRouter(prefix="/v1/devices", tags=["devices"])
Caller = Annotated[Principal, Depends(principal)]


class DeviceIn(BaseModel):
    platform: str = Field(description="'fcm' (Android, or iOS through Firebase) or 'apns'")
    token: str = Field(description="the registration token (FCM) or device token (APNs)")
    app: str = Field(description="the app's bundle id (APNs) or name")
    label: str | None = Field(None, description="a name for people, e.g. 'Pixel 8'")


async def _devices(svc: Services, user_id: int | None = None) -> list[ChannelRecord]:
    return [ch for kind in PLATFORMS for ch in await svc.store.list_channels(user_id, kind=kind)]


@router.get("", summary="The caller's registered devices")
async def list_devices(request: Request, caller: Caller) -> JSON:
    chans = await _devices(services(request), caller.user_id)
    return JSON({"devices": [shown(c) for c in sorted(chans, key=lambda c: c.id)]})


@router.post(
    "",
    status_code=201,
    summary="Register this app's push token (201 new, 200 already registered)",
    responses={409: {"description": "the platform is not configured, or max_channels_per_user"}},
)
async def register(request: Request, caller: Caller, body: DeviceIn) -> JSON:
    caller.require_account()  # a device is a channel: it receives the user's events
    svc = services(request)
    try:
        config = parse_device(body.platform, body.model_dump())
    except DeviceError as exc:
        raise ValidationFailed(exc.message, field=exc.field) from None
    platform = body.platform
    if not platform_configured(svc.config, platform):
        setting = "fcm_service_account_file" if platform == "fcm" else "apns_key_file"
        raise Conflict(
            f"this server does not send to {platform} devices ({setting} is not set); "
            "ask its operator",
            field="platform",
            code="platform_not_configured",
        )
    same = [
        ch for ch in await svc.store.list_channels(kind=platform)
        if ch.config.get("token") == config["token"]
    ]  # fmt: skip
    mine = next((ch for ch in same if ch.user_id == caller.user_id), None)
    if mine is None:  # checked before anything moves: a refused request changes nothing
        await require_channel_room(svc.store, svc.config, caller.user_id)
    for ch in same:
        if ch is mine:
            continue
        try:  # the phone now belongs to the caller: the previous owner stops receiving
            await svc.store.delete_channel(ch.id)
        except NotFound:
            pass  # removed meanwhile (the push service said it is gone): fine
    if mine is not None:
        if mine.config == config:
            return JSON(shown(mine), status_code=200)
        # a new label or app: the stored details are replaced (there is no update
        # in the store; the device gets a new id, its pending deliveries end)
        await svc.store.delete_channel(mine.id)
        return await _create(svc, caller.user_id, platform, config, status=200)
    return await _create(svc, caller.user_id, platform, config, status=201)


async def _create(
    svc: Services, user_id: int, platform: str, config: dict[str, Any], status: int
) -> JSON:
    for digits in (8, 16, 64):
        name = channel_name(platform, config["token"], config["label"], digits)
        if await svc.store.get_channel(user_id, name) is not None:
            continue  # a (very unlikely) clash of short hashes, or a channel so named
        try:
            ch = await svc.store.create_channel(user_id, name, platform, config)
        except Conflict:  # a concurrent registration of the same token won
            for other in await svc.store.list_channels(user_id, kind=platform):
                if other.config.get("token") == config["token"]:
                    return JSON(shown(other), status_code=200)
            continue
        return JSON(shown(ch), status_code=status)
    raise ValidationFailed("cannot name this device", field="token")


@router.delete("/{device_id}", status_code=204, summary="Unregister a device")
async def unregister(request: Request, caller: Caller, device_id: int) -> Response:
    caller.require_account()
    svc = services(request)
    if not any(c.id == device_id for c in await _devices(svc, caller.user_id)):
        raise NotFound(f"you have no device {device_id}", field="id")
    try:
        await svc.store.delete_channel(device_id)
    except NotFound:
        pass  # removed meanwhile (the push service said it is gone): the same outcome
    return Response(status_code=204)
