"""ntfy's ``?template=<name>`` on ``PUT``/``POST /<topic>``: the body is a sender's own
webhook JSON (Alertmanager, Grafana, GitHub, …), mapped by notifyd's built-in hook
templates (:mod:`notifyd.core.hooks`) and published on the topic of the URL as the
caller. Errors are ntfy's (``{"code", "http", "error"}``); the answer is ntfy's message
object of the last event (docs/hooks.md)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ...core import hooks
from ...core.acl import Principal
from ...core.errors import NotifydError
from ...core.services import Services
from .ntfy_message import to_message
from .ntfy_params import from_notifyd

#: the ``template`` values this module serves; ntfy's own ``yes`` is not one of them
#: (nor ``json``: its field templates belong to a hook)
TEMPLATES: frozenset[str] = frozenset(
    {"alertmanager", "grafana", "github", "gitea", "gitlab", "slack", "apprise"}
)


async def publish_templated(
    svc: Services,
    principal: Principal,
    topic: str,
    template: str,
    body: bytes,
    headers: Mapping[str, str],
) -> dict[str, Any]:
    """Publish the events ``template`` maps ``body`` to on ``topic`` as ``principal``;
    returns ntfy's message object of the last one. Raises NtfyError (ntfy's shape)."""
    lower = {k.lower(): v for k, v in headers.items()}
    options: dict[str, Any] = {"priority": None, "category": None, "tags": [], "fields": None}
    try:
        payload = hooks.parse_body(template, body, lower.get("content-type"))
        result = await hooks.render_async(template, options, topic, payload, lower)
        for ev in result.events:
            ev["topic"] = topic  # the URL's topic, whatever a template said
        published = await hooks.publish(svc, principal, result, topic)
    except NotifydError as exc:
        raise from_notifyd(exc) from None
    if published is None or not published.events:
        # nothing to publish (a ping): answer the shape ntfy's clients read, without an id
        now = int(time.time())
        return {"id": "", "time": now, "expires": now, "event": "message", "topic": topic,
                "message": f"nothing published: {result.ignored or 'no events'}"}  # fmt: skip
    return to_message(published.events[-1], svc.config.retention_days)
