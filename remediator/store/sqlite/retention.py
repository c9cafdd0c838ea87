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
import math
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
# or finished at or after the cut-off (a step can finish after its incident resolved), no undelivered entry,
# and no alert of it still firing (its episode is kept while it fires, and every re-send is recorded as a
# duplicate of this incident: the incident must outlive it).
_DELETABLE = (
    "i.status = 'resolved' AND i.updated_at < :cut AND i.opened_at < :cut"
    " AND NOT EXISTS (SELECT 1 FROM steps s WHERE s.incident_id = i.id"
    " AND coalesce(s.finished_at, s.started_at) >= :cut)"
    " AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.incident_id = i.id AND o.status <> 'delivered')"
    " AND NOT EXISTS (SELECT 1 FROM incident_alerts a WHERE a.incident_id = i.id AND a.status = 'firing')"
)


def _of_deletable(table: str, key: str) -> str:
    # The table and key names are constants of this module, never input.
    return (
        f"DELETE FROM {table} WHERE {key} IN (SELECT c.{key} FROM incidents i JOIN {table} c"  # noqa: S608
        f" ON c.incident_id = i.id WHERE {_DELETABLE} LIMIT :n)"
    )


_STATEMENTS: dict[RetentionPass, tuple[str, str]] = {
    # pass: (statement, which cut-off of Cutoffs it takes); :below is the end of the table's old prefix
    # (_OLD_PREFIX), for the two tables that have no index on their time.
    "inbox": (
        "DELETE FROM inbox WHERE id IN (SELECT id FROM inbox WHERE id < :below AND received_at < :cut"
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
        "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE incident_id IS NULL AND id < :below"
        " AND at < :cut LIMIT :n)",
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


_MAX_ID = 2**63 - 1
CLOCK_SLACK_S = 3600.0
"""How far a stepped clock may have put a row's time out of order: a row stamped more than this after the
retention run's own time was written while the clock was ahead; a time range read by id looks this much
further either side."""
_OLD_PREFIX: dict[RetentionPass, tuple[str, str]] = {
    "inbox": ("inbox", "received_at"),
    "audit": ("audit", "at"),
}
"""The passes that find their rows by id: (table, the column holding each row's time)."""


def old_prefix_end(
    db: sqlite3.Connection, table: str, column: str, cut: float, future: float = math.inf
) -> int:
    """The first id of ``table`` whose ``column`` is ``cut`` or later (one past the last id when none is):
    every row below it is older than ``cut``, because one writer assigns ids in the order of its clock.
    O(log n) lookups of the primary key, where an index on the time would cost every insert (D45).

    The statements still test each row's time, so no younger row is ever deleted, whatever this answers. A
    clock that was stepped makes the times go out of order: a row written after a younger one (the clock went
    back) waits until that one is old too; rows written while the clock was ahead (later than ``future``, which
    no honest row is) are passed over as if old, so that a block of them cannot hide the old rows after it."""
    # The table and column names are constants of this module, never input. Two statements: SQLite reads
    # min() or max() alone off the primary key, but both in one statement by scanning the whole table.
    lo = db.execute(f"SELECT min(id) FROM {table}").fetchone()[0]  # noqa: S608
    if lo is None:
        return 0
    hi = db.execute(f"SELECT max(id) FROM {table}").fetchone()[0] + 1  # noqa: S608
    # Rows below lo are older than the cut (or absent), rows from hi on are not (or absent).
    while lo < hi:
        middle = (lo + hi) // 2
        row = db.execute(
            f"SELECT id, {column} FROM {table} WHERE id >= ? ORDER BY id LIMIT 1",  # noqa: S608
            (middle,),
        ).fetchone()
        if row is None or row[0] >= hi:
            hi = middle
        elif row[1] < cut or row[1] > future:
            lo = row[0] + 1
        else:
            hi = row[0]
    return min(int(lo), _MAX_ID)  # one past a table's largest possible id cannot be bound as a parameter


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
        params: dict[str, float] = {"cut": getattr(cutoffs, cut), "n": limit}

        def delete(db: sqlite3.Connection) -> int:
            if kind in _OLD_PREFIX:
                future = cutoffs.now + CLOCK_SLACK_S
                params["below"] = old_prefix_end(db, *_OLD_PREFIX[kind], params["cut"], future)
            return db.execute(statement, params).rowcount

        # Not synced: a deletion lost to a power loss is simply made again by the next run.
        return await self._run(delete, synced=False)

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
