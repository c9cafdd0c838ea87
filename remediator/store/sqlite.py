"""The default store: one SQLite file, one connection, used from the event loop.

Durability: WAL journal; a write that must survive a power loss (an acknowledged notification, the start of
an action) returns only after an fsync of the WAL, grouped across concurrent writers (store/wal.py). Schema
changes are numbered migrations applied at open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, TypeVar

from remediator.domain.fencing import Fence, current_fence
from remediator.domain.incidents import (
    AuditRecord,
    Incident,
    IncidentStatus,
    OutboxEntry,
    StepRecord,
    StepStatus,
)
from remediator.errors import LeaseLost, StoreDataError, StoreError, StoreUnavailable
from remediator.store.base import (
    Firing,
    FiringResult,
    History,
    IntakeEvent,
    IntakeResult,
    Resolved,
    firing_decision,
    firing_detail,
)
from remediator.store.rows import audit_of, canonical_json, incident_of, outbox_of, step_of, storable
from remediator.store.wal import WalSync, is_io_error

T = TypeVar("T")

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE inbox (
        id INTEGER PRIMARY KEY, received_at REAL NOT NULL, body TEXT NOT NULL, processed_at REAL);
    CREATE INDEX inbox_pending ON inbox(id) WHERE processed_at IS NULL;
    CREATE TABLE incidents (
        id INTEGER PRIMARY KEY, policy TEXT NOT NULL, target TEXT NOT NULL, status TEXT NOT NULL,
        severity TEXT NOT NULL, opened_at REAL NOT NULL, updated_at REAL NOT NULL,
        labels TEXT NOT NULL, annotations TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '');
    CREATE UNIQUE INDEX incidents_one_open ON incidents(policy, target) WHERE status != 'resolved';
    CREATE TABLE incident_alerts (
        incident_id INTEGER NOT NULL REFERENCES incidents(id), fingerprint TEXT NOT NULL,
        starts_at TEXT NOT NULL, status TEXT NOT NULL, PRIMARY KEY (incident_id, fingerprint, starts_at));
    CREATE INDEX incident_alerts_firing ON incident_alerts(fingerprint) WHERE status = 'firing';
    CREATE TABLE steps (
        id INTEGER PRIMARY KEY, incident_id INTEGER NOT NULL REFERENCES incidents(id), idx INTEGER NOT NULL,
        kind TEXT NOT NULL, name TEXT NOT NULL, attempt INTEGER NOT NULL, status TEXT NOT NULL,
        started_at REAL NOT NULL, finished_at REAL, detail TEXT NOT NULL DEFAULT '');
    CREATE INDEX steps_incident ON steps(incident_id);
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY, at REAL NOT NULL, incident_id INTEGER, kind TEXT NOT NULL, detail TEXT NOT NULL);
    CREATE INDEX audit_incident ON audit(incident_id);
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY, incident_id INTEGER NOT NULL, notifier TEXT NOT NULL,
        dedup_key TEXT NOT NULL UNIQUE, payload TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL, error TEXT NOT NULL DEFAULT '', updated_at REAL NOT NULL);
    """,
    """
    CREATE INDEX steps_act_started ON steps(started_at) WHERE kind = 'act';
    CREATE INDEX incidents_key_opened ON incidents(policy, target, opened_at);
    CREATE TABLE breakers (name TEXT PRIMARY KEY, state TEXT NOT NULL, updated_at REAL NOT NULL);
    CREATE TABLE control (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at REAL NOT NULL);
    """,
    """
    ALTER TABLE incidents ADD COLUMN lease_owner TEXT NOT NULL DEFAULT '';
    ALTER TABLE incidents ADD COLUMN lease_until REAL NOT NULL DEFAULT 0;
    CREATE INDEX incidents_active_lease ON incidents(lease_until) WHERE status = 'active';
    """,
    """
    ALTER TABLE outbox ADD COLUMN lease_owner TEXT NOT NULL DEFAULT '';
    ALTER TABLE outbox ADD COLUMN lease_until REAL NOT NULL DEFAULT 0;
    CREATE INDEX outbox_pending_lease ON outbox(lease_until) WHERE status = 'pending';
    """,
    """
    ALTER TABLE incidents ADD COLUMN lease_epoch INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE outbox ADD COLUMN lease_epoch INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE episodes (
        fingerprint TEXT NOT NULL, starts_at TEXT NOT NULL, starts_ts REAL NOT NULL, status TEXT NOT NULL,
        incident_id INTEGER, seen_at REAL NOT NULL, PRIMARY KEY (fingerprint, starts_at));
    CREATE INDEX episodes_by_start ON episodes(fingerprint, starts_ts);
    INSERT OR IGNORE INTO episodes (fingerprint, starts_at, starts_ts, status, incident_id, seen_at)
        SELECT fingerprint, starts_at, 0, status, incident_id, 0 FROM incident_alerts;
    DROP INDEX IF EXISTS incident_alerts_firing;
    CREATE INDEX incident_alerts_episode ON incident_alerts(fingerprint, starts_at) WHERE status = 'firing';
    CREATE INDEX outbox_incident ON outbox(incident_id);
    """,
)


# One process owns a SQLite file; every store object on that file shares one admission lock.
_ADMISSION: dict[Path, asyncio.Lock] = {}


_INSERT_AUDIT = "INSERT INTO audit (at, incident_id, kind, detail) VALUES"
AuditRow = tuple[float, int | None, str, str]


_ROWS_PER_STATEMENT = 200


def _insert_many(db: sqlite3.Connection, insert: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """``insert`` ("INSERT INTO t (a, b) VALUES") for many rows as a few multi-row statements: one SQLite
    call per 200 rows instead of one per row."""
    if not rows:
        return
    one = "(" + ", ".join("?" * len(rows[0])) + ")"
    for start in range(0, len(rows), _ROWS_PER_STATEMENT):
        chunk = rows[start : start + _ROWS_PER_STATEMENT]
        db.execute(f"{insert} {', '.join([one] * len(chunk))}", [v for row in chunk for v in row])


def _audit(
    db: sqlite3.Connection, incident_id: int | None, kind: str, detail: dict[str, Any], now: float
) -> None:
    db.execute(f"{_INSERT_AUDIT} (?, ?, ?, ?)", (now, incident_id, kind, canonical_json(detail)))


def _fenced(db: sqlite3.Connection, incident_id: int | None) -> None:
    """In the transaction of a write concerning ``incident_id``: refuse it when the ladder task making it holds a
    fencing token that is no longer the incident's (docs/safety.md, F1)."""
    fence = current_fence.get()
    if fence is None or incident_id != fence.incident_id:
        return
    held = db.execute(
        "SELECT 1 FROM incidents WHERE id = ? AND lease_owner = ? AND lease_epoch = ?",
        (fence.incident_id, fence.owner, fence.epoch),
    ).fetchone()
    if held is None:
        raise LeaseLost(f"incident {fence.incident_id}: {fence.owner} no longer holds lease {fence.epoch}")


def _close_if_quiet(
    db: sqlite3.Connection, incident_id: int, reason: str, now: float, audits: list[AuditRow]
) -> Incident | None:
    """Resolve the incident when none of its alerts fires any more; the closed incident, or None."""
    if db.execute(
        "SELECT 1 FROM incident_alerts WHERE incident_id = ? AND status = 'firing' LIMIT 1", (incident_id,)
    ).fetchone():
        return None
    row = db.execute(
        "UPDATE incidents SET status = 'resolved', updated_at = ? WHERE id = ? AND status != 'resolved'"
        " RETURNING *",
        (now, incident_id),
    ).fetchone()
    if row is None:
        return None
    audits.append((now, incident_id, "resolved", canonical_json({"reason": reason})))
    return incident_of(row)


def _supersede(
    db: sqlite3.Connection, fingerprint: str, now: float, audits: list[AuditRow]
) -> list[Incident]:
    """A new episode of ``fingerprint`` began: its earlier episodes that still fire have ended (an alert has one
    episode at a time) even though no resolved came for them; their incidents close if nothing else fires."""
    rows = db.execute(
        "UPDATE episodes SET status = 'superseded' WHERE fingerprint = ? AND status = 'firing'"
        " RETURNING starts_at, incident_id",
        (fingerprint,),
    ).fetchall()
    closed: list[Incident] = []
    for row in rows:
        incident_id = row["incident_id"]
        if incident_id is None:
            continue
        db.execute(
            "UPDATE incident_alerts SET status = 'resolved' WHERE incident_id = ? AND fingerprint = ?"
            " AND starts_at = ?",
            (incident_id, fingerprint, row["starts_at"]),
        )
        detail = {"fingerprint": fingerprint, "starts_at": row["starts_at"]}
        audits.append((now, incident_id, "alert_superseded", canonical_json(detail)))
        incident = _close_if_quiet(db, incident_id, "a new episode of its alert began", now, audits)
        if incident is not None:
            closed.append(incident)
    return closed


def _record_firing(
    db: sqlite3.Connection, event: Firing, now: float, owner: str, lease_until: float, audits: list[AuditRow]
) -> FiringResult:
    alert = event.alert
    detail = firing_detail(event)
    seen = db.execute(
        "SELECT status, incident_id FROM episodes WHERE fingerprint = ? AND starts_at = ?",
        (alert.fingerprint, alert.starts_at),
    ).fetchone()
    newer = (
        seen is None
        and db.execute(
            "SELECT 1 FROM episodes WHERE fingerprint = ? AND starts_ts > ? LIMIT 1",
            (alert.fingerprint, alert.starts_ts),
        ).fetchone()
        is not None
    )
    decision = firing_decision(None if seen is None else seen["status"], newer)
    if decision == "stale":
        if seen is None:  # remembered, so that its own resolved (or another copy) is recognised too
            db.execute(
                "INSERT INTO episodes (fingerprint, starts_at, starts_ts, status, incident_id, seen_at)"
                " VALUES (?, ?, ?, 'stale', NULL, ?)",
                (alert.fingerprint, alert.starts_at, alert.starts_ts, now),
            )
        incident_id = None if seen is None else seen["incident_id"]
        audits.append((now, incident_id, "stale_firing", canonical_json(detail)))
        return FiringResult(incident=None, created=False, duplicate=False, stale=True)
    if decision == "duplicate":
        row = db.execute("SELECT * FROM incidents WHERE id = ?", (seen["incident_id"],)).fetchone()
        audits.append((now, row["id"], "duplicate", canonical_json(detail)))
        return FiringResult(incident=incident_of(row), created=False, duplicate=True)
    superseded = _supersede(db, alert.fingerprint, now, audits)
    row = db.execute(
        "SELECT * FROM incidents WHERE policy = ? AND target = ? AND status != 'resolved'",
        (event.policy, event.target),
    ).fetchone()
    created = row is None
    if row is None:
        # A refused target is created escalated: a human owns it, and no ladder can ever be run for it.
        cursor = db.execute(
            "INSERT INTO incidents (policy, target, status, severity, opened_at, updated_at, labels,"
            " annotations, reason, lease_owner, lease_until, lease_epoch)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
            (
                event.policy,
                event.target,
                "escalated" if event.reason else "active",
                alert.severity,
                now,
                now,
                canonical_json(alert.labels),
                canonical_json(alert.annotations),
                event.reason,
                owner,
                lease_until,
            ),
        )
        row = db.execute("SELECT * FROM incidents WHERE id = ?", (cursor.lastrowid,)).fetchone()
    incident_id = row["id"]
    db.execute(
        "INSERT OR REPLACE INTO incident_alerts (incident_id, fingerprint, starts_at, status) VALUES (?, ?, ?, 'firing')",
        (incident_id, alert.fingerprint, alert.starts_at),
    )
    db.execute(
        "INSERT INTO episodes (fingerprint, starts_at, starts_ts, status, incident_id, seen_at)"
        " VALUES (?, ?, ?, 'firing', ?, ?)",
        (alert.fingerprint, alert.starts_at, alert.starts_ts, incident_id, now),
    )
    audits.append((now, incident_id, "opened" if created else "attached", canonical_json(detail)))
    return FiringResult(
        incident=incident_of(row), created=created, duplicate=False, superseded=tuple(superseded)
    )


def _record_resolved(
    db: sqlite3.Connection, event: Resolved, now: float, audits: list[AuditRow]
) -> list[Incident]:
    """Resolve exactly the episode (fingerprint, startsAt) that resolved; remember an unseen one, so that a late
    copy of its firing opens nothing."""
    row = db.execute(
        "SELECT status, incident_id FROM episodes WHERE fingerprint = ? AND starts_at = ?",
        (event.fingerprint, event.starts_at),
    ).fetchone()
    if row is None:
        db.execute(
            "INSERT INTO episodes (fingerprint, starts_at, starts_ts, status, incident_id, seen_at)"
            " VALUES (?, ?, ?, 'resolved', NULL, ?)",
            (event.fingerprint, event.starts_at, event.starts_ts, now),
        )
        return []
    if row["status"] != "firing":
        return []
    db.execute(
        "UPDATE episodes SET status = 'resolved' WHERE fingerprint = ? AND starts_at = ?",
        (event.fingerprint, event.starts_at),
    )
    incident_id = row["incident_id"]
    if incident_id is None:
        return []
    db.execute(
        "UPDATE incident_alerts SET status = 'resolved' WHERE incident_id = ? AND fingerprint = ?"
        " AND starts_at = ?",
        (incident_id, event.fingerprint, event.starts_at),
    )
    detail = {"fingerprint": event.fingerprint, "starts_at": event.starts_at}
    audits.append((now, incident_id, "alert_resolved", canonical_json(detail)))
    closed = _close_if_quiet(db, incident_id, "every alert of the incident resolved", now, audits)
    return [] if closed is None else [closed]


# The disk, not the data: a full or read-only disk, a file another process holds, an I/O error.
_UNAVAILABLE = frozenset(
    {
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_READONLY,
    }
)


def _mapped(exc: sqlite3.Error) -> StoreError:
    """What a failed statement means to the caller: the store is unavailable (retry as long as it lasts), this
    value can never be stored (one connection, one writer: a constraint fails the same way again), or unknown."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code in _UNAVAILABLE:
        return StoreUnavailable(f"sqlite: {exc}")
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError):
        return StoreDataError(f"sqlite cannot store a value: {exc}")
    return StoreError(f"sqlite: {exc}")


class SqliteStore:
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
            raise _mapped(exc) from exc
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
            db = sqlite3.connect(self.path, isolation_level="DEFERRED")
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            # Commits are made durable by WalSync (an fsync of the WAL, grouped), not one by one.
            db.execute("PRAGMA synchronous=NORMAL")
            # WalSync checkpoints from its own thread; this is only the backstop (about 40 MB of WAL).
            db.execute("PRAGMA wal_autocheckpoint=10000")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA busy_timeout=5000")
            version = db.execute("PRAGMA user_version").fetchone()[0]
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
                _insert_many(
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
                    results.append(_record_firing(db, event, now, owner, lease_until, audits))
                elif isinstance(event, Resolved):
                    results.append(_record_resolved(db, event, now, audits))
                else:
                    audits.append((now, None, event.kind, canonical_json(event.detail)))
                    results.append(None)
            _insert_many(db, _INSERT_AUDIT, audits)
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
            _fenced(db, incident_id)
            db.execute(
                "UPDATE incidents SET status = ?, reason = ?, updated_at = ? WHERE id = ? AND status != 'resolved'",
                (status, reason, now, incident_id),
            )
            _audit(db, incident_id, status, {"reason": reason}, now)

        await self._run(update)

    # -- steps and audit ----------------------------------------------------------------------------------

    async def step_started(
        self, incident_id: int, index: int, kind: str, name: str, attempt: int, now: float
    ) -> int:
        def start(db: sqlite3.Connection) -> int:
            _fenced(db, incident_id)
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
            _fenced(db, None if row is None else row["incident_id"])
            db.execute(
                "UPDATE steps SET status = ?, detail = ?, finished_at = ? WHERE id = ?",
                (status, detail, now, step_id),
            )

        await self._run(finish)

    async def audit(self, incident_id: int | None, kind: str, detail: dict[str, Any], now: float) -> None:
        def write(db: sqlite3.Connection) -> None:
            _fenced(db, incident_id)
            _audit(db, incident_id, kind, detail, now)

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
        self, owner: str, now: float, lease_until: float, limit: int = 100, running: Sequence[int] = ()
    ) -> list[Incident]:
        def claim(db: sqlite3.Connection) -> list[Incident]:
            rows = db.execute(
                "UPDATE incidents SET lease_owner = ?, lease_until = ?, lease_epoch = lease_epoch + 1"
                " WHERE id IN (SELECT id FROM incidents WHERE status = 'active'"
                " AND (lease_until < ? OR lease_owner = ?) AND id NOT IN (SELECT value FROM json_each(?))"
                " ORDER BY id LIMIT ?) RETURNING *",
                (owner, lease_until, now, owner, json.dumps(list(running)), limit),
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
    ) -> History:
        def read(db: sqlite3.Connection) -> History:
            target_actions = db.execute(
                "SELECT count(*) FROM steps s JOIN incidents i ON i.id = s.incident_id"
                " WHERE s.kind = 'act' AND s.started_at >= ? AND i.target = ?",
                (since_target, target),
            ).fetchone()[0]
            all_actions = db.execute(
                "SELECT count(*) FROM steps WHERE kind = 'act' AND started_at >= ?", (since_budget,)
            ).fetchone()[0]
            last = db.execute(
                "SELECT max(coalesce(s.finished_at, s.started_at)) FROM steps s JOIN incidents i ON i.id = s.incident_id"
                " WHERE s.kind = 'act' AND i.policy = ? AND i.target = ? AND i.id != ?",
                (policy, target, incident_id),
            ).fetchone()[0]
            opened = db.execute(
                "SELECT count(*) FROM incidents WHERE policy = ? AND target = ? AND opened_at >= ?",
                (policy, target, since_flap),
            ).fetchone()[0]
            return History(target_actions, all_actions, last, opened)

        return await self._run(read, synced=False)

    async def breakers_load(self, names: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        def load(db: sqlite3.Connection) -> dict[str, dict[str, Any]]:
            if names is None:
                rows = db.execute("SELECT name, state FROM breakers")
            else:
                rows = db.execute(
                    "SELECT name, state FROM breakers WHERE name IN (SELECT value FROM json_each(?))",
                    (json.dumps(list(names)),),
                )
            return {r["name"]: json.loads(r["state"]) for r in rows}

        return await self._run(load, synced=False)

    async def breaker_save(self, name: str, state: dict[str, Any] | None, now: float) -> None:
        def save(db: sqlite3.Connection) -> None:
            if state is None:
                db.execute("DELETE FROM breakers WHERE name = ?", (name,))
                return
            db.execute(
                "INSERT INTO breakers (name, state, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                (name, json.dumps(state), now),
            )

        await self._run(save)

    async def control_get(self, key: str) -> str | None:
        def get(db: sqlite3.Connection) -> str | None:
            row = db.execute("SELECT value FROM control WHERE key = ?", (key,)).fetchone()
            return None if row is None else str(row["value"])

        return await self._run(get, synced=False)

    async def control_set(self, key: str, value: str, now: float) -> None:
        await self._run(
            lambda db: db.execute(
                "INSERT INTO control (key, value, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                (key, value, now),
            )
        )

    # -- escalation outbox --------------------------------------------------------------------------------

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
            _fenced(db, incident_id)
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
