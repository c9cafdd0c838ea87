"""The default store: one SQLite file, one connection, used from the event loop.

Durability: WAL journal; a write that must survive a power loss (an acknowledged notification, the start of
an action) returns only after an fsync of the WAL, grouped across concurrent writers (wal.py). Schema
changes are numbered migrations applied at open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import sqlite3
import stat
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, TypeVar

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
from remediator.store.rows import (
    audit_of,
    canonical_json,
    incident_of,
    newer_schema,
    step_of,
    storable,
)
from remediator.store.sqlite import maintenance
from remediator.store.sqlite.control import SqliteControl
from remediator.store.sqlite.errors import mapped
from remediator.store.sqlite.intake import (
    INSERT_AUDIT,
    AuditRow,
    fenced,
    insert_many,
    record_firing,
    record_resolved,
    write_audit,
)
from remediator.store.sqlite.outbox import SqliteOutbox
from remediator.store.sqlite.retention import CLOCK_SLACK_S, SqliteRetention, old_prefix_end
from remediator.store.sqlite.schema import MIGRATIONS
from remediator.store.sqlite.wal import WalSync, is_io_error

T = TypeVar("T")


_OUTCOMES = outcomes_sql("json_extract(a.detail, '$.reason')", "group_concat({}, ',')", "?", "?")
"""Store.incident_outcomes in SQLite."""

# One process owns a SQLite file; every store object on that file shares one admission lock.
_ADMISSION: dict[Path, asyncio.Lock] = {}


def owner_only(path: Path) -> None:
    """Create the store's file readable and writable by its owner only (0600), or make an older one so. It
    holds webhook bodies, alert labels and escalation payloads. SQLite gives the -wal and -shm files it creates
    the database file's mode, so they follow; existing ones are tightened here too."""
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            if stat.S_IMODE(file.stat().st_mode) & 0o077:
                os.chmod(file, 0o600)


class SqliteStore(SqliteOutbox, SqliteControl, SqliteRetention):
    """The Store protocol on one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._wal = WalSync(path)
        self._inbox_batch: list[tuple[str, float, asyncio.Future[int]]] = []
        self._inbox_flusher: asyncio.Task[None] | None = None
        self._admission = _ADMISSION.setdefault(path.resolve(), asyncio.Lock())
        self._closed = False

    async def _run(self, fn: Callable[[sqlite3.Connection], T], synced: bool = True) -> T:
        """Run ``fn`` in one transaction, on the loop (docs/design.md, D15). ``synced=True`` returns once
        the commit is on disk; ``synced=False`` once it is written (it survives a crash of the process, and the
        next sync makes it durable): only for what can be rebuilt from synced rows after a power loss."""
        # Reads pass synced=False: they need no flush of the WAL, and waiting for one (meant for a durable
        # write made elsewhere) would only delay them.
        db = self._db
        if db is None or self._closed:
            raise StoreUnavailable("store is not open")
        self._wal.check()
        try:
            with db:  # one transaction: commit on success, roll back on error
                result = fn(db)
        except sqlite3.Error as exc:
            if is_io_error(exc):  # SQLite's own writes and syncs (a WAL restart, a checkpoint) count too
                self._wal.fail(f"sqlite: {exc}")
            raise mapped(exc) from exc
        except (OverflowError, UnicodeError) as exc:
            # A value SQLite cannot bind (an integer over 64 bits, a lone surrogate): this call can never
            # succeed, and must not look like an outage that is worth retrying.
            raise StoreDataError(f"sqlite cannot store a value: {exc}") from exc
        self._wal.commits += 1
        if synced:
            await self._wal.sync()
        return result

    async def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            owner_only(self.path)
            db = sqlite3.connect(self.path, isolation_level="DEFERRED")
            db.row_factory = sqlite3.Row
            # Only takes on a new, empty file: freed pages can then be given back (retention.py, reclaim).
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            db.execute("PRAGMA journal_mode=WAL")
            # Commits are made durable by WalSync (an fsync of the WAL, grouped), not one by one.
            db.execute("PRAGMA synchronous=NORMAL")
            # WalSync checkpoints from its own thread; this is only the backstop (about 40 MB of WAL).
            db.execute("PRAGMA wal_autocheckpoint=10000")
            # A WAL that a burst grew is cut back to this (32 MiB) when it is next reused, so it stays bounded.
            db.execute("PRAGMA journal_size_limit=33554432")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA busy_timeout=5000")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                db.close()
                raise ConfigError(newer_schema(str(self.path), version, len(MIGRATIONS)))
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                db.executescript(f"BEGIN; {script}; PRAGMA user_version={number}; COMMIT;")
            self._db = db
            self._wal.open()
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from exc
        # Migrations, the WAL file and its directory entry: on disk before the first answer.
        await self._wal.sync()

    async def close(self) -> None:
        if self._closed:
            return
        if self._inbox_flusher is not None:
            with contextlib.suppress(StoreError):
                await self._inbox_flusher
        self._closed = True  # from here on no commit could be synced any more
        await self._wal.close()
        if self._db is not None:
            self._db.close()  # the last connection: SQLite checkpoints and removes the WAL
            self._db = None

    # -- inbox --------------------------------------------------------------------------------------------

    async def inbox_put(self, body: str, now: float) -> int:
        """Stored and synced before it returns. Concurrent calls share one transaction (group commit), so a
        burst costs one fsync per batch, not one per request."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._inbox_batch.append((body, now, future))
        if self._inbox_flusher is None or self._inbox_flusher.done():
            self._inbox_flusher = asyncio.create_task(self._flush_inbox(), name="sqlite-inbox-flush")
        return await future

    async def _flush_inbox(self) -> None:
        while self._inbox_batch:
            batch, self._inbox_batch = self._inbox_batch, []

            def put(
                db: sqlite3.Connection, rows: list[tuple[str, float, asyncio.Future[int]]] = batch
            ) -> list[int]:
                # Ids chosen here (this connection is the file's only writer, inside one transaction) so the
                # whole batch is one statement.
                first = int(db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM inbox").fetchone()[0])
                ids = list(range(first, first + len(rows)))
                insert_many(
                    db,
                    "INSERT INTO inbox (id, received_at, body) VALUES",
                    [(i, now, body) for i, (body, now, _) in zip(ids, rows, strict=True)],
                )
                return ids

            try:
                ids = await self._run(put)
            except StoreError as exc:
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, _, future), inbox_id in zip(batch, ids, strict=True):
                if not future.done():
                    future.set_result(inbox_id)

    async def inbox_pending(self, received_before: float | None = None) -> list[tuple[int, str]]:
        def pending(db: sqlite3.Connection) -> list[tuple[int, str]]:
            rows = db.execute(
                "SELECT id, body FROM inbox WHERE processed_at IS NULL AND (? IS NULL OR received_at < ?)"
                " ORDER BY id LIMIT 10000",
                (received_before, received_before),
            ).fetchall()
            return [(row["id"], row["body"]) for row in rows]

        return await self._run(pending, synced=False)

    async def inbox_received(
        self, since: float, until: float, limit: int = 100_000
    ) -> list[tuple[float, str]]:
        def received(db: sqlite3.Connection) -> list[tuple[float, str]]:
            # The inbox has no index on its time: the ids of the range are found by it (retention.py), with an
            # hour's slack either side for a clock that was stepped meanwhile; each row's time is still tested.
            first = old_prefix_end(db, "inbox", "received_at", since - CLOCK_SLACK_S)
            end = old_prefix_end(db, "inbox", "received_at", math.nextafter(until + CLOCK_SLACK_S, math.inf))
            rows = db.execute(
                "SELECT received_at, body FROM inbox WHERE id >= ? AND id < ? AND received_at >= ?"
                " AND received_at <= ? ORDER BY id LIMIT ?",
                (first, end, since, until, limit),
            ).fetchall()
            return [(row["received_at"], row["body"]) for row in rows]

        return await self._run(received, synced=False)

    # -- incidents ----------------------------------------------------------------------------------------

    async def record_intake(
        self,
        events: Sequence[IntakeEvent],
        inbox_ids: Sequence[int],
        now: float,
        owner: str,
        lease_until: float,
    ) -> list[IntakeResult]:
        def record(db: sqlite3.Connection) -> list[IntakeResult]:
            results: list[IntakeResult] = []
            # Audit rows are written together at the end (same transaction, same order): a few statements
            # instead of one per alert.
            audits: list[AuditRow] = []
            for event in events:
                if isinstance(event, Firing):
                    results.append(record_firing(db, event, now, owner, lease_until, audits))
                elif isinstance(event, Resolved):
                    results.append(record_resolved(db, event, now, audits))
                else:
                    audits.append((now, None, event.kind, canonical_json(event.detail)))
                    results.append(None)
            insert_many(db, INSERT_AUDIT, audits)
            db.execute(
                "UPDATE inbox SET processed_at = ? WHERE id IN (SELECT value FROM json_each(?))",
                (now, json.dumps(list(inbox_ids))),
            )
            return results

        # Not synced: after a power loss the inbox rows (synced before their 200) are still unprocessed and
        # intake replays them; what an action needs durably (its start) is written synced, before it runs.
        return await self._run(record, synced=False)

    async def set_status(self, incident_id: int, status: IncidentStatus, reason: str, now: float) -> None:
        reason = storable(reason)

        def update(db: sqlite3.Connection) -> None:
            fenced(db, incident_id)
            db.execute(
                "UPDATE incidents SET status = ?, reason = ?, updated_at = ? WHERE id = ? AND status != 'resolved'",
                (status, reason, now, incident_id),
            )
            write_audit(db, incident_id, status, {"reason": reason}, now)

        await self._run(update)

    # -- steps and audit ----------------------------------------------------------------------------------

    async def step_started(
        self, incident_id: int, index: int, kind: str, name: str, attempt: int, now: float
    ) -> int:
        def start(db: sqlite3.Connection) -> int:
            fenced(db, incident_id)
            cursor = db.execute(
                "INSERT INTO steps (incident_id, idx, kind, name, attempt, status, started_at)"
                " VALUES (?, ?, ?, ?, ?, 'started', ?)",
                (incident_id, index, kind, name, attempt, now),
            )
            return int(cursor.lastrowid or 0)

        return await self._run(start)

    async def step_finished(self, step_id: int, status: StepStatus, detail: str, now: float) -> None:
        detail = storable(detail)

        def finish(db: sqlite3.Connection) -> None:
            row = db.execute("SELECT incident_id FROM steps WHERE id = ?", (step_id,)).fetchone()
            fenced(db, None if row is None else row["incident_id"])
            db.execute(
                "UPDATE steps SET status = ?, detail = ?, finished_at = ? WHERE id = ?",
                (status, detail, now, step_id),
            )

        await self._run(finish)

    async def audit(self, incident_id: int | None, kind: str, detail: dict[str, Any], now: float) -> None:
        def write(db: sqlite3.Connection) -> None:
            fenced(db, incident_id)
            write_audit(db, incident_id, kind, detail, now)

        await self._run(write)

    # -- reads --------------------------------------------------------------------------------------------

    async def get_incident(self, incident_id: int) -> Incident | None:
        def get(db: sqlite3.Connection) -> Incident | None:
            row = db.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchone()
            return None if row is None else incident_of(row)

        return await self._run(get, synced=False)

    async def list_incidents(self, status: IncidentStatus | None = None, limit: int = 100) -> list[Incident]:
        def list_(db: sqlite3.Connection) -> list[Incident]:
            if status is None:
                rows = db.execute("SELECT * FROM incidents ORDER BY id DESC LIMIT ?", (limit,))
            else:
                rows = db.execute(
                    "SELECT * FROM incidents WHERE status = ? ORDER BY id DESC LIMIT ?",
                    (status, limit),
                )
            return [incident_of(row) for row in rows]

        return await self._run(list_, synced=False)

    async def open_incidents(self) -> list[Incident]:
        def open_(db: sqlite3.Connection) -> list[Incident]:
            rows = db.execute("SELECT * FROM incidents WHERE status != 'resolved' ORDER BY id")
            return [incident_of(row) for row in rows]

        return await self._run(open_, synced=False)

    async def steps(self, incident_id: int) -> list[StepRecord]:
        def steps(db: sqlite3.Connection) -> list[StepRecord]:
            rows = db.execute("SELECT * FROM steps WHERE incident_id = ? ORDER BY id", (incident_id,))
            return [step_of(r) for r in rows]

        return await self._run(steps, synced=False)

    async def incident_outcomes(
        self, before_id: int | None = None, limit: int = 500
    ) -> list[IncidentOutcome]:
        before = 2**63 - 1 if before_id is None else before_id

        def page(db: sqlite3.Connection) -> list[IncidentOutcome]:
            return [outcome_of(r) for r in db.execute(_OUTCOMES, (before, limit))]

        return await self._run(page, synced=False)

    async def audit_trail(
        self, incident_id: int | None = None, limit: int = 1000, kinds: Sequence[str] | None = None
    ) -> list[AuditRecord]:
        only = None if kinds is None else json.dumps(list(kinds))

        def trail(db: sqlite3.Connection) -> list[AuditRecord]:
            if incident_id is None:
                rows = db.execute(
                    "SELECT * FROM audit WHERE (? IS NULL OR kind IN (SELECT value FROM json_each(?)))"
                    " ORDER BY id DESC LIMIT ?",
                    (only, only, limit),
                ).fetchall()[::-1]
            else:
                rows = db.execute(
                    "SELECT * FROM audit WHERE incident_id = ? AND (? IS NULL OR kind IN (SELECT value FROM json_each(?)))"
                    " ORDER BY id LIMIT ?",
                    (incident_id, only, only, limit),
                ).fetchall()
            return [audit_of(r) for r in rows]

        return await self._run(trail, synced=False)

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
        def claim(db: sqlite3.Connection) -> list[Incident]:
            rows = db.execute(
                "UPDATE incidents SET lease_owner = ?, lease_until = ?, lease_epoch = lease_epoch + 1"
                " WHERE id IN (SELECT id FROM incidents WHERE status = 'active'"
                " AND (lease_until < ? OR (? AND lease_owner = ?)) AND id NOT IN (SELECT value FROM json_each(?))"
                " ORDER BY id LIMIT ?) RETURNING *",
                (owner, lease_until, now, reclaim_own, owner, json.dumps(list(running)), limit),
            ).fetchall()
            return sorted((incident_of(r) for r in rows), key=lambda i: i.id)

        return await self._run(claim)

    async def renew_leases(
        self, owner: str, held: Sequence[tuple[int, int]], lease_until: float
    ) -> list[int]:
        def renew(db: sqlite3.Connection) -> list[int]:
            kept = []
            for incident_id, epoch in held:
                row = db.execute(
                    "UPDATE incidents SET lease_until = max(lease_until, ?) WHERE id = ? AND lease_owner = ?"
                    " AND lease_epoch = ? RETURNING id",
                    (lease_until, incident_id, owner, epoch),
                ).fetchone()
                if row is not None:
                    kept.append(int(row["id"]))
            return kept

        return await self._run(renew, synced=False)

    async def lease_confirm(self, fence: Fence, now: float, until: float) -> None:
        def confirm(db: sqlite3.Connection) -> bool:
            row = db.execute(
                "UPDATE incidents SET lease_until = max(lease_until, ?) WHERE id = ? AND lease_owner = ?"
                " AND lease_epoch = ? AND status = 'active' RETURNING id",
                (until, fence.incident_id, fence.owner, fence.epoch),
            ).fetchone()
            return row is not None

        # Not synced: the grant it checks was; after a power loss the lease is claimed again anyway.
        if not await self._run(confirm, synced=False):
            raise LeaseLost(
                f"incident {fence.incident_id}: {fence.owner} no longer holds lease {fence.epoch}"
            )

    async def release_leases(self, owner: str, incident_ids: Sequence[int]) -> None:
        await self._run(
            lambda db: db.executemany(
                "UPDATE incidents SET lease_until = 0 WHERE id = ? AND lease_owner = ?",
                [(i, owner) for i in incident_ids],
            )
        )

    def admission(self) -> AbstractAsyncContextManager[None]:
        return self._admission

    # -- guards ---------------------------------------------------------------------------------------------

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
        def read(db: sqlite3.Connection) -> History:
            target_actions = db.execute(
                "SELECT count(*) FROM steps s JOIN incidents i ON i.id = s.incident_id"
                " WHERE s.kind = 'act' AND s.started_at >= ? AND i.target = ? AND i.host = ?",
                (since_target, target, host),
            ).fetchone()[0]
            all_actions = db.execute(
                "SELECT count(*) FROM steps WHERE kind = 'act' AND started_at >= ?", (since_budget,)
            ).fetchone()[0]
            last = db.execute(
                # From the recent actions to their incidents, never the other way round: SQLite would otherwise
                # walk every earlier incident of the target, however old (bench/flat_cost.py).
                "SELECT max(coalesce(s.finished_at, s.started_at)) FROM steps s INDEXED BY steps_act_started"
                " JOIN incidents i ON i.id = s.incident_id"
                " WHERE s.kind = 'act' AND s.started_at >= ? AND i.policy = ? AND i.target = ? AND i.host = ?"
                " AND i.id != ? AND coalesce(s.finished_at, s.started_at) >= ?",
                (since_cooldown - LONGEST_ACTION_S, policy, target, host, incident_id, since_cooldown),
            ).fetchone()[0]
            opened = db.execute(
                "SELECT count(*) FROM incidents WHERE policy = ? AND host = ? AND target = ? AND opened_at >= ?",
                (policy, host, target, since_flap),
            ).fetchone()[0]
            return History(target_actions, all_actions, last, opened)

        return await self._run(read, synced=False)

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
        values = (storable(target), storable(host), storable(policy), storable(reason), storable(by))

        def add(db: sqlite3.Connection) -> MaintenanceWindow:
            t, h, p, r, b = values
            return maintenance.add(db, t, h, p, starts_at, ends_at, r, b, now)

        return await self._run(add)

    async def maintenance_windows(self, since: float) -> list[MaintenanceWindow]:
        return await self._run(lambda db: maintenance.listed(db, since), synced=False)

    async def maintenance_cancel(self, window_id: int, by: str, now: float) -> MaintenanceWindow | None:
        by = storable(by)
        return await self._run(lambda db: maintenance.cancel(db, window_id, by, now))

    async def maintenance_pass(
        self, owner: str, now: float, lease_until: float, running: Sequence[int] = ()
    ) -> MaintenanceChanges:
        return await self._run(lambda db: maintenance.run_pass(db, owner, now, lease_until, running))
