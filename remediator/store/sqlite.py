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
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, TypeVar

from remediator.domain.incidents import (
    AuditRecord,
    Incident,
    IncidentStatus,
    OutboxEntry,
    StepRecord,
    StepStatus,
)
from remediator.errors import StoreError
from remediator.store.base import Firing, FiringResult, History, IntakeEvent, IntakeResult, Resolved
from remediator.store.rows import audit_of, canonical_json, incident_of, outbox_of, step_of
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


def _record_firing(
    db: sqlite3.Connection, event: Firing, now: float, owner: str, lease_until: float, audits: list[AuditRow]
) -> FiringResult:
    alert = event.alert
    row = db.execute(
        "SELECT * FROM incidents WHERE policy = ? AND target = ? AND status != 'resolved'",
        (event.policy, event.target),
    ).fetchone()
    created = row is None
    if row is None:
        cursor = db.execute(
            "INSERT INTO incidents (policy, target, status, severity, opened_at, updated_at, labels,"
            " annotations, reason, lease_owner, lease_until) VALUES (?, ?, 'active', ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event.policy,
                event.target,
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
    inserted = db.execute(
        "INSERT OR IGNORE INTO incident_alerts (incident_id, fingerprint, starts_at, status) VALUES (?, ?, ?, 'firing')",
        (incident_id, alert.fingerprint, alert.starts_at),
    ).rowcount
    duplicate = not created and inserted == 0
    kind = "opened" if created else ("duplicate" if duplicate else "attached")
    detail = {
        "fingerprint": alert.fingerprint,
        "starts_at": alert.starts_at,
        "alertname": alert.labels.get("alertname", ""),
        "policy": event.policy,
        "inbox_id": event.inbox_id,
    }
    audits.append((now, incident_id, kind, canonical_json(detail)))
    return FiringResult(incident=incident_of(row), created=created, duplicate=duplicate)


def _record_resolved(
    db: sqlite3.Connection, fingerprint: str, now: float, audits: list[AuditRow]
) -> list[Incident]:
    ids = [
        row["incident_id"]
        for row in db.execute(
            "SELECT DISTINCT incident_id FROM incident_alerts WHERE fingerprint = ? AND status = 'firing'",
            (fingerprint,),
        )
    ]
    closed: list[Incident] = []
    for incident_id in ids:
        db.execute(
            "UPDATE incident_alerts SET status = 'resolved' WHERE incident_id = ? AND fingerprint = ?"
            " AND status = 'firing'",
            (incident_id, fingerprint),
        )
        audits.append((now, incident_id, "alert_resolved", canonical_json({"fingerprint": fingerprint})))
        still_firing = db.execute(
            "SELECT 1 FROM incident_alerts WHERE incident_id = ? AND status = 'firing' LIMIT 1",
            (incident_id,),
        ).fetchone()
        if still_firing is None:
            db.execute(
                "UPDATE incidents SET status = 'resolved', updated_at = ? WHERE id = ? AND status != 'resolved'",
                (now, incident_id),
            )
            reason = {"reason": "every alert of the incident resolved"}
            audits.append((now, incident_id, "resolved", canonical_json(reason)))
            closed.append(
                incident_of(db.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchone())
            )
    return closed


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
        """Run ``fn`` in one transaction, on the loop (design note 15 in README.md). ``synced=True`` returns once
        the commit is on disk; ``synced=False`` once it is written (it survives a crash of the process, and the
        next sync makes it durable): only for what can be rebuilt from synced rows after a power loss."""
        db = self._db
        if db is None or self._closed:
            raise StoreError("store is not open")
        self._wal.check()
        try:
            with db:  # one transaction: commit on success, roll back on error
                result = fn(db)
        except sqlite3.Error as exc:
            if is_io_error(exc):  # SQLite's own writes and syncs (a WAL restart, a checkpoint) count too
                self._wal.fail(f"sqlite: {exc}")
            raise StoreError(f"sqlite: {exc}") from exc
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

    async def inbox_pending(self) -> list[tuple[int, str]]:
        def pending(db: sqlite3.Connection) -> list[tuple[int, str]]:
            rows = db.execute("SELECT id, body FROM inbox WHERE processed_at IS NULL ORDER BY id").fetchall()
            return [(row["id"], row["body"]) for row in rows]

        return await self._run(pending)

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
                    results.append(_record_resolved(db, event.fingerprint, now, audits))
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
        def update(db: sqlite3.Connection) -> None:
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
            cursor = db.execute(
                "INSERT INTO steps (incident_id, idx, kind, name, attempt, status, started_at)"
                " VALUES (?, ?, ?, ?, ?, 'started', ?)",
                (incident_id, index, kind, name, attempt, now),
            )
            return int(cursor.lastrowid or 0)

        return await self._run(start)

    async def step_finished(self, step_id: int, status: StepStatus, detail: str, now: float) -> None:
        await self._run(
            lambda db: db.execute(
                "UPDATE steps SET status = ?, detail = ?, finished_at = ? WHERE id = ?",
                (status, detail, now, step_id),
            )
        )

    async def audit(self, incident_id: int | None, kind: str, detail: dict[str, Any], now: float) -> None:
        await self._run(lambda db: _audit(db, incident_id, kind, detail, now))

    # -- reads --------------------------------------------------------------------------------------------

    async def get_incident(self, incident_id: int) -> Incident | None:
        def get(db: sqlite3.Connection) -> Incident | None:
            row = db.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchone()
            return None if row is None else incident_of(row)

        return await self._run(get)

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

        return await self._run(list_)

    async def open_incidents(self) -> list[Incident]:
        def open_(db: sqlite3.Connection) -> list[Incident]:
            rows = db.execute("SELECT * FROM incidents WHERE status != 'resolved' ORDER BY id")
            return [incident_of(row) for row in rows]

        return await self._run(open_)

    async def steps(self, incident_id: int) -> list[StepRecord]:
        def steps(db: sqlite3.Connection) -> list[StepRecord]:
            rows = db.execute("SELECT * FROM steps WHERE incident_id = ? ORDER BY id", (incident_id,))
            return [step_of(r) for r in rows]

        return await self._run(steps)

    async def audit_trail(self, incident_id: int | None = None, limit: int = 1000) -> list[AuditRecord]:
        def trail(db: sqlite3.Connection) -> list[AuditRecord]:
            if incident_id is None:
                rows = db.execute("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,)).fetchall()[::-1]
            else:
                rows = db.execute(
                    "SELECT * FROM audit WHERE incident_id = ? ORDER BY id LIMIT ?", (incident_id, limit)
                ).fetchall()
            return [audit_of(r) for r in rows]

        return await self._run(trail)

    # -- leases -------------------------------------------------------------------------------------------

    async def claim_expired(
        self, owner: str, now: float, lease_until: float, limit: int = 100
    ) -> list[Incident]:
        def claim(db: sqlite3.Connection) -> list[Incident]:
            rows = db.execute(
                "UPDATE incidents SET lease_owner = ?, lease_until = ? WHERE id IN (SELECT id FROM incidents"
                " WHERE status = 'active' AND (lease_until < ? OR lease_owner = ?) ORDER BY id LIMIT ?) RETURNING *",
                (owner, lease_until, now, owner, limit),
            ).fetchall()
            return sorted((incident_of(r) for r in rows), key=lambda i: i.id)

        return await self._run(claim)

    async def renew_leases(self, owner: str, incident_ids: Sequence[int], lease_until: float) -> list[int]:
        def renew(db: sqlite3.Connection) -> list[int]:
            held = []
            for incident_id in incident_ids:
                row = db.execute(
                    "UPDATE incidents SET lease_until = ? WHERE id = ? AND lease_owner = ? RETURNING id",
                    (lease_until, incident_id, owner),
                ).fetchone()
                if row is not None:
                    held.append(int(row["id"]))
            return held

        return await self._run(renew)

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

        return await self._run(read)

    async def breakers_load(self) -> dict[str, dict[str, Any]]:
        def load(db: sqlite3.Connection) -> dict[str, dict[str, Any]]:
            return {r["name"]: json.loads(r["state"]) for r in db.execute("SELECT name, state FROM breakers")}

        return await self._run(load)

    async def breaker_save(self, name: str, state: dict[str, Any], now: float) -> None:
        await self._run(
            lambda db: db.execute(
                "INSERT INTO breakers (name, state, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                (name, json.dumps(state), now),
            )
        )

    async def control_get(self, key: str) -> str | None:
        def get(db: sqlite3.Connection) -> str | None:
            row = db.execute("SELECT value FROM control WHERE key = ?", (key,)).fetchone()
            return None if row is None else str(row["value"])

        return await self._run(get)

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
        payload: dict[str, Any],
        now: float,
        owner: str,
        lease_until: float,
    ) -> OutboxEntry:
        def put(db: sqlite3.Connection) -> OutboxEntry:
            db.execute(
                "INSERT INTO outbox (incident_id, notifier, dedup_key, payload, status, updated_at, lease_owner,"
                " lease_until) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?) ON CONFLICT (dedup_key) DO UPDATE SET"
                " lease_owner = excluded.lease_owner, lease_until = excluded.lease_until"
                " WHERE status = 'pending' AND (lease_owner = excluded.lease_owner OR lease_until < ?)",
                (incident_id, notifier, dedup_key, canonical_json(payload), now, owner, lease_until, now),
            )
            return outbox_of(db.execute("SELECT * FROM outbox WHERE dedup_key = ?", (dedup_key,)).fetchone())

        return await self._run(put)

    async def outbox_pending(self) -> list[OutboxEntry]:
        def pending(db: sqlite3.Connection) -> list[OutboxEntry]:
            return [
                outbox_of(r) for r in db.execute("SELECT * FROM outbox WHERE status = 'pending' ORDER BY id")
            ]

        return await self._run(pending, synced=False)

    async def outbox_claim(self, owner: str, now: float, lease_until: float) -> list[OutboxEntry]:
        def claim_entries(db: sqlite3.Connection) -> list[OutboxEntry]:
            rows = db.execute(
                "UPDATE outbox SET lease_owner = ?, lease_until = ?"
                " WHERE status = 'pending' AND (lease_owner = ? OR lease_until < ?) RETURNING *",
                (owner, lease_until, owner, now),
            ).fetchall()
            return sorted((outbox_of(r) for r in rows), key=lambda e: e.id)

        return await self._run(claim_entries)

    async def outbox_renew(self, owner: str, entry_ids: Sequence[int], lease_until: float) -> list[int]:
        def renew_entries(db: sqlite3.Connection) -> list[int]:
            rows = db.execute(
                "UPDATE outbox SET lease_until = ? WHERE lease_owner = ? AND id IN (SELECT value FROM json_each(?))"
                " RETURNING id",
                (lease_until, owner, json.dumps(list(entry_ids))),
            ).fetchall()
            return [r["id"] for r in rows]

        return await self._run(renew_entries, synced=False)

    async def outbox_release(self, owner: str, entry_ids: Sequence[int]) -> None:
        await self._run(
            lambda db: db.execute(
                "UPDATE outbox SET lease_until = 0 WHERE lease_owner = ? AND id IN (SELECT value FROM json_each(?))",
                (owner, json.dumps(list(entry_ids))),
            )
        )

    async def outbox_update(self, entry_id: int, status: str, attempts: int, error: str, now: float) -> None:
        await self._run(
            lambda db: db.execute(
                "UPDATE outbox SET status = ?, attempts = ?, error = ?, updated_at = ? WHERE id = ?",
                (status, attempts, error, now, entry_id),
            )
        )
