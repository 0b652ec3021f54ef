"""ntfy's ``?template=<name>`` on ``PUT``/``POST /<topic>``: the body is a sender's own
webhook JSON (Alertmanager, Grafana, GitHub, …), mapped by notifyd's built-in hook
templates (:mod:`notifyd.core.hooks`). (Being written, issue 18.)"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...core.acl import Principal
from ...core.services import Services

#: the ``template`` values this module serves; ntfy's own ``yes`` is not one of them
TEMPLATES: frozenset[str] = frozenset()


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
    raise NotImplementedError
