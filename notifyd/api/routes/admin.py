"""``/v1/admin/…``: operations on the live database — backup, export, import and
the integrity check. Admins only (the Unix socket, or an admin token).

An export with ``accounts=true`` holds the whole installation, secrets included
(password hashes, token digests, channel configs, the Web Push private key): it
is answered with ``Cache-Control: no-store`` and the CLI writes it mode 0600.

These run inside the daemon so that they see the database as it serves: a backup
is a consistent snapshot taken while publishing goes on, an export reads one
snapshot, and an import goes through the single writer like any publish.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import AsyncGenerator
from typing import Annotated

import trio
from fastapi import APIRouter, Query, Request
from starlette.responses import StreamingResponse

from ...core import transfer
from ...core.errors import ValidationFailed
from ...core.models import check_pattern
from ...core.timeutil import format_ts
from ..auth import services
from ..responses import JSON
from .accounts import Admin

router = APIRouter(prefix="/v1/admin", tags=["operations"])

CHUNK = 256 * 1024


@router.get(
    "/backup",
    summary="A consistent copy of the database (the engine's format: an SQLite file for "
    "SQLite), made while the daemon serves",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/vnd.sqlite3": {}}}},
)
async def backup(request: Request, caller: Admin) -> StreamingResponse:
    svc = services(request)
    # mode 0600: a backup holds password and token hashes and channel secrets. The
    # engine writes its copy into this (empty) file.
    fd, path = tempfile.mkstemp(prefix=".backup-", suffix=".tmp", dir=svc.config.data_path)
    os.close(fd)
    try:
        info = await svc.store.backup(path)
        f = open(path, "rb")  # noqa: SIM115 - closed by the response body below
    finally:
        # the open file stays readable; nothing is left behind if the client goes away
        for leftover in (path, path + "-journal"):
            try:
                os.unlink(leftover)
            except FileNotFoundError:
                pass

    async def body() -> AsyncGenerator[bytes, None]:
        try:
            while data := await trio.to_thread.run_sync(f.read, CHUNK):
                yield data
        finally:
            f.close()

    stamp = format_ts(time.time()).replace(":", "").replace("-", "")[:15]
    return StreamingResponse(
        body(),
        media_type=info.media_type,
        headers={
            "Content-Length": str(info.bytes),
            "Content-Disposition": f'attachment; filename="notifyd-{stamp}{info.suffix}"',
            "X-Notifyd-Engine": info.engine,
            "X-Notifyd-Last-Event-Id": str(info.last_event_id),
            "X-Notifyd-Events": str(info.events),
        },
    )


@router.get(
    "/integrity",
    summary="The engine's consistency check (SQLite: quick_check, or integrity_check "
    "with full=true)",
)
async def integrity(request: Request, caller: Admin, full: bool = False) -> JSON:
    svc = services(request)
    started = time.monotonic()
    problems = await svc.store.integrity_check(full)
    seconds = round(time.monotonic() - started, 3)
    info = await svc.store.storage_info()
    return JSON(
        {
            "ok": problems == ["ok"],
            "engine": info.engine,
            "check": info.checks[1] if full else info.checks[0],
            "problems": [] if problems == ["ok"] else problems,
            "seconds": seconds,
            "path": info.location,
            "size_bytes": info.size_bytes,
            "wal_bytes": info.log_bytes,
            "last_event_id": await svc.store.last_event_id(),
        }
    )


@router.get(
    "/export",
    summary="Events with their per-user read state, as JSON Lines; with accounts=true also "
    "the installation: users, tokens, grants, channels, preferences, the Web Push key "
    "(see docs/operations.md)",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}}},
)
async def export(
    request: Request,
    caller: Admin,
    topic: Annotated[str | None, Query(description="exact topic or a '*' pattern")] = None,
    since: Annotated[
        int | None, Query(ge=0, le=2**62, description="only events with a larger id")
    ] = None,
    accounts: Annotated[
        bool,
        Query(description="also the installation (format version 2): secret, as a backup is"),
    ] = False,
) -> StreamingResponse:
    svc = services(request)
    if topic is not None:
        try:
            topic = check_pattern(topic)
        except ValueError as exc:
            raise ValidationFailed(f"topic: {exc}", field="topic") from None
    pem = None
    if accounts:
        pem = await trio.to_thread.run_sync(transfer.read_vapid_key, svc.config.data_path)
    lines = transfer.export_lines(svc.store, topic, since, accounts=accounts, vapid_pem=pem)
    # open the snapshot now, so that a failure is an error response, not a cut stream
    first = await lines.__anext__()

    async def body() -> AsyncGenerator[bytes, None]:
        try:
            yield first
            async for chunk in lines:
                yield chunk
        finally:
            with trio.CancelScope(shield=True):
                await lines.aclose()

    return StreamingResponse(
        body(),
        media_type="application/x-ndjson",
        headers={"Cache-Control": "no-store"},
    )


@router.post(
    "/import",
    summary="Import an export (JSON Lines body): validated whole, then written; no deliveries",
    openapi_extra={
        "requestBody": {"content": {"application/x-ndjson": {}}, "required": True},
    },
)
async def import_(
    request: Request,
    caller: Admin,
    create_users: Annotated[
        bool, Query(description="create users named in the state that do not exist")
    ] = False,
    dry_run: Annotated[bool, Query(description="validate only; write nothing")] = False,
    replace_vapid_key: Annotated[
        bool,
        Query(
            description="replace this daemon's Web Push key with the file's even though "
            "subscriptions here use it (409 otherwise)"
        ),
    ] = False,
) -> JSON:
    svc = services(request)
    kinds = {kind: type(impl).validate for kind, impl in svc.channels.items()}
    importer = transfer.Importer(
        svc.store,
        svc.accounts,
        spool_dir=svc.config.data_path,
        publisher_id=caller.user_id,
        create_users=create_users,
        retention_days=svc.config.retention_days,
        kinds=kinds,
        vapid_dir=svc.config.data_path,
        replace_vapid_key=replace_vapid_key,
    )
    try:
        await importer.read(request.stream())
        # one import writes at a time: each skips what the ones before it stored
        async with svc.import_lock:
            if dry_run:
                return JSON((await importer.check()).to_json())
            report = await importer.apply()
    finally:
        importer.close()
    return JSON(report.to_json())
