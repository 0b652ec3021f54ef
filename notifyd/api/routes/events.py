"""``/v1/events`` and ``/v1/inbox``: publish, history, read state."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field

from ...core import inbox
from ...core.acl import Principal
from ...core.errors import ValidationFailed
from ...core.models import EventIn, check_pattern, parse_priority
from ..auth import principal, services
from ..responses import JSON

router = APIRouter(prefix="/v1", tags=["events"])
Caller = Annotated[Principal, Depends(principal)]

_event_schema = EventIn.model_json_schema(ref_template="#/components/schemas/{model}")
_defs = _event_schema.pop("$defs", {})
PUBLISH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        _event_schema,
                        {"type": "array", "items": _event_schema, "minItems": 1},
                    ]
                }
            }
        },
    }
}


@router.post(
    "/events",
    status_code=201,
    summary="Publish one event or a list of events",
    openapi_extra=PUBLISH_BODY,
    responses={
        200: {"description": "A retry with a known Idempotency-Key"},
        413: {"description": "Body over max_request_bytes, or a list over max_batch_events"},
        429: {"description": "Over the token's publish_rate; Retry-After says when to retry"},
    },
)
async def publish() -> JSON:
    """Served by ``notifyd.api.fastpath.PublishFastPath`` in front of this app (the
    hottest route skips FastAPI's per-request machinery); this route only carries
    the OpenAPI description."""
    raise RuntimeError("POST /v1/events is served by the publish fast path")


def _priority(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_priority(value)
    except ValueError as exc:
        raise ValidationFailed(str(exc), field="min_priority") from None


class Filters:
    def __init__(
        self,
        topic: Annotated[str | None, Query(max_length=255)] = None,
        category: Annotated[str | None, Query(max_length=32)] = None,
        min_priority: Annotated[str | None, Query(description="1–5 or a name")] = None,
        unread: bool | None = None,
        q: Annotated[str | None, Query(max_length=256, description="full-text search")] = None,
        since: Annotated[int | None, Query(ge=0, le=2**62)] = None,
        before: Annotated[int | None, Query(ge=0, le=2**62)] = None,
        archived: Literal["exclude", "only", "include"] = "exclude",
    ) -> None:
        if topic is not None:
            try:
                topic = check_pattern(topic)
            except ValueError as exc:
                raise ValidationFailed(f"topic: {exc}", field="topic") from None
        self.values = dict(
            topic=topic,
            category=category,
            min_priority=_priority(min_priority),
            unread=unread,
            q=q,
            since=since,
            before=before,
            archived=archived,
        )


@router.get("/events", summary="The caller's history, newest first")
async def history(
    request: Request,
    caller: Caller,
    filters: Annotated[Filters, Depends()],
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JSON:
    query = inbox.history_query(caller, **filters.values, limit=limit)
    events, nxt = await inbox.history(services(request), query)
    return JSON({"events": events, "next": nxt})


@router.get(
    "/inbox/count",
    summary="How many events match the filters (e.g. unread=true: the unread count)",
)
async def count(request: Request, caller: Caller, filters: Annotated[Filters, Depends()]) -> JSON:
    query = inbox.history_query(caller, **filters.values)
    return JSON({"count": await services(request).store.count(query)})


EventId = Annotated[int, Path(ge=1, le=2**62)]


@router.get("/events/{event_id}", summary="One event with the caller's read state")
async def get_event(request: Request, caller: Caller, event_id: EventId) -> JSON:
    return JSON(await inbox.get_event(services(request), caller, event_id))


class ClickBody(BaseModel):
    action: str | None = Field(None, max_length=64, description="label of the action taken")


async def _one_state(request: Request, caller: Principal, event_id: int, state: str,
                     action: str | None = None) -> JSON:  # fmt: skip
    svc = services(request)
    updated = await inbox.set_state(svc, caller, [event_id], state, action)
    if not updated:
        await inbox.get_event(svc, caller, event_id)  # raises the 404
    return JSON({"id": event_id, "state": state})


def _state_route(state: str, summary: str) -> None:
    async def route(request: Request, caller: Caller, event_id: EventId) -> JSON:
        return await _one_state(request, caller, event_id, state)

    route.__name__ = f"mark_{state}"
    router.post(f"/events/{{event_id}}/{state}", summary=summary)(route)


_state_route("read", "Mark read")
_state_route("unread", "Mark unread")
_state_route("seen", "Mark seen")
_state_route("archive", "Archive")
_state_route("unarchive", "Take out of the archive")


@router.post("/events/{event_id}/click", summary="Report a click or an action taken")
async def click(
    request: Request, caller: Caller, event_id: EventId, body: ClickBody | None = None
) -> JSON:
    return await _one_state(request, caller, event_id, "click", body.action if body else None)


class StateBody(BaseModel):
    ids: list[Annotated[int, Field(ge=1, le=2**62)]] = Field(min_length=1, max_length=500)
    state: Literal["read", "unread", "seen", "archive", "unarchive"]


@router.post("/inbox/state", summary="Change the read state of several events")
async def bulk_state(request: Request, caller: Caller, body: StateBody) -> JSON:
    updated = await inbox.set_state(services(request), caller, body.ids, body.state)
    return JSON({"updated": updated, "state": body.state})


@router.post("/inbox/read-all", summary="Mark everything (matching the filters) read")
async def read_all(
    request: Request, caller: Caller, filters: Annotated[Filters, Depends()]
) -> JSON:
    values = {**filters.values, "unread": None}
    query = inbox.history_query(caller, **values)
    return JSON(await inbox.read_all(services(request), query))
