"""The notification center: static files from ``notifyd/web`` (no build step).

Served at the top level are only ``/``, ``/sw.js`` (a service worker's scope is
its own path, so it must live at the root), ``/manifest.webmanifest``,
``/static/…`` and ``/embed/notifyd-inbox.js`` (the ``<notifyd-inbox>`` component
that applications import into their own pages, cross-origin: see ``api/cors.py``
and docs/embedding.md): every other top-level name stays free for the ntfy-compatible
topic URLs. Each response carries a Content-Security-Policy that allows no inline
script or style, and files are revalidated by ETag so that an upgrade of the
daemon reaches browsers at once.
"""

from __future__ import annotations

import hashlib
import mimetypes
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, Request
from starlette.responses import Response

from ...core.errors import NotFound

WEB_DIR = Path(__file__).resolve().parent.parent.parent / "web"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' https: data: blob:; "
    "connect-src 'self'; worker-src 'self'; manifest-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".json": "application/json",
}

router = APIRouter(include_in_schema=False)


@lru_cache(maxsize=256)
def _load(path: Path, mtime_ns: int) -> tuple[bytes, str]:
    data = path.read_bytes()
    return data, '"' + hashlib.sha256(data).hexdigest()[:20] + '"'


def serve_file(request: Request, relative: str, extra: dict[str, str] | None = None) -> Response:
    """A file under ``notifyd/web`` with its ETag (304 when unchanged), or 404."""
    path = (WEB_DIR / relative).resolve()
    if WEB_DIR not in path.parents or not path.is_file():
        raise NotFound("no such file")
    data, etag = _load(path, path.stat().st_mtime_ns)
    kind = (
        _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    )
    headers = {**SECURITY_HEADERS, "etag": etag, "cache-control": "no-cache", **(extra or {})}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=kind, headers=headers)


@router.get("/")
async def index(request: Request) -> Response:
    return serve_file(request, "index.html")


@router.get("/sw.js")
async def service_worker(request: Request) -> Response:
    return serve_file(request, "sw.js", {"service-worker-allowed": "/"})


@router.get("/manifest.webmanifest")
async def manifest(request: Request) -> Response:
    return serve_file(request, "manifest.webmanifest")


@router.get("/static/{path:path}")
async def static(path: str, request: Request) -> Response:
    return serve_file(request, "static/" + path)


@router.get("/embed/notifyd-inbox.js")
async def inbox_component(request: Request) -> Response:
    # an ES module: the importing page (another origin, in cors_origins) fetches it
    # in CORS mode; the CORS middleware adds Access-Control-Allow-Origin
    return serve_file(request, "embed/notifyd-inbox.js")
