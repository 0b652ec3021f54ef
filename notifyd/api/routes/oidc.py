"""``/v1/session/oidc/*``: single sign-on for the web page (OpenID Connect)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/v1/session/oidc", tags=["session"])
