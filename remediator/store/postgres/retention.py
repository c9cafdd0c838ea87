"""Retention in the PostgreSQL store: batched deletes that several replicas can run at once.

Each call deletes at most ``limit`` rows in one transaction. The rows are picked with ``FOR UPDATE SKIP
LOCKED``, so two replicas running retention together delete disjoint batches and never wait on each other
(nor on intake, which locks what it writes). What may go is the same as in SQLite (``sqlite/retention.py``):
never an open incident or anything of it, an undelivered outbox entry, an unprocessed inbox row, or a
resolved incident the guards still count. Space: autovacuum makes the dead rows' room reusable, so the
database stops growing; nothing here runs ``VACUUM FULL`` (an exclusive lock on the table).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from remediator.store.base import STORE_TABLES, Cutoffs, RetentionPass
from remediator.store.postgres.schema import count_of

T = TypeVar("T")

# The same rule as SQLite's _DELETABLE: nothing the guards count at or after the cut-off, no pending entry.
_DELETABLE = (
    "i.status = 'resolved' AND i.updated_at < $1 AND i.opened_at < $1"
    " AND NOT EXISTS (SELECT 1 FROM steps s WHERE s.incident_id = i.id"
    " AND coalesce(s.finished_at, s.started_at) >= $1)"
    " AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.incident_id = i.id AND o.status <> 'delivered')"
    " AND NOT EXISTS (SELECT 1 FROM incident_alerts a WHERE a.incident_id = i.id AND a.status = 'firing')"
)


def _of_deletable(table: str, key: str) -> str:
    columns = ", ".join(f"c.{k}" for k in key.split(", "))
    # The table and key names are constants of this module, never input.
    return (
        f"DELETE FROM {table} WHERE ({key}) IN (SELECT {columns} FROM incidents i JOIN {table} c"  # noqa: S608
        f" ON c.incident_id = i.id WHERE {_DELETABLE} LIMIT $2 FOR UPDATE OF c SKIP LOCKED)"
    )


_STATEMENTS: dict[RetentionPass, tuple[str, str]] = {
    # pass: (statement, which cut-off of Cutoffs it takes)
    "inbox": (
        "DELETE FROM inbox WHERE id IN (SELECT id FROM inbox WHERE received_at < $1"
        " AND processed_at IS NOT NULL AND processed_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
        "inbox",
    ),
    "incident_audit": (_of_deletable("audit", "id"), "incidents"),
    "incident_steps": (_of_deletable("steps", "id"), "incidents"),
    "incident_alerts": (
        _of_deletable("incident_alerts", "incident_id, fingerprint, starts_at"),
        "incidents",
    ),
    "incidents": (
        "DELETE FROM incidents WHERE id IN (SELECT i.id FROM incidents i WHERE "  # noqa: S608 (constants)
        + _DELETABLE
        + " AND NOT EXISTS (SELECT 1 FROM steps c WHERE c.incident_id = i.id)"
        " AND NOT EXISTS (SELECT 1 FROM incident_alerts c WHERE c.incident_id = i.id)"
        " AND NOT EXISTS (SELECT 1 FROM audit c WHERE c.incident_id = i.id)"
        " LIMIT $2 FOR UPDATE OF i SKIP LOCKED)",
        "incidents",
    ),
    "audit": (
        "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE incident_id IS NULL AND at < $1"
        " LIMIT $2 FOR UPDATE SKIP LOCKED)",
        "audit",
    ),
    "outbox": (
        "DELETE FROM outbox WHERE id IN (SELECT o.id FROM outbox o WHERE o.status = 'delivered'"
        " AND o.updated_at < $1 AND NOT EXISTS (SELECT 1 FROM incidents i WHERE i.id = o.incident_id"
        " AND i.status <> 'resolved') LIMIT $2 FOR UPDATE OF o SKIP LOCKED)",
        "outbox",
    ),
    # A firing episode is kept whatever its age: without it a re-send would be a new problem (E1).
    "episodes": (
        "DELETE FROM episodes WHERE (fingerprint, starts_at) IN (SELECT e.fingerprint, e.starts_at"
        " FROM episodes e WHERE e.seen_at < $1 AND e.status <> 'firing' AND (e.incident_id IS NULL"
        " OR NOT EXISTS (SELECT 1 FROM incidents i WHERE i.id = e.incident_id))"
        " LIMIT $2 FOR UPDATE OF e SKIP LOCKED)",
        "episodes",
    ),
}


class PostgresRetention:
    """The retention part of the Store protocol, mixed into ``PostgresStore``."""

    async def _tx(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        raise NotImplementedError  # PostgresStore's

    async def retention_batch(self, kind: RetentionPass, cutoffs: Cutoffs, limit: int) -> int:
        statement, cut = _STATEMENTS[kind]

        async def delete(db: asyncpg.Connection) -> int:
            return count_of(await db.execute(statement, getattr(cutoffs, cut), limit))

        return await self._tx(delete)

    async def reclaim(self, pages: int) -> int:
        return 0  # autovacuum's work

    async def table_rows(self) -> dict[str, int]:
        async def count(db: asyncpg.Connection) -> dict[str, int]:
            return {t: int(await db.fetchval(f"SELECT count(*) FROM {t}")) for t in STORE_TABLES}  # noqa: S608

        return await self._tx(count)

    async def size_bytes(self) -> int:
        async def size(db: asyncpg.Connection) -> int:
            return int(await db.fetchval("SELECT pg_database_size(current_database())"))

        return await self._tx(size)
