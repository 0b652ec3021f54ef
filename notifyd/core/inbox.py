"""Publishing and reading, with the caller's rights applied.

These functions are what the HTTP API (and later the compatibility layers) call:
they validate, check permissions, talk to the store, and tell the hub about read
state changes. They never see a request object.
"""

from __future__ import annotations

from typing import Any

from .acl import Principal
from .errors import Conflict, NotFound, PayloadTooLarge, ValidationFailed
from .models import AttachmentIn, EventIn, validate_events
from .ratelimit import check_publish
from .services import Services
from .store import STATES, Event, EventExtras, HistoryQuery, PublishResult
from .timeutil import now_rfc3339

MAX_STATE_IDS = 500
#: state changes per signal (each about 60 bytes encoded; a signal stays under MAX_SIGNAL)
STATE_SIGNAL_ITEMS = 50


async def publish(
    svc: Services,
    principal: Principal,
    payload: Any,
    idempotency_key: str | None = None,
    *,
    compat: EventExtras | None = None,
) -> PublishResult:
    """Validate and store ``payload`` (one event or a list). ``compat``: what a
    compatibility layer keeps with each of the events (see ``Store.event_extras``)."""
    events, batch = validate_events(payload)
    if compat is not None:
        for ev in events:
            ev._token_id, ev._extras = compat.token_id, compat.extras
    if len(events) > svc.config.max_batch_events:
        raise PayloadTooLarge(
            f"a batch holds at most {svc.config.max_batch_events} events; split it",
            field="events",
        )
    for ev in events:
        principal.require_write(ev.topic)
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= 128:
        raise ValidationFailed("Idempotency-Key must be 1–128 characters", field="Idempotency-Key")
    # last, so that only a request that would be stored takes from the bucket
    await check_publish(svc.store, svc.config, principal, len(events))
    uploads = await _bind_attachments(svc, principal, events, batch)
    result = await svc.store.publish(events, principal.user_id, idempotency_key, batch)
    if uploads and not result.replayed:
        for n, attachment_id in uploads:
            stored = result.events[n] if n < len(result.events) else None
            if stored is not None:
                # 0: the event is scheduled (it gets its id when it is released)
                await svc.store.set_attachment_event(attachment_id, stored.get("id") or 0)
    return result


async def _bind_attachments(
    svc: Services, principal: Principal, events: list[EventIn], batch: bool
) -> list[tuple[int, str]]:
    """Give the uploaded files the events name to those events (the caller's own,
    unexpired, not yet taken) and fill in their metadata; returns (index, id) pairs."""
    bound: list[tuple[int, str]] = []
    for n, ev in enumerate(events):
        att = ev.attachment
        if att is None or att.id is None:
            continue
        field = f"events[{n}].attachment.id" if batch else "attachment.id"
        try:
            meta = await svc.store.bind_attachment(att.id, principal.user_id, ev.topic)
        except NotFound as exc:
            raise ValidationFailed(f"{field}: {exc.message}", field=field) from None
        except Conflict as exc:
            raise Conflict(exc.message, field=field) from None
        ev.attachment = AttachmentIn(
            id=meta.id, name=meta.name, type=meta.type, size=meta.size,
            expires_at=meta.expires_at,
        )  # fmt: skip
        bound.append((n, meta.id))
    return bound


def history_query(principal: Principal, **filters: Any) -> HistoryQuery:
    return HistoryQuery(user_id=principal.user_id, visibility=principal.visibility(), **filters)


async def history(svc: Services, query: HistoryQuery) -> tuple[list[Event], int | None]:
    events = await svc.store.history(query)
    nxt = events[-1]["id"] if len(events) == query.limit and events else None
    return events, nxt


async def get_event(svc: Services, principal: Principal, event_id: int) -> Event:
    ev = await svc.store.get_event(event_id, principal.user_id)
    expired = ev is not None and ev["expires_at"] is not None and ev["expires_at"] <= now_rfc3339()
    if ev is None or expired or not principal.can_read(ev["topic"]):
        raise NotFound(f"no event {event_id}", field="id")
    return ev


async def set_state(
    svc: Services,
    principal: Principal,
    event_ids: list[int],
    state: str,
    action: str | None = None,
) -> list[int]:
    """Change read state; returns the ids that exist and the caller may read."""
    if state not in STATES:
        raise ValidationFailed(f"state must be one of {', '.join(STATES)}", field="state")
    if len(event_ids) > MAX_STATE_IDS:
        raise PayloadTooLarge(f"at most {MAX_STATE_IDS} ids per request", field="ids")
    if action is not None and len(action) > 64:
        raise ValidationFailed("action labels are at most 64 characters", field="action")
    ids = list(dict.fromkeys(event_ids))
    updated = await svc.store.set_state(
        principal.user_id, ids, state, principal.visibility(), action
    )
    items = []
    for event_id, topic in updated:
        msg: dict[str, Any] = {"type": "state", "id": event_id, "state": state}
        if action is not None:
            msg["action"] = action
        items.append([msg, topic])
    # to the user's streams on every node, in signals that stay small
    for start in range(0, len(items), STATE_SIGNAL_ITEMS):
        chunk = items[start : start + STATE_SIGNAL_ITEMS]
        svc.store.signal({"kind": "state", "user": principal.user_id, "items": chunk})
    return [event_id for event_id, _ in updated]


async def read_all(svc: Services, query: HistoryQuery) -> dict[str, int]:
    result = await svc.store.read_all(query)
    flt = {
        k: v
        for k, v in (
            ("topic", query.topic),
            ("category", query.category),
            ("min_priority", query.min_priority),
            ("q", query.q),
        )
        if v is not None
    }
    message = {"type": "state", "state": "read", "all": True, "upto": result["upto"], "filter": flt}
    svc.store.signal({"kind": "state", "user": query.user_id, "items": [[message, None]]})
    return result
