"""Attachments: ``POST /v1/attachments``, ``GET /v1/attachments/{id}`` and ntfy's
``GET /file/<id>.<ext>`` (docs/attachments.md).

An upload is the file's bytes as the body (or ``multipart/form-data`` with one file
part), spooled to disk as it arrives (:mod:`notifyd.core.attachments`). A file is
served to its uploader and to whoever may read the topic of the event carrying it;
to everyone else it does not exist (404, also to anonymous callers).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from email.message import Message
from typing import Any
from urllib.parse import unquote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse

from ...core import attachments
from ...core.acl import Principal
from ...core.errors import BadRequest, Forbidden, NotFound, NotifydError, Unauthorized
from ...core.store import Attachment
from ...core.timeutil import now_rfc3339
from ..auth import SOCKET_SCOPE_KEY, principal, resolve, services
from ..compat.ntfy_auth import authenticate as ntfy_authenticate
from ..compat.ntfy_params import NtfyError
from ..responses import JSON, render_ntfy

router = APIRouter(tags=["attachments"])


def _header_name(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The file's name: ``?filename=``, ``Filename``/``X-Filename``, or the
    ``filename`` of ``Content-Disposition``."""
    for value in (query.get("filename"), headers.get("filename"), headers.get("x-filename")):
        if value:
            try:
                return value.encode("latin-1").decode("utf-8")
            except (UnicodeEncodeError, UnicodeDecodeError):
                return value
    disposition = headers.get("content-disposition")
    if disposition:
        return _disposition_name(disposition)
    return None


def _disposition_name(value: str) -> str | None:
    msg = Message()
    msg["content-disposition"] = value[:2048]
    name = msg.get_filename()
    return unquote(name) if isinstance(name, str) else None


async def _multipart_file(
    chunks: AsyncIterator[bytes], boundary: bytes
) -> tuple[str | None, AsyncIterator[bytes]]:
    """The file name and content of the first part of a ``multipart/form-data`` body,
    the content as it arrives (the part's head is read up to 16 KiB)."""
    delimiter = b"\r\n--" + boundary
    buf = b""
    it = chunks.__aiter__()
    while b"\r\n\r\n" not in buf:
        try:
            buf += await it.__anext__()
        except StopAsyncIteration:
            raise BadRequest("multipart body without a file part", field="body") from None
        if b"\r\n\r\n" not in buf[:16384] and len(buf) > 16384:
            raise BadRequest("multipart part headers are too long", field="body")
    if not buf.startswith(b"--" + boundary + b"\r\n"):
        raise BadRequest("multipart body does not start with its boundary", field="body")
    end = buf.index(b"\r\n\r\n")
    name = None
    for line in buf[len(boundary) + 4 : end].split(b"\r\n"):
        key, _, value = line.decode("utf-8", "replace").partition(":")
        if key.strip().lower() == "content-disposition":
            name = _disposition_name(value.strip())
    rest = buf[end + 4 :]

    async def content() -> AsyncIterator[bytes]:
        buf, keep, ended = rest, len(delimiter), False
        while True:
            at = buf.find(delimiter)
            if at >= 0:
                if at:
                    yield buf[:at]
                break
            if ended:
                raise BadRequest("multipart body ends inside the file part", field="body")
            if len(buf) > keep:
                yield buf[:-keep]
                buf = buf[-keep:]
            try:
                buf += await it.__anext__()
            except StopAsyncIteration:
                ended = True
        async for _ in it:  # the closing boundary and any other parts: drained
            pass

    return name, content()


def _multipart_boundary(headers: Mapping[str, str]) -> bytes | None:
    ctype = headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        return None
    msg = Message()
    msg["content-type"] = ctype[:1024]
    boundary = msg.get_param("boundary")
    if not isinstance(boundary, str) or not 1 <= len(boundary) <= 70:
        raise BadRequest("multipart/form-data needs a boundary", field="content-type")
    return boundary.encode("latin-1", "replace")


@router.post("/v1/attachments", status_code=201, response_class=JSON)
async def upload(request: Request, caller: Principal = Depends(principal)) -> JSON:
    """Store the body as a file of the caller (``?filename=``, ``Filename`` or
    ``Content-Disposition`` names it); answer its id and metadata. Attach it to an
    event with ``"attachment": {"id": …}``."""
    if "publish" not in caller.scopes and "admin" not in caller.scopes:
        raise Forbidden("uploading needs a credential with the 'publish' scope")
    svc = services(request)
    headers = request.headers
    name = _header_name(headers, request.query_params)
    declared = -1
    length = headers.get("content-length")
    if length is not None and length.isascii() and length.isdigit() and len(length) < 19:
        declared = int(length)
    chunks: AsyncIterator[bytes] = request.stream()
    boundary = _multipart_boundary(headers)
    if boundary is not None:
        part_name, chunks = await _multipart_file(chunks, boundary)
        name = name or part_name
        declared = -1  # the body's length is more than the file's
    att = await attachments.receive(
        svc.store, svc.config, caller.user_id, chunks, name, time.time(), declared=declared
    )
    return JSON(attachments.describe(att), status_code=201)


def _serve(svc: Any, att: Attachment, request: Request) -> Response:
    headers = attachments.serving_headers(att)
    if request.headers.get("if-none-match") == headers["etag"]:
        keep = ("etag", "cache-control", "x-content-type-options")
        return Response(status_code=304, headers={k: headers[k] for k in keep})
    return StreamingResponse(
        attachments.stream(svc.store, att), headers=headers, media_type=headers["content-type"]
    )


async def _caller_or_none(request: Request) -> Principal | None:
    """The caller, or None when there is no (valid) credential: a file is then 404."""
    svc = services(request)
    try:
        return await resolve(
            svc, bool(request.scope.get(SOCKET_SCOPE_KEY)), request.headers.get("authorization"),
            request.query_params.get("token"), method=request.method, headers=request.headers,
        )  # fmt: skip
    except (Unauthorized, Forbidden):
        return None


@router.get("/v1/attachments/{attachment_id}")
async def download(request: Request, attachment_id: str) -> Response:
    """The file, to its uploader and to whoever may read the event that carries it
    (``Authorization: Bearer``, the session cookie or ``?token=``), or to anyone
    with a signed link (``?sig=``: what pushes carry, valid until the file expires)."""
    svc = services(request)
    caller = await _caller_or_none(request)
    sig = request.query_params.get("sig", "")
    att = await attachments.open_readable(svc.store, attachment_id, caller, now_rfc3339(), sig)
    return _serve(svc, att, request)


@router.get("/file/{name}", include_in_schema=False)
async def ntfy_file(request: Request, name: str) -> Response:
    """ntfy's attachment URL, ``/file/<id>.<ext>`` (the extension is not checked);
    ntfy's credentials (Basic, Bearer, ``?auth=``) and error shape."""
    svc = services(request)
    headers = {k.lower(): v for k, v in request.headers.items()}
    query = dict(request.query_params)
    try:
        try:
            caller: Principal | None = await ntfy_authenticate(
                svc, via_socket=bool(request.scope.get(SOCKET_SCOPE_KEY)), method="GET",
                headers=headers, query=query,
                address=request.client.host if request.client else "local",
            )  # fmt: skip
        except NtfyError as exc:
            if exc.http != 401:
                raise
            caller = None
        attachment_id = name.split(".", 1)[0]
        att = await attachments.open_readable(svc.store, attachment_id, caller, now_rfc3339())
    except NotFound:
        return render_ntfy(NtfyError(404, 40401, "page not found")).response()
    except (NtfyError, NotifydError) as exc:
        return render_ntfy(exc).response()
    return _serve(svc, att, request)
