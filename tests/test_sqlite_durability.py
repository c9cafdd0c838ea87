"""The SQLite store's durability contract: statements run on the loop, and a write that must survive a power
loss returns only after the WAL file was flushed (grouped across concurrent writers); a failed flush stops
every later write; checkpoints happen in the background."""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from helpers import eventually

from remediator.errors import StoreError
from remediator.store.base import Note
from remediator.store.sqlite import SqliteStore, wal


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "s.sqlite3")
    await opened.open()
    yield opened
    await opened.close()


@pytest.fixture
def flushed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The inode of every file flushed with fdatasync, in order."""
    inodes: list[int] = []
    real = os.fdatasync

    def recording(fd: int) -> None:
        real(fd)
        inodes.append(os.fstat(fd).st_ino)

    monkeypatch.setattr(os, "fdatasync", recording)
    return inodes


async def test_an_inbox_write_returns_only_after_the_wal_is_flushed(
    store: SqliteStore, flushed: list[int]
) -> None:
    wal_inode = os.stat(f"{store.path}-wal").st_ino
    for n in range(3):
        before = len(flushed)
        await store.inbox_put(f'{{"n": {n}}}', 1.0)
        assert flushed[before:] == [wal_inode]


async def test_concurrent_writers_share_flushes(store: SqliteStore, flushed: list[int]) -> None:
    ids = await asyncio.gather(*(store.inbox_put(f'{{"n": {n}}}', 1.0) for n in range(200)))
    assert len(set(ids)) == 200
    assert 1 <= len(flushed) <= 3  # one transaction and one flush per batch, not per request


async def test_intake_bookkeeping_does_not_wait_for_a_flush(store: SqliteStore, flushed: list[int]) -> None:
    inbox_id = await store.inbox_put("{}", 1.0)
    before = len(flushed)
    await store.record_intake([Note("unmatched", {"fingerprint": "f"})], [inbox_id], 2.0, "a", 17.0)
    assert len(flushed) == before
    assert await store.inbox_pending() == []


async def test_a_failed_flush_stops_every_later_write(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    with monkeypatch.context() as patch:
        patch.setattr(os, "fdatasync", failing)
        with pytest.raises(StoreError, match="Input/output error"):
            await store.inbox_put("{}", 1.0)
    # The disk answers again, but pages may have been dropped: nothing may be acknowledged any more.
    with pytest.raises(StoreError, match="disk failed"):
        await store.inbox_put("{}", 1.0)
    with pytest.raises(StoreError, match="disk failed"):
        await store.list_incidents()


async def test_the_wal_is_checkpointed_in_the_background(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wal, "CHECKPOINT_EVERY_S", 0.05)
    store = SqliteStore(tmp_path / "c.sqlite3")
    await store.open()
    try:
        size_before = os.stat(store.path).st_size
        await asyncio.gather(*(store.inbox_put("x" * 4000, 1.0) for _ in range(50)))
        # Only a checkpoint copies rows into the database file (the connection's own one starts at ~40 MB).
        await eventually(lambda: os.stat(store.path).st_size >= size_before + 50 * 4000, timeout=5)
    finally:
        await store.close()
    assert not Path(f"{store.path}-wal").exists()  # closing the last connection folds the WAL in
