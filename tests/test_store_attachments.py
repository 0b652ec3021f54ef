"""Store conformance for the :class:`~notifyd.core.store.AttachmentStore` role, on
every engine (the fixtures and the per-engine parametrisation of
tests/test_store_contract.py): bytes round-trip in pieces, the quota is one atomic
step, binding is for the owner once, and pruning removes expired files, those of
pruned events and those bound to an event never stored — bytes included (on
SQLite, the file is gone from the disk). Time is the store's clock and explicit
``now`` values: nothing waits.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import test_store_contract as contract
import trio
from test_store_contract import T0, OpenStore, ev

from notifyd.core.errors import Conflict, NotFound, QuotaExceeded
from notifyd.core.models import AttachmentIn
from notifyd.core.store import Attachment, Store
from notifyd.core.timeutil import format_ts

pytestmark = pytest.mark.trio

#: the contract suite's fixture and per-engine parametrisation, shared
open_store = contract.open_store
pytest_generate_tests = contract.pytest_generate_tests

MiB = 1024 * 1024
HOUR = 3600.0


def _file(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / f"spool-{hashlib.sha256(data).hexdigest()[:8]}-{os.urandom(4).hex()}"
    path.write_bytes(data)
    return path


def _meta(att_id: str, user_id: int, data: bytes, at: float, ttl: float = 3 * 86400) -> Attachment:
    return Attachment(
        id=att_id, user_id=user_id, name=f"{att_id}.bin", type="application/octet-stream",
        size=len(data), sha256=hashlib.sha256(data).hexdigest(), created_at=format_ts(at),
        expires_at=format_ts(at + ttl),
    )  # fmt: skip


async def _read_all(store: Store, att_id: str, size: int, piece: int) -> bytes:
    out, offset = [], 0
    while offset < size:
        part = await store.read_attachment(att_id, offset, piece)
        assert part, f"short read at {offset}"
        out.append(part)
        offset += len(part)
    assert await store.read_attachment(att_id, size, piece) == b""
    return b"".join(out)


def _on_disk(store: Store, att_id: str) -> bool | None:
    """Whether the SQLite engine has the file (None on engines that keep no files)."""
    directory = getattr(store, "attachment_dir", None)
    return None if directory is None else (Path(directory) / att_id).exists()


async def test_bytes_round_trip_in_pieces_across_chunk_boundaries(
    open_store: OpenStore, tmp_path: Path
) -> None:
    async with open_store(clock=lambda: T0) as store:
        user = await store.create_user("alice", "user", None)
        data = os.urandom(2 * MiB + 12345)  # more than two of PostgreSQL's 1 MiB chunks
        saved = await store.save_attachment(_meta("AAAAAAAAAAA1", user.id, data, T0),
                                            _file(tmp_path, data), 0)  # fmt: skip
        assert saved.id == "AAAAAAAAAAA1"
        got = await store.get_attachment("AAAAAAAAAAA1")
        assert got is not None and (got.size, got.user_id, got.topic, got.event_id) == (
            len(data), user.id, None, None,
        )  # fmt: skip
        for piece in (256 * 1024, 1000_003, 3 * MiB):
            assert await _read_all(store, "AAAAAAAAAAA1", len(data), piece) == data
        assert (
            await store.read_attachment("AAAAAAAAAAA1", MiB - 10, 20) == data[MiB - 10 : MiB + 10]
        )
        assert await store.get_attachment("nope00000000") is None
        with pytest.raises(NotFound):
            await store.read_attachment("nope00000000", 0, 10)
        # an empty file is a file
        await store.save_attachment(
            _meta("AAAAAAAAAAA2", user.id, b"", T0), _file(tmp_path, b""), 0
        )
        assert await store.read_attachment("AAAAAAAAAAA2", 0, 100) == b""
        assert _on_disk(store, "AAAAAAAAAAA1") in (True, None)


async def test_the_quota_counts_unexpired_files_and_is_atomic(
    open_store: OpenStore, tmp_path: Path
) -> None:
    async with open_store(clock=lambda: T0) as store:
        alice = await store.create_user("alice", "user", None)
        bob = await store.create_user("bob", "user", None)
        data = os.urandom(400_000)
        quota = 1_000_000
        # five concurrent saves of 400 kB under a 1 MB quota: exactly two pass
        results: list[str] = []

        async def save(n: int) -> None:
            try:
                await store.save_attachment(
                    _meta(f"Q{n:011d}", alice.id, data, T0), _file(tmp_path, data), quota
                )
                results.append("ok")
            except QuotaExceeded:
                results.append("quota")

        async with trio.open_nursery() as nursery:
            for n in range(5):
                nursery.start_soon(save, n)
        assert sorted(results) == ["ok", "ok", "quota", "quota", "quota"]
        assert await store.attachment_usage(alice.id, format_ts(T0)) == 800_000
        assert await store.attachment_usage(bob.id, format_ts(T0)) == 0  # per user
        # a refused file left nothing behind
        stored = [n for n in range(5) if await store.get_attachment(f"Q{n:011d}") is not None]
        assert len(stored) == 2
        for n in set(range(5)) - set(stored):
            assert _on_disk(store, f"Q{n:011d}") in (False, None)
        # expired files do not count
        later = format_ts(T0 + 4 * 86400)
        assert await store.attachment_usage(alice.id, later) == 0


async def test_binding_is_for_the_owner_once(open_store: OpenStore, tmp_path: Path) -> None:
    async with open_store(clock=lambda: T0 + 10) as store:
        alice = await store.create_user("alice", "user", None)
        bob = await store.create_user("bob", "user", None)
        data = b"hello"
        await store.save_attachment(_meta("B00000000001", alice.id, data, T0),
                                    _file(tmp_path, data), 0)  # fmt: skip
        with pytest.raises(NotFound):
            await store.bind_attachment("B00000000001", bob.id, "t")
        with pytest.raises(NotFound):
            await store.bind_attachment("B0000000000X", alice.id, "t")
        bound = await store.bind_attachment("B00000000001", alice.id, "alerts")
        assert (bound.topic, bound.event_id, bound.size) == ("alerts", None, 5)
        # binding again for the same topic is a retry of a publish: allowed (the
        # readers are the same); another topic's event may not take the file
        assert (await store.bind_attachment("B00000000001", alice.id, "alerts")).topic == "alerts"
        with pytest.raises(Conflict):
            await store.bind_attachment("B00000000001", alice.id, "other")
        await store.set_attachment_event("B00000000001", 42)
        got = await store.get_attachment("B00000000001")
        assert got is not None and (got.topic, got.event_id) == ("alerts", 42)
        # an expired file cannot be bound (the store's clock is T0 + 10)
        await store.save_attachment(_meta("B00000000002", alice.id, data, T0 - 100, ttl=50),
                                    _file(tmp_path, data), 0)  # fmt: skip
        with pytest.raises(NotFound):
            await store.bind_attachment("B00000000002", alice.id, "t")


async def test_an_event_carries_its_attachment(open_store: OpenStore) -> None:
    async with open_store(clock=lambda: T0) as store:
        user = await store.create_user("alice", "user", None)
        att = AttachmentIn(id="C00000000001", name="a.png", type="image/png", size=3,
                           expires_at=format_ts(T0 + 60))  # fmt: skip
        ext = AttachmentIn(url="https://example.com/files/report%201.pdf")
        result = await store.publish(
            [ev("t", "one", attachment=att), ev("t", "two", attachment=ext), ev("t", "three")],
            user.id, batch=True,
        )  # fmt: skip
        want = [
            {"id": "C00000000001", "name": "a.png", "type": "image/png", "size": 3,
             "expires_at": format_ts(T0 + 60), "url": "/v1/attachments/C00000000001"},
            {"id": None, "name": "report 1.pdf", "type": None, "size": None, "expires_at": None,
             "url": "https://example.com/files/report%201.pdf"},
            None,
        ]  # fmt: skip
        assert [e["attachment"] for e in result.events] == want
        stored = [await store.get_event(e["id"], user.id) for e in result.events]
        assert [e["attachment"] if e else "gone" for e in stored] == want


async def test_pruning_removes_expired_orphaned_and_unpublished_files(
    open_store: OpenStore, tmp_path: Path
) -> None:
    clock = [T0]
    async with open_store(clock=lambda: clock[0]) as store:
        user = await store.create_user("alice", "user", None)
        data = os.urandom(1500)

        async def save(att_id: str, ttl: float = 3 * 86400) -> None:
            await store.save_attachment(_meta(att_id, user.id, data, clock[0], ttl),
                                        _file(tmp_path, data), 0)  # fmt: skip

        await save("P0000expired", ttl=60)
        await save("P0000kept000")
        await save("P0000event00")
        await save("P0000unpubl0")
        await save("P0000live000")
        result = await store.publish([ev("t", "has a file")], user.id)
        event_id = result.events[0]["id"]
        await store.bind_attachment("P0000event00", user.id, "t")
        await store.set_attachment_event("P0000event00", event_id)
        await store.bind_attachment("P0000unpubl0", user.id, "t")  # never stored
        live = await store.publish([ev("t", "keeps its file")], user.id)
        await store.bind_attachment("P0000live000", user.id, "t")
        await store.set_attachment_event("P0000live000", live.events[0]["id"])

        assert await store.prune_attachments(format_ts(T0), 100) == 0
        # two minutes later: only the expired one goes
        assert await store.prune_attachments(format_ts(T0 + 120), 100) == 1
        assert await store.get_attachment("P0000expired") is None
        assert _on_disk(store, "P0000expired") in (False, None)
        with pytest.raises(NotFound):
            await store.read_attachment("P0000expired", 0, 10)
        # the first event is pruned: its file goes with it; an hour on, the one bound
        # to an event that was never stored goes too
        assert await store.prune(format_ts(T0 + 1), 1) == 1
        assert await store.get_event(event_id, user.id) is None
        assert await store.get_event(live.events[0]["id"], user.id) is not None
        assert await store.prune_attachments(format_ts(T0 + HOUR - 60), 100) == 1
        assert await store.get_attachment("P0000event00") is None
        assert await store.get_attachment("P0000unpubl0") is not None
        assert await store.prune_attachments(format_ts(T0 + HOUR + 60), 100) == 1
        expect_gone = {"P0000event00", "P0000unpubl0"}
        for att_id in ("P0000kept000", "P0000event00", "P0000unpubl0", "P0000live000"):
            present = await store.get_attachment(att_id) is not None
            assert present == (att_id not in expect_gone), att_id
            if att_id in expect_gone:
                assert _on_disk(store, att_id) in (False, None)
                with pytest.raises(NotFound):
                    await store.read_attachment(att_id, 0, 10)
            else:
                assert await store.read_attachment(att_id, 0, 5000) == data
        # after the expiry, everything goes, bytes included
        await store.prune_attachments(format_ts(T0 + 4 * 86400), 100)
        for att_id in ("P0000kept000", "P0000event00", "P0000live000"):
            assert await store.get_attachment(att_id) is None
            assert _on_disk(store, att_id) in (False, None)


async def test_sqlite_removes_files_without_a_row(open_store: OpenStore, tmp_path: Path) -> None:
    async with open_store(clock=lambda: T0) as store:
        directory = getattr(store, "attachment_dir", None)
        if directory is None:
            pytest.skip("this engine keeps the bytes in the database")
        user = await store.create_user("alice", "user", None)
        data = b"x" * 10
        await store.save_attachment(_meta("R00000000001", user.id, data, T0),
                                    _file(tmp_path, data), 0)  # fmt: skip
        stray = Path(directory) / "R0000stray00"  # e.g. a crash before the row was written
        stray.write_bytes(b"left over")
        await store.prune_attachments(format_ts(T0), 100)
        assert not stray.exists()
        assert (Path(directory) / "R00000000001").exists()


async def test_a_server_key_is_made_once_and_kept(open_store: OpenStore) -> None:
    async with open_store() as store:
        async with trio.open_nursery() as nursery:  # first uses at once agree
            keys: list[bytes] = []

            async def get() -> None:
                keys.append(await store.server_key("links"))

            for _ in range(4):
                nursery.start_soon(get)
        assert len(keys) == 4 and len(set(keys)) == 1 and len(keys[0]) == 32
        other = await store.server_key("other")
        assert other != keys[0] and await store.server_key("links") == keys[0]
