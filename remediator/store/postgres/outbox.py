"""The escalation outbox in the PostgreSQL store: entries stored before they are sent, leased like incidents
(``FOR UPDATE SKIP LOCKED`` claims, an epoch per grant), written only under their lease. Mixed into
``PostgresStore``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

import asyncpg

from remediator.domain.incidents import OutboxEntry
from remediator.errors import LeaseLost
from remediator.store.postgres.intake import fenced
from remediator.store.postgres.schema import count_of
from remediator.store.rows import canonical_json, outbox_of, storable

T = TypeVar("T")


class PostgresOutbox:
    """The outbox part of the Store protocol."""

    async def _tx(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        raise NotImplementedError  # PostgresStore's

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
        async def put(db: asyncpg.Connection) -> OutboxEntry:
            await fenced(db, incident_id)
            await db.execute(
                "INSERT INTO outbox (incident_id, notifier, dedup_key, payload, status, updated_at, lease_owner,"
                " lease_until, lease_epoch) VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, 1)"
                " ON CONFLICT (dedup_key) DO UPDATE"
                " SET lease_owner = excluded.lease_owner, lease_until = excluded.lease_until,"
                " lease_epoch = outbox.lease_epoch + (outbox.lease_owner <> excluded.lease_owner)::int"
                " WHERE outbox.status = 'pending'"
                " AND (outbox.lease_owner = excluded.lease_owner OR outbox.lease_until < $5)",
                incident_id,
                notifier,
                dedup_key,
                canonical_json(payload),
                now,
                owner,
                lease_until,
            )
            row = await db.fetchrow("SELECT * FROM outbox WHERE dedup_key = $1", dedup_key)
            assert row is not None
            return outbox_of(row)

        return await self._tx(put)

    async def outbox_entries(self, incident_id: int) -> list[OutboxEntry]:
        async def entries(db: asyncpg.Connection) -> list[OutboxEntry]:
            rows = await db.fetch("SELECT * FROM outbox WHERE incident_id = $1 ORDER BY id", incident_id)
            return [outbox_of(r) for r in rows]

        return await self._tx(entries)

    async def outbox_pending(self) -> list[OutboxEntry]:
        async def pending(db: asyncpg.Connection) -> list[OutboxEntry]:
            return [
                outbox_of(r)
                for r in await db.fetch("SELECT * FROM outbox WHERE status = 'pending' ORDER BY id")
            ]

        return await self._tx(pending)

    async def outbox_claim(
        self, owner: str, now: float, lease_until: float, running: Sequence[int] = ()
    ) -> list[OutboxEntry]:
        async def claim(db: asyncpg.Connection) -> list[OutboxEntry]:
            rows = await db.fetch(
                "UPDATE outbox SET lease_owner = $1, lease_until = $3, lease_epoch = lease_epoch + 1"
                " WHERE id IN (SELECT id FROM outbox WHERE status = 'pending'"
                " AND (lease_owner = $1 OR lease_until < $2) AND id <> ALL($4::bigint[]) FOR UPDATE SKIP LOCKED)"
                " RETURNING *",
                owner,
                now,
                lease_until,
                list(running),
            )
            return sorted((outbox_of(r) for r in rows), key=lambda e: e.id)

        return await self._tx(claim)

    async def outbox_renew(
        self, owner: str, held: Sequence[tuple[int, int]], lease_until: float
    ) -> list[int]:
        async def renew(db: asyncpg.Connection) -> list[int]:
            rows = await db.fetch(
                "UPDATE outbox o SET lease_until = greatest(o.lease_until, $1)"
                " FROM unnest($2::bigint[], $3::bigint[]) AS h(id, epoch)"
                " WHERE o.id = h.id AND o.lease_epoch = h.epoch AND o.lease_owner = $4 RETURNING o.id",
                lease_until,
                [i for i, _ in held],
                [e for _, e in held],
                owner,
            )
            return [r["id"] for r in rows]

        return await self._tx(renew)

    async def outbox_confirm(self, entry: OutboxEntry, now: float, until: float) -> None:
        async def confirm(db: asyncpg.Connection) -> bool:
            found = await db.fetchval(
                "UPDATE outbox SET lease_until = greatest(lease_until, $1) WHERE id = $2 AND lease_owner = $3"
                " AND lease_epoch = $4 AND status = 'pending' RETURNING id",
                until,
                entry.id,
                entry.lease_owner,
                entry.lease_epoch,
            )
            return found is not None

        if not await self._tx(confirm):
            raise LeaseLost(
                f"outbox entry {entry.id}: {entry.lease_owner} no longer holds lease {entry.lease_epoch}"
            )

    async def outbox_release(self, owner: str, entry_ids: Sequence[int]) -> None:
        async def release(db: asyncpg.Connection) -> None:
            await db.execute(
                "UPDATE outbox SET lease_until = 0 WHERE id = ANY($1::bigint[]) AND lease_owner = $2",
                list(entry_ids),
                owner,
            )

        await self._tx(release)

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
        owner, epoch = lease if lease is not None else (None, None)

        async def update(db: asyncpg.Connection) -> int:
            return count_of(
                await db.execute(
                    "UPDATE outbox SET status = $1, attempts = $2, error = $3, updated_at = $4 WHERE id = $5"
                    " AND ($6::text IS NULL OR (lease_owner = $6 AND lease_epoch = $7))",
                    status,
                    attempts,
                    error,
                    now,
                    entry_id,
                    owner,
                    epoch,
                )
            )

        if await self._tx(update) == 0 and lease is not None:
            raise LeaseLost(f"outbox entry {entry_id}: {lease[0]} no longer holds lease {lease[1]}")
