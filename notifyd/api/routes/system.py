"""``/healthz`` and ``/metrics``."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from ... import __version__
from ..auth import services
from ..responses import JSON

router = APIRouter(tags=["system"])


@router.get("/healthz", summary="Liveness: 200 while the daemon serves")
async def healthz(request: Request) -> JSON:
    svc = services(request)
    return JSON(
        {
            "status": "ok",
            "version": __version__,
            "uptime_seconds": round(time.time() - svc.started_at, 1),
            "last_event_id": svc.hub.last_id,
            "stream_clients": len(svc.hub),
        }
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
