"""Maintenance windows in PostgreSQL: stored windows, the windows intake reads for a firing, and the pass that
holds and releases incidents as windows begin and end. Which window holds what is decided by
``domain/maintenance.py: covering``, as in SQLite; only the SQL differs. The pass takes the advisory locks of
the incident keys it changes, the same ones intake takes, so a window's end and an alert of the same incident
are decided one after the other, and each incident changes for exactly one replica."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import asyncpg

from remediator.domain.incidents import Incident
from remediator.domain.maintenance import MaintenanceWindow, covering
from remediator.store.base import MaintenanceChanges
from remediator.store.postgres.schema import key_lock
from remediator.store.rows import canonical_json, incident_of, window_of

RESOLVED_IN_MAINTENANCE = "its alerts resolved during maintenance"


async def write_audit(
    db: asyncpg.Connection, incident_id: int | None, kind: str, detail: Mapping[str, object], now: float
) -> None:
    await db.execute(
        "INSERT INTO audit (at, incident_id, kind, detail) VALUES ($1, $2, $3, $4)",
        now,
        incident_id,
        kind,
        canonical_json(detail),
    )


async def in_force(db: asyncpg.Connection, now: float, target: str | None = None) -> list[MaintenanceWindow]:
    """The windows in force at ``now`` (only those on ``target``, when given)."""
    if target is None:
        rows = await db.fetch(
            "SELECT * FROM maintenance WHERE cancelled_at IS NULL AND starts_at <= $1 AND ends_at > $1"
            " ORDER BY id",
            now,
        )
    else:
        rows = await db.fetch(
            "SELECT * FROM maintenance WHERE target = $2 AND cancelled_at IS NULL AND starts_at <= $1"
            " AND ends_at > $1 ORDER BY id",
            now,
            target,
        )
    return [window_of(r) for r in rows]


async def hold(
    db: asyncpg.Connection, incident_id: int, window: MaintenanceWindow, now: float
) -> asyncpg.Record:
    """Move an active or waiting incident to ``maintenance``; its lease is taken away with a new epoch, so a
    ladder still running for it can neither write nor call a backend again (docs/safety.md, F1, F2)."""
    row = await db.fetchrow(
        "UPDATE incidents SET status = 'maintenance', reason = $1, updated_at = $2, lease_owner = '',"
        " lease_until = 0, lease_epoch = lease_epoch + 1 WHERE id = $3 RETURNING *",
        window.held_reason,
        now,
        incident_id,
    )
    assert row is not None
    return row


async def add(
    db: asyncpg.Connection,
    target: str,
    host: str,
    policy: str,
    starts_at: float,
    ends_at: float,
    reason: str,
    by: str,
    now: float,
) -> MaintenanceWindow:
    row = await db.fetchrow(
        "INSERT INTO maintenance (target, host, policy, starts_at, ends_at, reason, created_by, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
        target,
        host,
        policy,
        starts_at,
        ends_at,
        reason,
        by,
        now,
    )
    assert row is not None
    window = window_of(row)
    await write_audit(db, None, "maintenance_added", window.record_detail(), now)
    return window


async def listed(db: asyncpg.Connection, since: float) -> list[MaintenanceWindow]:
    rows = await db.fetch(
        "SELECT * FROM maintenance WHERE (cancelled_at IS NULL AND ends_at > $1) OR cancelled_at > $1"
        " ORDER BY id",
        since,
    )
    return [window_of(r) for r in rows]


async def cancel(db: asyncpg.Connection, window_id: int, by: str, now: float) -> MaintenanceWindow | None:
    row = await db.fetchrow(
        "UPDATE maintenance SET cancelled_at = $1 WHERE id = $2 AND cancelled_at IS NULL AND ends_at > $1"
        " RETURNING *",
        now,
        window_id,
    )
    if row is None:
        row = await db.fetchrow("SELECT * FROM maintenance WHERE id = $1", window_id)
        return None if row is None else window_of(row)
    window = window_of(row)
    await write_audit(db, None, "maintenance_cancelled", {**window.record_detail(), "cancelled_by": by}, now)
    return window


async def run_pass(
    db: asyncpg.Connection, owner: str, now: float, lease_until: float, running: Sequence[int]
) -> MaintenanceChanges:
    windows = await in_force(db, now)
    targets = sorted({w.target for w in windows})
    candidates = await db.fetch(
        "SELECT policy, host, target FROM incidents WHERE status = 'maintenance'"
        " OR (status = 'active' AND target = ANY($1::text[]))",
        targets,
    )
    if not candidates:
        return MaintenanceChanges()
    # The keys intake locks for these incidents, in one order for every replica (store/postgres/intake.py).
    keys = sorted({key_lock(r["policy"], f"{r['host']}/{r['target']}") for r in candidates})
    await db.execute(
        "SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT k FROM unnest($1::bigint[]) AS u(k) ORDER BY k) s",
        keys,
    )
    held: list[tuple[Incident, MaintenanceWindow]] = []
    resumed: list[Incident] = []
    closed: list[Incident] = []
    skip = set(running)
    # Read again under the locks: intake may have changed them meanwhile.
    rows = await db.fetch(
        "SELECT * FROM incidents WHERE status = 'maintenance'"
        " OR (status = 'active' AND target = ANY($1::text[])) ORDER BY id",
        targets,
    )
    for row in rows:
        window = covering(windows, row["policy"], row["host"], row["target"], now)
        if row["status"] == "active":
            if window is not None:
                moved = await hold(db, row["id"], window, now)
                await write_audit(db, row["id"], "maintenance", window.audit_detail(), now)
                held.append((incident_of(moved), window))
            continue
        if row["id"] in skip or window is not None:
            continue
        firing = await db.fetchval(
            "SELECT 1 FROM incident_alerts WHERE incident_id = $1 AND status = 'firing' LIMIT 1", row["id"]
        )
        if firing:
            after = await db.fetchrow(
                "UPDATE incidents SET status = 'active', reason = '', updated_at = $1, lease_owner = $2,"
                " lease_until = $3, lease_epoch = lease_epoch + 1 WHERE id = $4 RETURNING *",
                now,
                owner,
                lease_until,
                row["id"],
            )
            assert after is not None
            detail = {"then": "its alerts still fire: evaluated as new, the ladder starts"}
            await write_audit(db, row["id"], "maintenance_ended", detail, now)
            resumed.append(incident_of(after))
        else:
            after = await db.fetchrow(
                "UPDATE incidents SET status = 'resolved', updated_at = $1 WHERE id = $2 RETURNING *",
                now,
                row["id"],
            )
            assert after is not None
            await write_audit(db, row["id"], "maintenance_ended", {"then": "closed quietly"}, now)
            await write_audit(db, row["id"], "resolved", {"reason": RESOLVED_IN_MAINTENANCE}, now)
            closed.append(incident_of(after))
    return MaintenanceChanges(held=tuple(held), resumed=tuple(resumed), closed=tuple(closed))
