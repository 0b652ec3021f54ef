"""Inbound webhooks: ``/v1/hooks`` (create, list, remove) and the hooks' own URLs
``POST /v1/hooks/{id}/{secret}`` / ``POST /v1/hooks/{id}``. (Being written, issue 18.)"""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/v1", tags=["hooks"])
