"""Durability for the SQLite store, whose statements run on the event loop: group fsync of the WAL file and
checkpoints, each in its own thread.

Why not a thread for every transaction: a statement takes microseconds, but handing work to a thread and
back costs several GIL handovers, and each one stalls the loop while the other thread is scheduled. Under
load that cost more than all the SQL (docs/design.md, D15). So commits run on the loop with
``synchronous=NORMAL`` (written to the WAL, not yet flushed), and a caller that needs the commit durable
awaits ``sync()``: one fsync of the WAL file, shared by every commit made before it started. That is what
``synchronous=FULL`` does, minus the per-transaction cost. Checkpoints (copying the WAL into the database
file and syncing it) run on a second connection, so the loop never waits for them either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from remediator.errors import StoreError, StoreUnavailable

logger = logging.getLogger(__name__)

CHECKPOINT_EVERY_S = 1.0
"""How often written WAL frames are copied into the database file (a passive checkpoint)."""


def is_io_error(exc: sqlite3.Error) -> bool:
    """SQLite's I/O errors (a failed read, write or fsync), as opposed to busy, locked or a constraint."""
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_IOERR


class WalSync:
    """Group fsync of ``<db>-wal`` and periodic passive checkpoints for one SQLite file in WAL mode."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fsync_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-fsync")
        self._checkpoint_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-checkpoint")
        self._fd: int | None = None
        self._waiting: asyncio.Future[None] | None = None
        self._syncer: asyncio.Task[None] | None = None
        self._checkpointer: asyncio.Task[None] | None = None
        self._checkpoint_db: sqlite3.Connection | None = None
        self._failed: str | None = None
        self.commits = 0
        """Commits since the last checkpoint; the store counts them."""

    def open(self) -> None:
        """After the store's connection created the WAL file (journal_mode=WAL and a first write)."""
        wal = Path(f"{self.path}-wal")
        self._fd = os.open(wal, os.O_RDONLY | os.O_CLOEXEC)
        # The WAL file's directory entry must survive a power loss too, once.
        directory = os.open(wal.parent, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        self._checkpointer = asyncio.create_task(self._checkpoint_loop(), name="sqlite-checkpoint")

    def check(self) -> None:
        """Raise StoreError once an fsync failed: after a failed fsync the kernel may have dropped the dirty
        pages, so no later success proves anything (the PostgreSQL rule). Restart after fixing the disk."""
        if self._failed is not None:
            raise StoreUnavailable(
                f"the store's disk failed ({self._failed}); restart remediator once it is fixed"
            )

    def fail(self, reason: str) -> None:
        """The disk lost writes (or may have): refuse every write from now on (see check)."""
        if self._failed is None:
            self._failed = reason
            logger.critical("%s; the store refuses every write from now on", reason)

    async def sync(self) -> None:
        """Return once every commit made before this call is on disk."""
        self.check()
        if self._waiting is None:
            self._waiting = asyncio.get_running_loop().create_future()
            if self._syncer is None or self._syncer.done():
                self._syncer = asyncio.create_task(self._sync_loop(), name="sqlite-fsync")
        # Shielded: one caller giving up must not cancel the fsync every other caller waits for.
        await asyncio.shield(self._waiting)

    async def _sync_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting is not None:
            # Commits made while this fsync runs wait for the next one: their frames may be written after
            # the kernel started flushing.
            waiting, self._waiting = self._waiting, None
            try:
                if self._failed is None and self._fd is not None:
                    await loop.run_in_executor(self._fsync_thread, os.fdatasync, self._fd)
            except OSError as exc:
                self.fail(f"fsync of {self.path}-wal: {exc}")
            except BaseException as exc:  # cancelled, or the executor shut down: nobody may wait forever
                waiting.set_exception(StoreUnavailable(f"the store is closing ({exc!r})"))
                waiting.exception()
                raise
            if self._failed is not None:
                waiting.set_exception(StoreUnavailable(self._failed))
                waiting.exception()  # retrieved: a caller that was cancelled meanwhile must not warn
            else:
                waiting.set_result(None)

    def _checkpoint(self) -> None:
        if self._checkpoint_db is None:
            self._checkpoint_db = sqlite3.connect(self.path, isolation_level=None)
            self._checkpoint_db.execute("PRAGMA busy_timeout=5000")
            # The WAL is synced before it is copied, and the database file after (before the WAL is reused).
            self._checkpoint_db.execute("PRAGMA synchronous=FULL")
        # PASSIVE: copies what no reader still needs, never waits for the loop's connection.
        self._checkpoint_db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    async def checkpoint(self) -> None:
        """Copy the WAL into the database file now (also run every CHECKPOINT_EVERY_S while commits happen)."""
        if self._failed is not None:
            return  # never copy frames written after a lost write into the database file
        self.commits = 0
        try:
            await asyncio.get_running_loop().run_in_executor(self._checkpoint_thread, self._checkpoint)
        except sqlite3.Error as exc:
            if is_io_error(exc):
                self.fail(f"checkpoint of {self.path}: {exc}")
            else:  # busy, locked: the WAL only grows until a later checkpoint succeeds
                logger.warning("checkpoint of %s failed: %s", self.path, exc)

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(CHECKPOINT_EVERY_S)
            if self.commits:
                await self.checkpoint()

    async def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpointer
        if self._syncer is not None:
            with contextlib.suppress(StoreError):
                await self._syncer

        def close_checkpoint_db() -> None:
            if self._checkpoint_db is not None:
                self._checkpoint_db.close()

        await asyncio.get_running_loop().run_in_executor(self._checkpoint_thread, close_checkpoint_db)
        self._checkpoint_thread.shutdown(wait=True)
        self._fsync_thread.shutdown(wait=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
