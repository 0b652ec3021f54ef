"""Attachments on postgres (the :class:`~notifyd.core.store.AttachmentStore` role).

Not written yet: every method refuses. (Placeholder for issue 18.)"""

from __future__ import annotations

from pathlib import Path

from ..store import Attachment, AttachmentStore


class PostgresAttachmentStore(AttachmentStore):
    async def save_attachment(self, meta: Attachment, source: Path, quota_bytes: int) -> Attachment:
        raise NotImplementedError

    async def get_attachment(self, attachment_id: str) -> Attachment | None:
        raise NotImplementedError

    async def read_attachment(self, attachment_id: str, offset: int, length: int) -> bytes:
        raise NotImplementedError

    async def bind_attachment(self, attachment_id: str, user_id: int, topic: str) -> Attachment:
        raise NotImplementedError

    async def set_attachment_event(self, attachment_id: str, event_id: int) -> None:
        raise NotImplementedError

    async def attachment_usage(self, user_id: int, now: str) -> int:
        raise NotImplementedError

    async def prune_attachments(self, now: str, limit: int) -> int:
        return 0
