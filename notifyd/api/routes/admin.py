"""``/v1/admin/…``: operations on the live database (backup, export, import) — being built."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/v1/admin", tags=["operations"])
