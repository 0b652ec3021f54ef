"""Attachments: uploads spooled to disk, their ids, types, limits and expiry, how a
file is served, and the pruner's step.

An upload never sits in memory whole: :func:`receive` writes the body as it
arrives to a temporary file under ``<data_dir>/tmp`` (in worker threads, so the
trio loop never blocks on the disk), hashing it on the way, syncs it, and hands it
to the store (:class:`~notifyd.core.store.AttachmentStore`), which moves it to
where the engine keeps files and checks the user's quota in the same step. The
bytes never pass through the SQLite writer's publish transactions.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import string
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from .errors import NotFound, PayloadTooLarge, QuotaExceeded
from .metrics import ATTACHMENT_UPLOAD_BYTES, ATTACHMENT_UPLOADS
from .models import ATTACHMENT_ID_RE, ATTACHMENT_PATH, clean_filename
from .store import Attachment, AttachmentStore
from .timeutil import format_ts

log = logging.getLogger("notifyd.attachments")

_ALPHABET = string.ascii_letters + string.digits
#: bytes written to the spool file per worker-thread call
SPOOL_WRITE = 1024 * 1024
#: bytes of a file read per call when serving it
READ_CHUNK = 256 * 1024
#: attachments removed per prune call
PRUNE_BATCH = 200
#: disk work of uploads and downloads, apart from the store's own threads
_DISK = trio.CapacityLimiter(4)


def new_id() -> str:
    """A random attachment id: 12 characters of A–Z a–z 0–9 (~71 bits)."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(12))


def valid_id(value: str) -> bool:
    return bool(ATTACHMENT_ID_RE.fullmatch(value))


# -- types ------------------------------------------------------------------------

_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"),
    (b"%PDF-", 0, "application/pdf"),
    (b"PK\x03\x04", 0, "application/zip"),
    (b"\x1f\x8b", 0, "application/gzip"),
    (b"BZh", 0, "application/x-bzip2"),
    (b"\xfd7zXZ\x00", 0, "application/x-xz"),
    (b"7z\xbc\xaf\x27\x1c", 0, "application/x-7z-compressed"),
    (b"OggS", 0, "audio/ogg"),
    (b"ID3", 0, "audio/mpeg"),
    (b"fLaC", 0, "audio/flac"),
    (b"\x1aE\xdf\xa3", 0, "video/webm"),
    (b"BM", 0, "image/bmp"),
)
#: by extension, for files whose first bytes say nothing we trust
_BY_EXTENSION = {
    "txt": "text/plain", "log": "text/plain", "md": "text/markdown", "csv": "text/csv",
    "json": "application/json", "html": "text/html", "htm": "text/html",
    "svg": "image/svg+xml", "xml": "application/xml", "js": "text/javascript",
    "css": "text/css", "apk": "application/vnd.android.package-archive",
}  # fmt: skip
#: types served as they are, and the ones shown in the browser (``inline``)
SERVED_AS_IS = frozenset({
    "image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/avif",
    "application/pdf", "application/zip", "application/gzip", "application/x-bzip2",
    "application/x-xz", "application/x-7z-compressed", "application/json",
    "application/vnd.android.package-archive", "audio/ogg", "audio/mpeg", "audio/flac",
    "video/webm", "video/mp4", "text/plain", "text/csv", "text/markdown",
    "application/octet-stream",
})  # fmt: skip
INLINE = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "text/plain"})


def sniff_type(head: bytes, name: str) -> str:
    """The MIME type of a file from its first bytes, else its name's extension, else
    ``text/plain`` for UTF-8 text, else ``application/octet-stream``."""
    for magic, offset, kind in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp":
        return "image/avif" if head[8:12] in (b"avif", b"avis") else "video/mp4"
    markup = _markup(head)
    if markup is not None:
        return markup
    ext = name.rpartition(".")[2].lower() if "." in name else ""
    if ext in _BY_EXTENSION:
        return _BY_EXTENSION[ext]
    if _is_text(head):
        return "text/plain"
    return "application/octet-stream"


#: markup a browser would render (what its own sniffing looks for), whatever the name says
_MARKUP = (
    (b"<!doctype html", "text/html"), (b"<html", "text/html"), (b"<head", "text/html"),
    (b"<body", "text/html"), (b"<script", "text/html"), (b"<iframe", "text/html"),
    (b"<svg", "image/svg+xml"), (b"<?xml", "application/xml"),
)  # fmt: skip


def _markup(head: bytes) -> str | None:
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n\x0c")[:16].lower()
    for prefix, kind in _MARKUP:
        if start.startswith(prefix):
            return kind
    return None


def _is_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # a multi-byte character cut at the end of the sample is still text
        return exc.start >= len(head) - 3 and exc.reason == "unexpected end of data"
    return True


def extension(att_type: str, name: str) -> str:
    """The extension of ntfy's ``/file/<id>.<ext>``: the name's, else the type's."""
    ext = name.rpartition(".")[2].lower() if "." in name else ""
    if ext and ext.isascii() and ext.isalnum() and len(ext) <= 8:
        return ext
    for known, kind in _BY_EXTENSION.items():
        if kind == att_type:
            return known
    sub = att_type.rpartition("/")[2]
    return {"jpeg": "jpg", "octet-stream": "bin", "plain": "txt"}.get(
        sub, sub if sub.isalnum() else "bin"
    )


def serving_headers(att: Attachment) -> dict[str, str]:
    """Response headers for the file: a type browsers do not execute, ``inline`` only
    for raster images and plain text, nosniff and a sandboxing CSP."""
    kind = att.type if att.type in SERVED_AS_IS else None
    if kind is None:
        kind = "text/plain" if att.type.startswith("text/") else "application/octet-stream"
    if kind.startswith("text/"):
        kind = "text/plain" if kind != "text/csv" else kind
        content_type = f"{kind}; charset=utf-8"
    else:
        content_type = kind
    # inline only for what was stored as such: a page demoted to text/plain is a download
    disposition = "inline" if att.type in INLINE and kind == att.type else "attachment"
    return {
        "content-type": content_type,
        "content-disposition": f"{disposition}; {disposition_filename(att.name)}",
        "content-length": str(att.size),
        "x-content-type-options": "nosniff",
        "content-security-policy": "sandbox; default-src 'none'",
        "cross-origin-resource-policy": "same-origin",
        "cache-control": "private, max-age=3600",
        "etag": f'"{att.sha256}"',
    }


def disposition_filename(name: str) -> str:
    """RFC 6266 parameters: an ASCII fallback and ``filename*`` (UTF-8, percent-encoded)."""
    from urllib.parse import quote

    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\%' else "_"
                       for c in name)  # fmt: skip
    return f"filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


# -- uploads ------------------------------------------------------------------------


@dataclass
class Spooled:
    path: Path
    size: int
    sha256: str
    head: bytes


def tmp_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / "tmp"


#: an upload's spool file this old was left by a crash (an upload in progress
#: rewrites its file far more often than this)
STALE_SPOOL = 6 * 3600.0


def remove_stale_spools(directory: Path) -> int:
    """Remove spool files a crash left behind in ``directory`` (blocking)."""
    removed, cutoff = 0, time.time() - STALE_SPOOL
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            if entry.name.startswith("upload-") and entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)
                removed += 1
        except FileNotFoundError:
            continue
    return removed


async def spool(chunks: AsyncIterator[bytes], directory: Path, limit: int) -> Spooled:
    """Write ``chunks`` to a new file in ``directory`` (synced; hashed on the way).
    Raises :class:`PayloadTooLarge` past ``limit`` bytes (and removes the file)."""

    def create() -> tuple[int, str]:
        directory.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(prefix="upload-", dir=directory)

    fd, name = await trio.to_thread.run_sync(create, limiter=_DISK)
    path = Path(name)
    digest = hashlib.sha256()
    size, head = 0, b""
    buf: list[bytes] = []
    buffered = 0

    def write(data: list[bytes]) -> None:
        for piece in data:
            digest.update(piece)
            view = memoryview(piece)
            while view:
                view = view[os.write(fd, view) :]

    ok = False
    try:
        async for chunk in chunks:
            if not chunk:
                continue
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(
                    f"the file is larger than attachment_max_bytes ({limit} bytes)", field="body"
                )
            if len(head) < 512:
                head += chunk[: 512 - len(head)]
            buf.append(chunk)
            buffered += len(chunk)
            if buffered >= SPOOL_WRITE:
                data, buf, buffered = buf, [], 0
                await trio.to_thread.run_sync(write, data, limiter=_DISK)
        data, buf = buf, []

        def finish() -> None:
            write(data)
            os.fsync(fd)

        await trio.to_thread.run_sync(finish, limiter=_DISK)
        ok = True
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(os.close, fd, limiter=_DISK)
            if not ok:
                await trio.to_thread.run_sync(lambda: path.unlink(missing_ok=True))
    return Spooled(path, size, digest.hexdigest(), head)


async def receive(
    store: AttachmentStore,
    config: Any,
    user_id: int,
    chunks: AsyncIterator[bytes],
    name: str | None,
    now: float,
    *,
    declared: int = -1,
    spooled: Spooled | None = None,
) -> Attachment:
    """Store an upload of ``user_id`` (the body's ``chunks``, or a file already
    spooled) under the limits of ``config``; returns its metadata. Raises
    PayloadTooLarge (413) over ``attachment_max_bytes`` or when uploads are off (0),
    QuotaExceeded (507) past ``attachment_user_quota_bytes``."""
    limit = config.attachment_max_bytes
    if limit <= 0:
        raise PayloadTooLarge("this server does not take attachments (attachment_max_bytes = 0)")
    if declared > limit:
        raise PayloadTooLarge(
            f"the file is larger than attachment_max_bytes ({limit} bytes)", field="body"
        )
    quota = config.attachment_user_quota_bytes
    if quota > 0 and declared > 0:
        used = await store.attachment_usage(user_id, format_ts(now))
        if used + declared > quota:
            raise QuotaExceeded(_quota_text(quota, used))
    if spooled is None:
        spooled = await spool(chunks, tmp_dir(config.data_dir), limit)
    try:
        clean = clean_filename(name, "")
        kind = sniff_type(spooled.head, clean)
        if not clean:
            clean = "attachment." + extension(kind, "")
        meta = Attachment(
            id=new_id(), user_id=user_id, name=clean, type=kind, size=spooled.size,
            sha256=spooled.sha256, created_at=format_ts(now),
            expires_at=format_ts(now + config.attachment_expiry_seconds),
        )  # fmt: skip
        try:
            saved = await store.save_attachment(meta, spooled.path, quota)
            ATTACHMENT_UPLOADS.inc()
            ATTACHMENT_UPLOAD_BYTES.inc(saved.size)
            return saved
        except QuotaExceeded:
            used = await store.attachment_usage(user_id, format_ts(now))
            raise QuotaExceeded(_quota_text(quota, used)) from None
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(lambda: spooled.path.unlink(missing_ok=True))


def _quota_text(quota: int, used: int) -> str:
    return (
        f"your attachments would pass your quota of {quota} bytes ({used} in use); "
        "they free up as they expire"
    )


def describe(att: Attachment) -> dict[str, Any]:
    """The upload's answer and the event's ``attachment`` object."""
    return {
        "id": att.id, "name": att.name, "type": att.type, "size": att.size,
        "expires_at": att.expires_at, "url": ATTACHMENT_PATH + att.id,
    }  # fmt: skip


#: the server key (:meth:`~notifyd.core.store.AttachmentStore.server_key`) that signs
#: attachment links
LINK_KEY = "attachment-links"
#: attachment types a notification can show as its picture
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})


def link_signature(key: bytes, attachment_id: str, expires_at: str) -> str:
    """The ``sig`` of a link that opens one file without credentials until it expires
    (pushes carry such links: phones fetch a notification's picture anonymously)."""
    mac = hmac.new(key, f"{attachment_id}\n{expires_at}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:18]).decode("ascii")


def link_valid(key: bytes, att: Attachment, sig: str) -> bool:
    return bool(key) and hmac.compare_digest(
        link_signature(key, att.id, att.expires_at).encode(), sig.encode("utf-8", "replace")
    )


def image_link(event: dict[str, Any], base_url: str, key: bytes) -> str | None:
    """The absolute, signed URL of ``event``'s attached image for a push: an uploaded
    png/jpeg/gif/webp, when the event has no ``image`` of its own, is not sensitive,
    and ``base_url`` and ``key`` are known; an external https image as it is."""
    att = event.get("attachment")
    if event.get("sensitive") or event.get("image") or not isinstance(att, dict):
        return None
    kind = str(att.get("type") or "").split(";", 1)[0].strip().lower()
    if kind not in IMAGE_TYPES:
        return None
    if att.get("id"):
        base = base_url.rstrip("/")
        if not base or not key or not att.get("expires_at"):
            return None
        sig = link_signature(key, str(att["id"]), str(att["expires_at"]))
        return f"{base}{ATTACHMENT_PATH}{att['id']}?sig={sig}"
    url = att.get("url")
    return url if isinstance(url, str) and url.startswith("https://") else None


async def link_key(store: AttachmentStore) -> bytes:
    """The installation's link key, asked of the store once per store object."""
    key: bytes | None = getattr(store, "_notifyd_link_key", None)
    if key is None:
        key = await store.server_key(LINK_KEY)
        store._notifyd_link_key = key  # type: ignore[attr-defined]
    return key


def may_read(att: Attachment, principal: Any, now: str) -> bool:
    """Whether ``principal`` (None: anonymous) may download ``att``: its uploader, or
    whoever may read the topic an event took it for; nobody once it expired. The
    topic is set (bound) before that event is stored, so a live reader who fetches
    the file the moment the event arrives is never refused (the event id is
    recorded just after the commit that streamed it)."""
    if att.expires_at <= now or principal is None:
        return False
    if att.user_id == principal.user_id:
        return True
    return att.topic is not None and principal.can_read(att.topic)


async def open_readable(
    store: AttachmentStore, attachment_id: str, principal: Any, now: str, sig: str = ""
) -> Attachment:
    """The attachment if ``principal`` may download it, or ``sig`` is its signed
    link's (:func:`link_signature`); NotFound otherwise (also for those who may not:
    a 404 says nothing about whether it exists)."""
    att = await store.get_attachment(attachment_id) if valid_id(attachment_id) else None
    if att is None or att.expires_at <= now:
        raise NotFound("no such attachment", field="id")
    if may_read(att, principal, now):
        return att
    if sig and len(sig) <= 64 and link_valid(await link_key(store), att, sig):
        return att
    raise NotFound("no such attachment", field="id")


async def stream(store: AttachmentStore, att: Attachment) -> AsyncIterator[bytes]:
    """The file's bytes in :data:`READ_CHUNK` pieces (ends early if it vanished)."""
    offset = 0
    while offset < att.size:
        try:
            piece = await store.read_attachment(att.id, offset, READ_CHUNK)
        except NotFound:
            log.warning("attachment %s went away while being served", att.id)
            return
        if not piece:
            return
        offset += len(piece)
        yield piece


# -- pruning ------------------------------------------------------------------------


async def prune(store: AttachmentStore, now: float) -> int:
    """Remove expired attachments, those of pruned events, and those bound an hour
    ago to an event never stored (see ``AttachmentStore.prune_attachments``)."""
    total = 0
    while True:
        n = await store.prune_attachments(format_ts(now), PRUNE_BATCH)
        total += n
        if n < PRUNE_BATCH:
            break
        await trio.sleep(0.02)
    if total:
        log.info("pruned %d attachments", total)
    return total
