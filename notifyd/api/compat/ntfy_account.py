"""ntfy's account API for the caller's own account: ``GET /v1/account``,
``POST``/``DELETE /v1/account/token`` (Home Assistant's ntfy integration). (Being
written, issue 18.)"""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["ntfy"])
