"""``/healthz`` and ``/metrics``."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from ... import __version__
from ...core.metrics import NODE_INFO
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
            "node": svc.config.node_name,
            "engine": svc.store.engine,
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
async def metrics(request: Request) -> Response:
    svc = services(request)
    NODE_INFO.clear()  # one series: this node as it runs now
    NODE_INFO.labels(node=svc.config.node_name, engine=svc.store.engine).set(1)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
