"""The escalation outbox in the SQLite store: entries stored before they are sent, leased like incidents (an
epoch per grant), written only under their lease. A mixin of ``SqliteStore``, kept apart so store.py stays
under the 600-line rule; the PostgreSQL store splits the same way (postgres/outbox.py)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from remediator.domain.incidents import OutboxEntry
from remediator.errors import LeaseLost
from remediator.store.rows import canonical_json, outbox_of, storable
from remediator.store.sqlite.intake import fenced

T = TypeVar("T")


class SqliteOutbox:
    """The outbox part of the Store protocol."""

    async def _run(self, fn: Callable[[sqlite3.Connection], T], synced: bool = True) -> T:
        raise NotImplementedError  # SqliteStore's

    async def outbox_put(
        self,
        incident_id: int,
        notifier: str,
        dedup_key: str,
        payload: Mapping[str, object],
        now: float,
        owner: str,
        lease_until: float,
    ) -> OutboxEntry:
        def put(db: sqlite3.Connection) -> OutboxEntry:
            fenced(db, incident_id)
            db.execute(
                "INSERT INTO outbox (incident_id, notifier, dedup_key, payload, status, updated_at, lease_owner,"
                " lease_until, lease_epoch) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, 1) ON CONFLICT (dedup_key)"
                " DO UPDATE SET lease_owner = excluded.lease_owner, lease_until = excluded.lease_until,"
                " lease_epoch = lease_epoch + (lease_owner != excluded.lease_owner)"
                " WHERE status = 'pending' AND (lease_owner = excluded.lease_owner OR lease_until < ?)",
                (incident_id, notifier, dedup_key, canonical_json(payload), now, owner, lease_until, now),
            )
            return outbox_of(db.execute("SELECT * FROM outbox WHERE dedup_key = ?", (dedup_key,)).fetchone())

        return await self._run(put)

    async def outbox_entries(self, incident_id: int) -> list[OutboxEntry]:
        def entries(db: sqlite3.Connection) -> list[OutboxEntry]:
            rows = db.execute("SELECT * FROM outbox WHERE incident_id = ? ORDER BY id", (incident_id,))
            return [outbox_of(r) for r in rows]

        return await self._run(entries, synced=False)

    async def outbox_pending(self) -> list[OutboxEntry]:
        def pending(db: sqlite3.Connection) -> list[OutboxEntry]:
            return [
                outbox_of(r) for r in db.execute("SELECT * FROM outbox WHERE status = 'pending' ORDER BY id")
            ]

        return await self._run(pending, synced=False)

    async def outbox_claim(
        self, owner: str, now: float, lease_until: float, running: Sequence[int] = ()
    ) -> list[OutboxEntry]:
        def claim_entries(db: sqlite3.Connection) -> list[OutboxEntry]:
            rows = db.execute(
                "UPDATE outbox SET lease_owner = ?, lease_until = ?, lease_epoch = lease_epoch + 1"
                " WHERE status = 'pending' AND (lease_owner = ? OR lease_until < ?)"
                " AND id NOT IN (SELECT value FROM json_each(?)) RETURNING *",
                (owner, lease_until, owner, now, json.dumps(list(running))),
            ).fetchall()
            return sorted((outbox_of(r) for r in rows), key=lambda e: e.id)

        return await self._run(claim_entries)

    async def outbox_renew(
        self, owner: str, held: Sequence[tuple[int, int]], lease_until: float
    ) -> list[int]:
        def renew_entries(db: sqlite3.Connection) -> list[int]:
            rows = db.execute(
                "UPDATE outbox SET lease_until = max(lease_until, ?) WHERE lease_owner = ? AND (id, lease_epoch)"
                " IN (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?))"
                " RETURNING id",
                (lease_until, owner, json.dumps([list(h) for h in held])),
            ).fetchall()
            return [r["id"] for r in rows]

        return await self._run(renew_entries, synced=False)

    async def outbox_confirm(self, entry: OutboxEntry, now: float, until: float) -> None:
        def confirm(db: sqlite3.Connection) -> bool:
            row = db.execute(
                "UPDATE outbox SET lease_until = max(lease_until, ?) WHERE id = ? AND lease_owner = ?"
                " AND lease_epoch = ? AND status = 'pending' RETURNING id",
                (until, entry.id, entry.lease_owner, entry.lease_epoch),
            ).fetchone()
            return row is not None

        if not await self._run(confirm, synced=False):
            raise LeaseLost(
                f"outbox entry {entry.id}: {entry.lease_owner} no longer holds lease {entry.lease_epoch}"
            )

    async def outbox_release(self, owner: str, entry_ids: Sequence[int]) -> None:
        await self._run(
            lambda db: db.execute(
                "UPDATE outbox SET lease_until = 0 WHERE lease_owner = ? AND id IN (SELECT value FROM json_each(?))",
                (owner, json.dumps(list(entry_ids))),
            )
        )

    async def outbox_update(
        self,
        entry_id: int,
        status: str,
        attempts: int,
        error: str,
        now: float,
        lease: tuple[str, int] | None = None,
    ) -> None:
        error = storable(error)

        def update(db: sqlite3.Connection) -> int:
            owner, epoch = lease if lease is not None else (None, None)
            return db.execute(
                "UPDATE outbox SET status = ?, attempts = ?, error = ?, updated_at = ? WHERE id = ?"
                " AND (? IS NULL OR (lease_owner = ? AND lease_epoch = ?))",
                (status, attempts, error, now, entry_id, owner, owner, epoch),
            ).rowcount

        if await self._run(update) == 0 and lease is not None:
            raise LeaseLost(f"outbox entry {entry_id}: {lease[0]} no longer holds lease {lease[1]}")
