"""The store for several replicas: PostgreSQL through asyncpg, with the same protocol as the SQLite store.

Replicas coordinate here and nowhere else: a transaction-scoped advisory lock per (policy, target) makes one
incident per target, ``FOR UPDATE SKIP LOCKED`` hands each expired lease to one claimant, and a session-scoped
advisory lock serialises guard admissions so limits hold over all replicas. Migrations are numbered and applied
at open under an advisory lock, so replicas starting together do not race.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

import asyncpg

from remediator.domain.effectiveness import IncidentOutcome
from remediator.domain.fencing import Fence
from remediator.domain.incidents import (
    AuditRecord,
    Incident,
    IncidentStatus,
    StepRecord,
    StepStatus,
)
from remediator.domain.maintenance import MaintenanceWindow
from remediator.errors import ConfigError, LeaseLost, StoreDataError, StoreError, StoreUnavailable
from remediator.store.base import (
    LONGEST_ACTION_S,
    Firing,
    History,
    IntakeEvent,
    IntakeResult,
    MaintenanceChanges,
    Resolved,
)
from remediator.store.effectiveness import outcome_of, outcomes_sql
from remediator.store.postgres import maintenance
from remediator.store.postgres.errors import FAILURES, mapped
from remediator.store.postgres.intake import (
    Audits,
    add_audit,
    fenced,
    lock_keys,
    record_firing,
    record_resolved,
    write_audit,
    write_audits,
)
from remediator.store.postgres.outbox import PostgresOutbox
from remediator.store.postgres.retention import PostgresRetention
from remediator.store.postgres.schema import ADMISSION_LOCK, MIGRATION_LOCK, MIGRATIONS, count_of, key_lock
from remediator.store.rows import audit_of, incident_of, newer_schema, step_of, storable

T = TypeVar("T")

_OUTCOMES = outcomes_sql("(a.detail::jsonb ->> 'reason')", "string_agg({}, ',')", "$1", "$2")
"""Store.incident_outcomes in PostgreSQL."""


class PostgresStore(PostgresOutbox, PostgresRetention):
    """The Store protocol on PostgreSQL; several replicas may share one database."""

    def __init__(self, url: str, min_size: int = 2, max_size: int = 10) -> None:
        self.url = url
        self.min_size = min_size
        self.max_size = max_size
        self._pool: asyncpg.Pool | None = None
        # One waiter per process on the shared advisory lock, so waiting ladders cannot drain the pool.
        self._local_admission = asyncio.Lock()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreUnavailable("store is not open")
        return self._pool

    async def _tx(
        self, fn: Callable[[asyncpg.Connection], Awaitable[T]], *, single_statement: bool = False
    ) -> T:
        """Run ``fn`` in one transaction; map asyncpg's and the network's errors to StoreError.
        ``single_statement``: ``fn`` runs one statement, which is its own transaction (autocommit), so BEGIN and
        COMMIT are not two more round trips."""
        try:
            async with self.pool.acquire() as db:
                if single_statement:
                    return await fn(db)
                async with db.transaction():
                    return await fn(db)
        except (asyncpg.DataError, OverflowError, UnicodeError) as exc:
            # This value cannot be stored; the same call would fail again (not an outage to retry).
            raise StoreDataError(f"postgres cannot store a value: {exc}") from exc
        except FAILURES as exc:
            raise mapped(exc) from exc

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(self.url, min_size=self.min_size, max_size=self.max_size)
        except FAILURES as exc:
            raise StoreError(f"cannot connect to postgres: {exc}") from exc

        async def migrate(db: asyncpg.Connection) -> None:
            await db.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await db.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ"
                " NOT NULL DEFAULT now())"
            )
            version = await db.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations")
            if version > len(MIGRATIONS):
                raise ConfigError(newer_schema("the PostgreSQL store", version, len(MIGRATIONS)))
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                await db.execute(script)
                await db.execute("INSERT INTO schema_migrations (version) VALUES ($1)", number)

        await self._tx(migrate)

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    # -- inbox --------------------------------------------------------------------------------------------

    async def inbox_put(self, body: str, now: float) -> int:
        async def put(db: asyncpg.Connection) -> int:
            return int(
                await db.fetchval(
                    "INSERT INTO inbox (received_at, body) VALUES ($1, $2) RETURNING id", now, body
                )
            )

        # Every webhook POST waits for this: one round trip, committed (and durable) when it returns.
        return await self._tx(put, single_statement=True)

    async def inbox_pending(self, received_before: float | None = None) -> list[tuple[int, str]]:
        async def pending(db: asyncpg.Connection) -> list[tuple[int, str]]:
            rows = await db.fetch(
                "SELECT id, body FROM inbox WHERE processed_at IS NULL"
                " AND ($1::double precision IS NULL OR received_at < $1) ORDER BY id LIMIT 10000",
                received_before,
            )
            return [(r["id"], r["body"]) for r in rows]

        return await self._tx(pending)

    async def inbox_received(
        self, since: float, until: float, limit: int = 100_000
    ) -> list[tuple[float, str]]:
        async def received(db: asyncpg.Connection) -> list[tuple[float, str]]:
            rows = await db.fetch(
                "SELECT received_at, body FROM inbox WHERE received_at >= $1 AND received_at <= $2"
                " ORDER BY id LIMIT $3",
                since,
                until,
                limit,
            )
            return [(r["received_at"], r["body"]) for r in rows]

        return await self._tx(received)

    # -- incidents ----------------------------------------------------------------------------------------

    async def record_intake(
        self,
        events: Sequence[IntakeEvent],
        inbox_ids: Sequence[int],
        now: float,
        owner: str,
        lease_until: float,
    ) -> list[IntakeResult]:
        async def record(db: asyncpg.Connection) -> list[IntakeResult]:
            # Every key of the batch is locked up front, in one order, so two replicas never deadlock.
            # The episodes of one alert (fingerprint) are decided under its own lock too, since a resolved
            # carries no (policy, target).
            keys = sorted(
                {key_lock(e.policy, f"{e.host}/{e.target}") for e in events if isinstance(e, Firing)}
                | {key_lock("", e.alert.fingerprint) for e in events if isinstance(e, Firing)}
                | {key_lock("", e.fingerprint) for e in events if isinstance(e, Resolved)}
            )
            await lock_keys(db, keys)
            results: list[IntakeResult] = []
            # Audit rows are written together at the end (same transaction, same order), as SQLite's are.
            audits: Audits = []
            for event in events:
                if isinstance(event, Firing):
                    results.append(await record_firing(db, event, now, owner, lease_until, audits))
                elif isinstance(event, Resolved):
                    results.append(await record_resolved(db, event, now, audits))
                else:
                    add_audit(audits, None, event.kind, event.detail, now)
                    results.append(None)
            await write_audits(db, audits)
            if inbox_ids:
                await db.execute(
                    "UPDATE inbox SET processed_at = $1 WHERE id = ANY($2::bigint[])", now, list(inbox_ids)
                )
            return results

        return await self._tx(record)

    async def set_status(self, incident_id: int, status: IncidentStatus, reason: str, now: float) -> None:
        reason = storable(reason)

        async def update(db: asyncpg.Connection) -> None:
            await fenced(db, incident_id)
            await db.execute(
                "UPDATE incidents SET status = $1, reason = $2, updated_at = $3 WHERE id = $4 AND status <> 'resolved'",
                status,
                reason,
                now,
                incident_id,
            )
            await write_audit(db, incident_id, status, {"reason": reason}, now)

        await self._tx(update)

    # -- leases -------------------------------------------------------------------------------------------

    async def claim_expired(
        self,
        owner: str,
        now: float,
        lease_until: float,
        limit: int = 100,
        running: Sequence[int] = (),
        reclaim_own: bool = True,
    ) -> list[Incident]:
        async def claim(db: asyncpg.Connection) -> list[Incident]:
            rows = await db.fetch(
                "UPDATE incidents SET lease_owner = $1, lease_until = $2, lease_epoch = lease_epoch + 1"
                " WHERE id IN (SELECT id FROM incidents WHERE status = 'active'"
                " AND (lease_until < $3 OR ($6 AND lease_owner = $1)) AND id <> ALL($5::bigint[]) ORDER BY id"
                " LIMIT $4"
                " FOR UPDATE SKIP LOCKED) RETURNING *",
                owner,
                lease_until,
                now,
                limit,
                list(running),
                reclaim_own,
            )
            return sorted((incident_of(r) for r in rows), key=lambda i: i.id)

        return await self._tx(claim)

    async def renew_leases(
        self, owner: str, held: Sequence[tuple[int, int]], lease_until: float
    ) -> list[int]:
        async def renew(db: asyncpg.Connection) -> list[int]:
            rows = await db.fetch(
                "UPDATE incidents i SET lease_until = greatest(i.lease_until, $1)"
                " FROM unnest($2::bigint[], $3::bigint[]) AS h(id, epoch)"
                " WHERE i.id = h.id AND i.lease_epoch = h.epoch AND i.lease_owner = $4 RETURNING i.id",
                lease_until,
                [i for i, _ in held],
                [e for _, e in held],
                owner,
            )
            return sorted(r["id"] for r in rows)

        return await self._tx(renew)

    async def lease_confirm(self, fence: Fence, now: float, until: float) -> None:
        async def confirm(db: asyncpg.Connection) -> bool:
            found = await db.fetchval(
                "UPDATE incidents SET lease_until = greatest(lease_until, $1) WHERE id = $2 AND lease_owner = $3"
                " AND lease_epoch = $4 AND status = 'active' RETURNING id",
                until,
                fence.incident_id,
                fence.owner,
                fence.epoch,
            )
            return found is not None

        if not await self._tx(confirm):
            raise LeaseLost(
                f"incident {fence.incident_id}: {fence.owner} no longer holds lease {fence.epoch}"
            )

    async def release_leases(self, owner: str, incident_ids: Sequence[int]) -> None:
        async def release(db: asyncpg.Connection) -> None:
            await db.execute(
                "UPDATE incidents SET lease_until = 0 WHERE id = ANY($1::bigint[]) AND lease_owner = $2",
                list(incident_ids),
                owner,
            )

        await self._tx(release)

    def admission(self) -> AbstractAsyncContextManager[None]:
        return self._admission()

    @contextlib.asynccontextmanager
    async def _admission(self) -> AsyncIterator[None]:
        async with self._local_admission:
            try:
                db = await self.pool.acquire()
            except FAILURES as exc:
                raise mapped(exc) from exc
            try:
                try:
                    await db.execute("SELECT pg_advisory_lock($1)", ADMISSION_LOCK)
                except FAILURES as exc:
                    raise mapped(exc) from exc
                try:
                    yield
                finally:
                    # A failure here means the session, and with it the lock, is gone already.
                    with contextlib.suppress(*FAILURES):
                        await db.execute("SELECT pg_advisory_unlock($1)", ADMISSION_LOCK)
            finally:
                with contextlib.suppress(*FAILURES):
                    await self.pool.release(db)

    # -- steps and audit ----------------------------------------------------------------------------------

    async def step_started(
        self, incident_id: int, index: int, kind: str, name: str, attempt: int, now: float
    ) -> int:
        async def start(db: asyncpg.Connection) -> int:
            await fenced(db, incident_id)
            return int(
                await db.fetchval(
                    "INSERT INTO steps (incident_id, idx, kind, name, attempt, status, started_at)"
                    " VALUES ($1, $2, $3, $4, $5, 'started', $6) RETURNING id",
                    incident_id,
                    index,
                    kind,
                    name,
                    attempt,
                    now,
                )
            )

        return await self._tx(start)

    async def step_finished(self, step_id: int, status: StepStatus, detail: str, now: float) -> None:
        detail = storable(detail)

        async def finish(db: asyncpg.Connection) -> None:
            await fenced(db, await db.fetchval("SELECT incident_id FROM steps WHERE id = $1", step_id))
            await db.execute(
                "UPDATE steps SET status = $1, detail = $2, finished_at = $3 WHERE id = $4",
                status,
                detail,
                now,
                step_id,
            )

        await self._tx(finish)

    async def audit(self, incident_id: int | None, kind: str, detail: dict[str, Any], now: float) -> None:
        async def write(db: asyncpg.Connection) -> None:
            await fenced(db, incident_id)
            await write_audit(db, incident_id, kind, detail, now)

        await self._tx(write)

    # -- reads --------------------------------------------------------------------------------------------

    async def get_incident(self, incident_id: int) -> Incident | None:
        async def get(db: asyncpg.Connection) -> Incident | None:
            row = await db.fetchrow("SELECT * FROM incidents WHERE id = $1", incident_id)
            return None if row is None else incident_of(row)

        return await self._tx(get)

    async def list_incidents(self, status: IncidentStatus | None = None, limit: int = 100) -> list[Incident]:
        async def list_(db: asyncpg.Connection) -> list[Incident]:
            rows = await db.fetch(
                "SELECT * FROM incidents WHERE ($1::text IS NULL OR status = $1) ORDER BY id DESC LIMIT $2",
                status,
                limit,
            )
            return [incident_of(r) for r in rows]

        return await self._tx(list_)

    async def open_incidents(self) -> list[Incident]:
        async def open_(db: asyncpg.Connection) -> list[Incident]:
            return [
                incident_of(r)
                for r in await db.fetch("SELECT * FROM incidents WHERE status <> 'resolved' ORDER BY id")
            ]

        return await self._tx(open_)

    async def steps(self, incident_id: int) -> list[StepRecord]:
        async def steps(db: asyncpg.Connection) -> list[StepRecord]:
            rows = await db.fetch("SELECT * FROM steps WHERE incident_id = $1 ORDER BY id", incident_id)
            return [step_of(r) for r in rows]

        return await self._tx(steps)

    async def incident_outcomes(
        self, before_id: int | None = None, limit: int = 500
    ) -> list[IncidentOutcome]:
        before = 2**63 - 1 if before_id is None else before_id

        async def page(db: asyncpg.Connection) -> list[IncidentOutcome]:
            return [outcome_of(r) for r in await db.fetch(_OUTCOMES, before, limit)]

        return await self._tx(page, single_statement=True)

    async def audit_trail(
        self, incident_id: int | None = None, limit: int = 1000, kinds: Sequence[str] | None = None
    ) -> list[AuditRecord]:
        only = None if kinds is None else list(kinds)

        async def trail(db: asyncpg.Connection) -> list[AuditRecord]:
            if incident_id is None:
                rows = list(
                    reversed(
                        await db.fetch(
                            "SELECT * FROM audit WHERE ($2::text[] IS NULL OR kind = ANY($2::text[])) ORDER BY id DESC LIMIT $1",
                            limit,
                            only,
                        )
                    )
                )
            else:
                rows = await db.fetch(
                    "SELECT * FROM audit WHERE incident_id = $3 AND ($2::text[] IS NULL OR kind = ANY($2::text[]))"
                    " ORDER BY id LIMIT $1",
                    limit,
                    only,
                    incident_id,
                )
            return [audit_of(r) for r in rows]

        return await self._tx(trail)

    # -- maintenance windows ------------------------------------------------------------------------------

    async def maintenance_add(
        self,
        target: str,
        host: str,
        policy: str,
        starts_at: float,
        ends_at: float,
        reason: str,
        by: str,
        now: float,
    ) -> MaintenanceWindow:
        t, h, p, r, b = (storable(v) for v in (target, host, policy, reason, by))
        return await self._tx(lambda db: maintenance.add(db, t, h, p, starts_at, ends_at, r, b, now))

    async def maintenance_windows(self, since: float) -> list[MaintenanceWindow]:
        return await self._tx(lambda db: maintenance.listed(db, since), single_statement=True)

    async def maintenance_cancel(self, window_id: int, by: str, now: float) -> MaintenanceWindow | None:
        by = storable(by)
        return await self._tx(lambda db: maintenance.cancel(db, window_id, by, now))

    async def maintenance_pass(
        self, owner: str, now: float, lease_until: float, running: Sequence[int] = ()
    ) -> MaintenanceChanges:
        return await self._tx(lambda db: maintenance.run_pass(db, owner, now, lease_until, running))

    # -- guards -------------------------------------------------------------------------------------------

    async def history(
        self,
        policy: str,
        target: str,
        incident_id: int,
        since_target: float,
        since_budget: float,
        since_flap: float,
        since_cooldown: float = float("-inf"),
        host: str = "default",
    ) -> History:
        async def read(db: asyncpg.Connection) -> History:
            row = await db.fetchrow(
                "SELECT"
                " (SELECT count(*) FROM steps s JOIN incidents i ON i.id = s.incident_id"
                "   WHERE s.kind = 'act' AND s.started_at >= $1 AND i.target = $2 AND i.host = $9) AS target_actions,"
                " (SELECT count(*) FROM steps WHERE kind = 'act' AND started_at >= $3) AS all_actions,"
                " (SELECT max(coalesce(s.finished_at, s.started_at)) FROM steps s JOIN incidents i ON i.id = s.incident_id"
                "   WHERE s.kind = 'act' AND s.started_at >= $7 AND i.policy = $4 AND i.target = $2 AND i.host = $9"
                "   AND i.id <> $5"
                "   AND coalesce(s.finished_at, s.started_at) >= $8) AS last_other,"
                " (SELECT count(*) FROM incidents WHERE policy = $4 AND host = $9 AND target = $2 AND opened_at >= $6)"
                " AS opened",
                since_target,
                target,
                since_budget,
                policy,
                incident_id,
                since_flap,
                since_cooldown - LONGEST_ACTION_S,
                since_cooldown,
                host,
            )
            assert row is not None
            return History(row["target_actions"], row["all_actions"], row["last_other"], row["opened"])

        return await self._tx(read)

    async def breakers_load(self, names: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        async def load(db: asyncpg.Connection) -> dict[str, dict[str, Any]]:
            rows = await db.fetch(
                "SELECT name, state FROM breakers WHERE $1::text[] IS NULL OR name = ANY($1::text[])",
                None if names is None else list(names),
            )
            return {r["name"]: json.loads(r["state"]) for r in rows}

        return await self._tx(load)

    async def breaker_save(self, name: str, state: dict[str, Any] | None, now: float) -> None:
        async def save(db: asyncpg.Connection) -> None:
            if state is None:
                await db.execute("DELETE FROM breakers WHERE name = $1", name)
                return
            await db.execute(
                "INSERT INTO breakers (name, state, updated_at) VALUES ($1, $2, $3)"
                " ON CONFLICT (name) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                name,
                json.dumps(state),
                now,
            )

        await self._tx(save)

    async def control_get(self, key: str) -> str | None:
        async def get(db: asyncpg.Connection) -> str | None:
            value = await db.fetchval("SELECT value FROM control WHERE key = $1", key)
            return None if value is None else str(value)

        return await self._tx(get)

    async def control_set(self, key: str, value: str, now: float) -> None:
        async def set_(db: asyncpg.Connection) -> None:
            await db.execute(
                "INSERT INTO control (key, value, updated_at) VALUES ($1, $2, $3)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                key,
                value,
                now,
            )

        await self._tx(set_)

    async def control_swap(self, key: str, expected: str, value: str, now: float) -> bool:
        async def swap(db: asyncpg.Connection) -> bool:
            status = await db.execute(
                "UPDATE control SET value = $1, updated_at = $2 WHERE key = $3 AND value = $4",
                value,
                now,
                key,
                expected,
            )
            return count_of(status) == 1

        return await self._tx(swap)
