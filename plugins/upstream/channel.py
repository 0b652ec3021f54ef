"""The ``ntfy-upstream`` channel: one empty ``POST`` per event to the upstream.

What is sent, exactly as ntfy's server sends it for ``upstream-base-url``:
``POST {upstream_base_url}/{sha256_hex(base_url + "/" + topic)}`` with an empty
body, ``X-Poll-ID: <the ntfy message id of the event>`` (notifyd's event id in
decimal, as ``/<topic>/json`` shows it) and, when ``upstream_access_token`` is
set, ``Authorization: Bearer <token>``. Never a title, a body or a topic name.
The settings are read at each send, so the channel row holds no secret.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx

from notifyd.core import destinations
from notifyd.core.channels import Channel, Delivery, DeliveryError
from notifyd.core.upstream import KIND, UNIFIEDPUSH_CATEGORY, poll_url
from notifyd.plugins.httpclients import Pools, retry_after_seconds

log = logging.getLogger("notifyd.upstream")


class UpstreamChannel(Channel):
    """Sends poll requests to ``upstream_base_url``.

    Outcomes of :meth:`send`: a 2xx answer is success; 429, 5xx, timeouts and
    network errors are retried with backoff (honouring ``Retry-After``); any other
    answer is permanent (401/403: the upstream refused the access token). A
    delivery holding several events (which the system account's preferences never
    make) sends one request per event. UnifiedPush events, muted by those
    preferences, are skipped here too should one get through.
    """

    kind = KIND
    concurrency = 8
    #: ntfy's own client gives a poll request 10 s
    timeout = 10.0

    def __init__(self, services: Any) -> None:
        super().__init__(services)
        # Two pools like the Web Push channel: a connection opened while private
        # addresses are allowed must not be reused when they are not.
        self._pools = Pools.standard(self.timeout, self.concurrency * 2)

    @classmethod
    def validate(cls, config: dict[str, Any]) -> dict[str, Any]:
        raise ValueError(
            "ntfy-upstream channels are kept by the daemon: set upstream_base_url in the "
            "configuration instead"
        )

    async def send(self, delivery: Delivery) -> None:
        cfg = self.services.config
        if not cfg.upstream_base_url or not cfg.base_url:
            raise DeliveryError("upstream_base_url is no longer set", retryable=False)
        for ev in delivery.events:
            if ev.get("category") == UNIFIEDPUSH_CATEGORY:
                continue  # ntfy sends UnifiedPush messages to no upstream
            # (``notifyd channels test`` sends event 0 on ``notifyd/test``: a real
            # request, to a hash no app subscribes to, checks the upstream and token)
            await self._poll(poll_url(cfg, ev["topic"]), str(ev["id"]), cfg.upstream_access_token)

    async def _poll(self, url: str, poll_id: str, token: str) -> None:
        headers = {"X-Poll-ID": poll_id}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        origin = httpx.URL(url).copy_with(path="/", query=None)
        where = f"upstream {str(origin).rstrip('/')}"
        client = self._pools.get(destinations.allows_private())
        now = time.time()
        try:
            async with client.stream("POST", url, content=b"", headers=headers) as resp:
                left = destinations.RESPONSE_CAP
                async for chunk in resp.aiter_raw():
                    left -= len(chunk)
                    if left < 0:
                        break  # the status decides; an endless body is not read
        except httpx.TimeoutException as exc:
            raise DeliveryError(f"{where} timed out") from exc
        except httpx.TransportError as exc:
            raise DeliveryError(f"cannot reach {where}: {type(exc).__name__}") from exc
        except httpx.HTTPError as exc:
            raise DeliveryError(
                f"cannot send to {where}: {type(exc).__name__}", retryable=False
            ) from exc
        status = resp.status_code
        if 200 <= status < 300:
            log.debug("poll request %s sent to %s", poll_id, where)
            return
        what = f"{where} answered {status}"
        if status == 429 or status >= 500:
            raise DeliveryError(
                what, retry_after=retry_after_seconds(resp.headers.get("retry-after"), now)
            )
        if status in (401, 403):
            raise DeliveryError(
                f"{what}: check upstream_access_token (the upstream refused it, or needs one)",
                retryable=False,
            )
        raise DeliveryError(f"{what}: unexpected answer", retryable=False)

    async def aclose(self) -> None:
        await self._pools.aclose()
