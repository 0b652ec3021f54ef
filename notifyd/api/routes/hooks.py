"""Inbound webhooks: ``/v1/hooks`` (create, list, remove, test) and the hooks' own
URLs ``POST /v1/hooks/{id}/{secret}`` / ``POST /v1/hooks/{id}`` (Bearer, X-Gitlab-Token
or a signature header). The work is :mod:`notifyd.core.hooks`; docs/hooks.md."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect
from starlette.responses import PlainTextResponse, Response

from ...core import hooks as core_hooks
from ...core.acl import Principal
from ...core.errors import BadRequest, NotFound, NotifydError, ValidationFailed
from ...core.hooktemplates import TEMPLATE_NAMES, custom
from ...core.metrics import HOOK_REQUESTS
from ...core.services import Services
from ...core.store import Hook
from ..auth import principal, services
from ..responses import JSON, check_body_size, declared_length

router = APIRouter(prefix="/v1", tags=["hooks"])
Caller = Annotated[Principal, Depends(principal)]
HookId = Annotated[str, Path(max_length=64, description="the hook's id")]
#: the most headers a test request may name
TEST_HEADERS = 32


class HookIn(BaseModel):
    name: str = Field(max_length=256, description="1–64 printable characters, unique per user")
    topic: str = Field(max_length=255, description="where the events go")
    template: str = Field(description=" | ".join(TEMPLATE_NAMES))
    priority: int | str | None = Field(None, description="default priority (1–5 or a name)")
    category: str | None = Field(None, description="default category (a slug)")
    tags: list[str] | None = Field(None, description="tags added to every event")
    fields: dict[str, str] | None = Field(
        None,
        description="json template only: Jinja2 templates for "
        + ", ".join(custom.FIELDS)
        + " (at least title or body)",
    )


class HookOut(BaseModel):
    id: str
    name: str
    user: str
    topic: str
    template: str
    priority: int | None
    category: str | None
    tags: list[str]
    fields: dict[str, str] | None
    url: str = Field(description="the hook's URL (with the secret only when just created)")
    created_at: str
    last_used_at: str | None


class HookCreated(HookOut):
    secret: str = Field(description="shown once, never again")


class HookList(BaseModel):
    hooks: list[HookOut]


class HookTestIn(BaseModel):
    payload: Any = Field(None, description="the sender's JSON; absent: the template's sample")
    headers: dict[str, str] | None = Field(
        None, description="request headers the template reads, e.g. X-GitHub-Event"
    )


class HookTestOut(BaseModel):
    events: list[dict[str, Any]]
    ignored: str | None = None


class HookPublished(BaseModel):
    published: int
    ids: list[int]
    ignored: str | None = None


def base_url(request: Request) -> str:
    """``base_url`` from the config, else this request's own origin."""
    base = services(request).config.base_url.rstrip("/")
    return base or str(request.base_url).rstrip("/")


def shown(request: Request, hook: Hook, *, with_secret: bool = False) -> dict[str, Any]:
    """A hook as the API shows it; the secret (and the URL holding it) only at creation."""
    url = f"{base_url(request)}/v1/hooks/{hook.id}"
    out: dict[str, Any] = {
        "id": hook.id, "name": hook.name, "user": hook.user_name, "topic": hook.topic,
        "template": hook.template, "priority": hook.options.get("priority"),
        "category": hook.options.get("category"), "tags": hook.options.get("tags") or [],
        "fields": hook.options.get("fields"), "url": url, "created_at": hook.created_at,
        "last_used_at": hook.last_used_at,
    }  # fmt: skip
    if with_secret:
        out["url"] = f"{url}/{hook.secret}"
        out["secret"] = hook.secret
    return out


async def _own_hook(svc: Services, caller: Principal, hook_id: str) -> Hook:
    hook = await svc.store.get_hook(hook_id)
    if hook is None or (hook.user_id != caller.user_id and not caller.is_admin):
        raise NotFound(f"you have no hook {hook_id!r}", field="id")
    if hook.user_id != caller.user_id:
        caller.require_admin()
    return hook


@router.post(
    "/hooks",
    status_code=201,
    response_model=HookCreated,
    summary="Make an inbound webhook (its secret is shown this once)",
    responses={403: {"description": "no account scope, or the topic is not writable"},
               409: {"description": "a hook of that name exists, or 100 hooks already"}},
)  # fmt: skip
async def create_hook(request: Request, caller: Caller, body: HookIn) -> JSON:
    hook = await core_hooks.create(
        services(request), caller, name=body.name, topic=body.topic, template=body.template,
        priority=body.priority, category=body.category, tags=body.tags, fields=body.fields,
    )  # fmt: skip
    return JSON(shown(request, hook, with_secret=True), status_code=201)


@router.get("/hooks", response_model=HookList, summary="The caller's hooks (admins: ?all=true)")
async def list_hooks(request: Request, caller: Caller, all: bool = False) -> JSON:
    svc = services(request)
    if all:
        caller.require_admin()
        found = await svc.store.list_hooks()
    else:
        found = await svc.store.list_hooks(caller.user_id)
    return JSON({"hooks": [shown(request, h) for h in found]})


@router.delete("/hooks/{hook_id}", status_code=204, summary="Remove a hook")
async def delete_hook(request: Request, caller: Caller, hook_id: HookId) -> Response:
    caller.require_account()
    svc = services(request)
    hook = await _own_hook(svc, caller, hook_id)
    if not await svc.store.delete_hook(hook.id):
        raise NotFound(f"you have no hook {hook_id!r}", field="id")
    return Response(status_code=204)


@router.post(
    "/hooks/{hook_id}/test",
    response_model=HookTestOut,
    summary="Render a payload (or the template's sample) without publishing",
)
async def test_hook(
    request: Request, caller: Caller, hook_id: HookId, body: HookTestIn | None = None
) -> JSON:
    caller.require_account()
    svc = services(request)
    hook = await _own_hook(svc, caller, hook_id)
    if body is None or body.payload is None:
        payload, headers = core_hooks.sample(hook.template)
        if body is not None and body.headers:
            headers = {**headers, **{k.lower(): v for k, v in body.headers.items()}}
    else:
        payload = body.payload
        headers = {k.lower(): v for k, v in (body.headers or {}).items()}
    if len(headers) > TEST_HEADERS:
        raise ValidationFailed(f"headers: at most {TEST_HEADERS}", field="headers")
    core_hooks.check_depth(payload)
    result = await core_hooks.render_async(hook.template, hook.options, hook.topic, payload,
                                           headers)  # fmt: skip
    out: dict[str, Any] = {"events": result.events}
    if result.ignored:
        out["ignored"] = result.ignored
    return JSON(out)


async def _read_body(request: Request, limit: int) -> bytes:
    check_body_size(declared_length(request.headers.get("content-length")), limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            check_body_size(size, limit)  # the connection guard checks too
            chunks.append(chunk)
    except ClientDisconnect:  # gone, or cut off for sending too slowly (body_timeout)
        raise BadRequest("the client went away before sending the whole body") from None
    return b"".join(chunks)


async def _receive(request: Request, hook_id: str, secret: str | None) -> Response:
    template = ["unknown"]  # known once the hook is
    try:
        answer = await _received(request, hook_id, secret, template)
    except NotifydError as exc:
        HOOK_REQUESTS.labels(template[0], exc.code).inc()
        raise
    return answer


async def _received(
    request: Request, hook_id: str, secret: str | None, template: list[str]
) -> Response:
    svc = services(request)
    headers = {k.lower(): v for k, v in request.headers.items()}
    creds = core_hooks.credentials(secret, headers)
    found = await svc.store.get_hook(hook_id) if len(hook_id) <= 64 else None
    hook = core_hooks.check_head(found, creds)
    template[0] = hook.template
    body = await _read_body(request, svc.config.max_request_bytes)
    core_hooks.check_signatures(hook, creds, body)
    payload = core_hooks.parse_body(hook.template, body, headers.get("content-type"))
    published, result = await core_hooks.deliver(svc, hook, payload, headers)
    ids = [ev["id"] for ev in published.events] if published is not None else []
    HOOK_REQUESTS.labels(hook.template, "published" if ids else "ignored").inc()
    if hook.template == "slack":  # what Slack answers, and what its senders check
        return PlainTextResponse("ok", headers={"X-Notifyd-Published": str(len(ids))})
    out: dict[str, Any] = {"published": len(ids), "ids": ids}
    if result.ignored:
        out["ignored"] = result.ignored
    return JSON(out)


_SENDER_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "the body is not JSON (or not the form the template reads)"},
    401: {"description": "no secret, an unknown hook or a wrong secret or signature"},
    403: {"description": "the hook's owner may not publish to the topic"},
    413: {"description": "the body is larger than max_request_bytes"},
    422: {"description": "the payload does not fit the template (the field is named)"},
}


@router.api_route(
    "/hooks/{hook_id}/{secret}",
    methods=["POST", "PUT"],
    response_model=HookPublished,
    summary="A sender posts (or puts) here, the secret in the URL; slack hooks answer 'ok'",
    responses=_SENDER_RESPONSES,
)
async def receive_with_secret(
    request: Request, hook_id: HookId, secret: Annotated[str, Path(max_length=256)]
) -> Response:
    return await _receive(request, hook_id, secret)


@router.api_route(
    "/hooks/{hook_id}",
    methods=["POST", "PUT"],
    response_model=HookPublished,
    summary="A sender posts here with Authorization: Bearer, X-Gitlab-Token or a signature",
    responses=_SENDER_RESPONSES,
)
async def receive(request: Request, hook_id: HookId) -> Response:
    return await _receive(request, hook_id, None)
