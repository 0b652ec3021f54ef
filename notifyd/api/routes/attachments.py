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
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser

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
    """The file name and content of the first part of a ``multipart/form-data`` body
    (python-multipart's streaming parser), the content as it arrives; later parts
    are read and dropped."""
    part, head_done, first_done = 0, False, False
    field, value = bytearray(), bytearray()
    heads: list[tuple[bytes, bytes]] = []
    pending: list[bytes] = []

    def on_part_begin() -> None:
        nonlocal part
        part += 1

    def on_header_field(data: bytes, start: int, stop: int) -> None:
        if part == 1:
            field.extend(data[start:stop])

    def on_header_value(data: bytes, start: int, stop: int) -> None:
        if part == 1:
            value.extend(data[start:stop])

    def on_header_end() -> None:
        if part == 1:
            heads.append((bytes(field), bytes(value)))
        field.clear()
        value.clear()

    def on_headers_finished() -> None:
        nonlocal head_done
        head_done = head_done or part == 1

    def on_part_data(data: bytes, start: int, stop: int) -> None:
        if part == 1 and stop > start:
            pending.append(bytes(data[start:stop]))

    def on_part_end() -> None:
        nonlocal first_done
        first_done = first_done or part == 1

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field,
        "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
        "on_part_end": on_part_end,
    })  # fmt: skip
    it = chunks.__aiter__()

    async def feed() -> bool:
        """Parse the next piece of the body; False at its end."""
        try:
            chunk = await it.__anext__()
        except StopAsyncIteration:
            return False
        try:
            parser.write(chunk)
        except MultipartParseError as exc:
            raise BadRequest(f"the multipart body cannot be read: {exc}", field="body") from None
        return True

    while not head_done:
        if not await feed():
            raise BadRequest("multipart body without a file part", field="body")
    name = None
    for key, raw in heads:
        if key.decode("latin-1").strip().lower() == "content-disposition":
            name = _disposition_name(raw.decode("utf-8", "replace").strip())

    async def content() -> AsyncIterator[bytes]:
        while True:
            while pending:
                yield pending.pop(0)
            if first_done:
                break
            if not await feed():
                raise BadRequest("multipart body ends inside the file part", field="body")
        while await feed():  # the closing boundary and any other parts: read, dropped
            pending.clear()

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
