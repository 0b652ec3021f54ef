"""Attachments: ``POST /v1/attachments``, ``GET /v1/attachments/{id}`` and ntfy's
``GET /file/<id>.<ext>``. (Being written, issue 18.)"""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["attachments"])
