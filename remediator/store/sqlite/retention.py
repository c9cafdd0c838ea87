"""Retention in the SQLite store: bounded deletes, and giving freed pages back so the file stops growing.

Each call deletes at most ``limit`` rows in one transaction on the loop (docs/design.md, D15), so intake's
transactions get the file between two batches. What may go is decided here, in SQL, from the cut-off times
``engine/retention.py`` computes: never an open incident or anything of it, an undelivered outbox entry, an
unprocessed inbox row, or a resolved incident with an action or an opening the guards still count
(docs/operations.md, "Retention").

Space: a new file is created with ``auto_vacuum=INCREMENTAL`` (``store.py: open``), so ``reclaim`` truncates
the freed pages off the file a few at a time. A file made before that keeps ``auto_vacuum=NONE`` (switching
needs a VACUUM, a full copy under an exclusive lock, which a daemon must not start by itself): its freed pages
go on SQLite's free list and new rows reuse them, so the file stops growing, but does not shrink.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from remediator.errors import StoreError
from remediator.store.base import STORE_TABLES, Cutoffs, RetentionPass
from remediator.store.sqlite.errors import mapped

T = TypeVar("T")

# A resolved incident the guards no longer count and no notifier still waits on: nothing that acted, opened
# or finished at or after the cut-off (a step can finish after its incident resolved), no undelivered entry.
_DELETABLE = (
    "i.status = 'resolved' AND i.updated_at < :cut AND i.opened_at < :cut"
    " AND NOT EXISTS (SELECT 1 FROM steps s WHERE s.incident_id = i.id"
    " AND coalesce(s.finished_at, s.started_at) >= :cut)"
    " AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.incident_id = i.id AND o.status <> 'delivered')"
)


def _of_deletable(table: str, key: str) -> str:
    # The table and key names are constants of this module, never input.
    return (
        f"DELETE FROM {table} WHERE {key} IN (SELECT c.{key} FROM incidents i JOIN {table} c"  # noqa: S608
        f" ON c.incident_id = i.id WHERE {_DELETABLE} LIMIT :n)"
    )


_STATEMENTS: dict[RetentionPass, tuple[str, str]] = {
    # pass: (statement, which cut-off of Cutoffs it takes)
    "inbox": (
        "DELETE FROM inbox WHERE id IN (SELECT id FROM inbox WHERE received_at < :cut"
        " AND processed_at IS NOT NULL AND processed_at < :cut LIMIT :n)",
        "inbox",
    ),
    "incident_audit": (_of_deletable("audit", "id"), "incidents"),
    "incident_steps": (_of_deletable("steps", "id"), "incidents"),
    "incident_alerts": (_of_deletable("incident_alerts", "rowid"), "incidents"),
    "incidents": (
        "DELETE FROM incidents WHERE id IN (SELECT i.id FROM incidents i WHERE "  # noqa: S608 (constants)
        + _DELETABLE
        + " AND NOT EXISTS (SELECT 1 FROM steps c WHERE c.incident_id = i.id)"
        " AND NOT EXISTS (SELECT 1 FROM incident_alerts c WHERE c.incident_id = i.id)"
        " AND NOT EXISTS (SELECT 1 FROM audit c WHERE c.incident_id = i.id) LIMIT :n)",
        "incidents",
    ),
    "audit": (
        "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE incident_id IS NULL AND at < :cut LIMIT :n)",
        "audit",
    ),
    "outbox": (
        "DELETE FROM outbox WHERE id IN (SELECT o.id FROM outbox o WHERE o.status = 'delivered'"
        " AND o.updated_at < :cut AND NOT EXISTS (SELECT 1 FROM incidents i WHERE i.id = o.incident_id"
        " AND i.status <> 'resolved') LIMIT :n)",
        "outbox",
    ),
    # A firing episode is kept whatever its age: without it a re-send would be a new problem (E1).
    "episodes": (
        "DELETE FROM episodes WHERE rowid IN (SELECT e.rowid FROM episodes e WHERE e.seen_at < :cut"
        " AND e.status <> 'firing' AND (e.incident_id IS NULL"
        " OR NOT EXISTS (SELECT 1 FROM incidents i WHERE i.id = e.incident_id)) LIMIT :n)",
        "episodes",
    ),
}


def _count_rows(path: Path) -> dict[str, int]:
    # Its own read-only connection, in a thread: counting scans whole tables, which must not hold the loop
    # (WAL lets this reader run beside the store's writes).
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        db.execute("PRAGMA busy_timeout=5000")
        return {t: int(db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in STORE_TABLES}  # noqa: S608
    finally:
        db.close()


class SqliteRetention:
    """The retention part of the Store protocol, mixed into ``SqliteStore``."""

    path: Path

    async def _run(self, fn: Callable[[sqlite3.Connection], T], synced: bool = True) -> T:
        raise NotImplementedError  # SqliteStore's

    async def retention_batch(self, kind: RetentionPass, cutoffs: Cutoffs, limit: int) -> int:
        statement, cut = _STATEMENTS[kind]
        params = {"cut": getattr(cutoffs, cut), "n": limit}
        # Not synced: a deletion lost to a power loss is simply made again by the next run.
        return await self._run(lambda db: db.execute(statement, params).rowcount, synced=False)

    async def reclaim(self, pages: int) -> int:
        def vacuum(db: sqlite3.Connection) -> int:
            if db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:  # 2: INCREMENTAL
                return 0
            # executescript steps the pragma to the end; a plain execute frees a single page.
            db.executescript(f"PRAGMA incremental_vacuum({int(pages)})")
            return int(db.execute("PRAGMA freelist_count").fetchone()[0])

        return await self._run(vacuum, synced=False)

    async def table_rows(self) -> dict[str, int]:
        try:
            return await asyncio.to_thread(_count_rows, self.path)
        except sqlite3.Error as exc:
            raise mapped(exc) from exc

    async def size_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            try:
                total += os.stat(f"{self.path}{suffix}").st_size
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StoreError(f"cannot stat {self.path}{suffix}: {exc}") from exc
        return total
