"""How the PostgreSQL store writes intake's decisions: episodes, incidents, their alerts and audit rows, and the
fencing check every write for an incident makes (FOR SHARE on the incident row). The decisions are
store/base.py's, the same as SQLite's; only the SQL differs.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from remediator.domain.fencing import current_fence
from remediator.domain.incidents import Incident
from remediator.errors import LeaseLost
from remediator.store.base import Firing, FiringResult, Resolved, firing_decision, firing_detail
from remediator.store.rows import canonical_json, incident_of


async def write_audit(
    db: asyncpg.Connection, incident_id: int | None, kind: str, detail: dict[str, Any], now: float
) -> None:
    await db.execute(
        "INSERT INTO audit (at, incident_id, kind, detail) VALUES ($1, $2, $3, $4)",
        now,
        incident_id,
        kind,
        canonical_json(detail),
    )


async def fenced(db: asyncpg.Connection, incident_id: int | None) -> None:
    """In the transaction of a write concerning ``incident_id``: refuse it when the ladder task making it holds a
    stale fencing token (docs/safety.md, F1). FOR SHARE holds the row until the write commits, so a claim that
    would change the token waits for it (or skips the row) rather than slipping in between."""
    fence = current_fence.get()
    if fence is None or incident_id != fence.incident_id:
        return
    held = await db.fetchval(
        "SELECT 1 FROM incidents WHERE id = $1 AND lease_owner = $2 AND lease_epoch = $3 FOR SHARE",
        fence.incident_id,
        fence.owner,
        fence.epoch,
    )
    if held is None:
        raise LeaseLost(f"incident {fence.incident_id}: {fence.owner} no longer holds lease {fence.epoch}")


async def close_if_quiet(
    db: asyncpg.Connection, incident_id: int, reason: str, now: float
) -> Incident | None:
    """Resolve the incident when none of its alerts fires any more; the closed incident, or None."""
    if await db.fetchval(
        "SELECT 1 FROM incident_alerts WHERE incident_id = $1 AND status = 'firing' LIMIT 1", incident_id
    ):
        return None
    row = await db.fetchrow(
        "UPDATE incidents SET status = 'resolved', updated_at = $1 WHERE id = $2 AND status <> 'resolved'"
        " RETURNING *",
        now,
        incident_id,
    )
    if row is None:
        return None
    await write_audit(db, incident_id, "resolved", {"reason": reason}, now)
    return incident_of(row)


async def supersede(db: asyncpg.Connection, fingerprint: str, now: float) -> list[Incident]:
    """A new episode of ``fingerprint`` began: its earlier episodes that still fire have ended; their incidents
    close if nothing else fires (see the SQLite store)."""
    rows = await db.fetch(
        "UPDATE episodes SET status = 'superseded' WHERE fingerprint = $1 AND status = 'firing'"
        " RETURNING starts_at, incident_id",
        fingerprint,
    )
    closed: list[Incident] = []
    for row in sorted(rows, key=lambda r: (r["incident_id"] or 0, r["starts_at"])):
        incident_id = row["incident_id"]
        if incident_id is None:
            continue
        await db.execute(
            "UPDATE incident_alerts SET status = 'resolved' WHERE incident_id = $1 AND fingerprint = $2"
            " AND starts_at = $3",
            incident_id,
            fingerprint,
            row["starts_at"],
        )
        detail = {"fingerprint": fingerprint, "starts_at": row["starts_at"]}
        await write_audit(db, incident_id, "alert_superseded", detail, now)
        incident = await close_if_quiet(db, incident_id, "a new episode of its alert began", now)
        if incident is not None:
            closed.append(incident)
    return closed


async def record_firing(
    db: asyncpg.Connection, event: Firing, now: float, owner: str, lease_until: float
) -> FiringResult:
    alert = event.alert
    detail = firing_detail(event)
    seen = await db.fetchrow(
        "SELECT status, incident_id FROM episodes WHERE fingerprint = $1 AND starts_at = $2",
        alert.fingerprint,
        alert.starts_at,
    )
    newer = seen is None and bool(
        await db.fetchval(
            "SELECT 1 FROM episodes WHERE fingerprint = $1 AND starts_ts > $2 LIMIT 1",
            alert.fingerprint,
            alert.starts_ts,
        )
    )
    decision = firing_decision(None if seen is None else seen["status"], newer)
    if decision == "stale":
        if seen is None:
            await db.execute(
                "INSERT INTO episodes (fingerprint, starts_at, starts_ts, status, incident_id, seen_at)"
                " VALUES ($1, $2, $3, 'stale', NULL, $4)",
                alert.fingerprint,
                alert.starts_at,
                alert.starts_ts,
                now,
            )
        await write_audit(db, None if seen is None else seen["incident_id"], "stale_firing", detail, now)
        return FiringResult(incident=None, created=False, duplicate=False, stale=True)
    if decision == "duplicate":
        row = await db.fetchrow("SELECT * FROM incidents WHERE id = $1", seen["incident_id"])
        assert row is not None
        await write_audit(db, row["id"], "duplicate", detail, now)
        return FiringResult(incident=incident_of(row), created=False, duplicate=True)
    superseded = await supersede(db, alert.fingerprint, now)
    row = await db.fetchrow(
        "SELECT * FROM incidents WHERE policy = $1 AND target = $2 AND status <> 'resolved'",
        event.policy,
        event.target,
    )
    created = row is None
    if row is None:
        # A refused target is created escalated: a human owns it, and no ladder can ever be run for it.
        row = await db.fetchrow(
            "INSERT INTO incidents (policy, target, status, severity, opened_at, updated_at, labels, annotations,"
            " reason, lease_owner, lease_until, lease_epoch)"
            " VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8, $9, $10, 1) RETURNING *",
            event.policy,
            event.target,
            "escalated" if event.reason else "active",
            alert.severity,
            now,
            canonical_json(alert.labels),
            canonical_json(alert.annotations),
            event.reason,
            owner,
            lease_until,
        )
        assert row is not None
    await db.execute(
        "INSERT INTO incident_alerts (incident_id, fingerprint, starts_at, status) VALUES ($1, $2, $3, 'firing')"
        " ON CONFLICT (incident_id, fingerprint, starts_at) DO UPDATE SET status = 'firing'",
        row["id"],
        alert.fingerprint,
        alert.starts_at,
    )
    await db.execute(
        "INSERT INTO episodes (fingerprint, starts_at, starts_ts, status, incident_id, seen_at)"
        " VALUES ($1, $2, $3, 'firing', $4, $5)",
        alert.fingerprint,
        alert.starts_at,
        alert.starts_ts,
        row["id"],
        now,
    )
    await write_audit(db, row["id"], "opened" if created else "attached", detail, now)
    return FiringResult(
        incident=incident_of(row), created=created, duplicate=False, superseded=tuple(superseded)
    )


async def record_resolved(db: asyncpg.Connection, event: Resolved, now: float) -> list[Incident]:
    """Resolve exactly the episode that resolved; remember an unseen one (see the SQLite store)."""
    row = await db.fetchrow(
        "SELECT status, incident_id FROM episodes WHERE fingerprint = $1 AND starts_at = $2",
        event.fingerprint,
        event.starts_at,
    )
    if row is None:
        await db.execute(
            "INSERT INTO episodes (fingerprint, starts_at, starts_ts, status, incident_id, seen_at)"
            " VALUES ($1, $2, $3, 'resolved', NULL, $4)",
            event.fingerprint,
            event.starts_at,
            event.starts_ts,
            now,
        )
        return []
    if row["status"] != "firing":
        return []
    await db.execute(
        "UPDATE episodes SET status = 'resolved' WHERE fingerprint = $1 AND starts_at = $2",
        event.fingerprint,
        event.starts_at,
    )
    incident_id = row["incident_id"]
    if incident_id is None:
        return []
    await db.execute(
        "UPDATE incident_alerts SET status = 'resolved' WHERE incident_id = $1 AND fingerprint = $2"
        " AND starts_at = $3",
        incident_id,
        event.fingerprint,
        event.starts_at,
    )
    await write_audit(
        db,
        incident_id,
        "alert_resolved",
        {"fingerprint": event.fingerprint, "starts_at": event.starts_at},
        now,
    )
    closed = await close_if_quiet(db, incident_id, "every alert of the incident resolved", now)
    return [] if closed is None else [closed]
