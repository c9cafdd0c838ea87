"""How the PostgreSQL store writes intake's decisions: episodes, incidents, their alerts and audit rows, and the
fencing check every write for an incident makes (FOR SHARE on the incident row). The decisions are
store/base.py's, the same as SQLite's; only the SQL differs.

Intake's transaction holds the advisory locks of its whole batch, so every round trip in it makes other
replicas wait longer (bench/pg_scale.py measures it): the locks are taken in one statement, an episode is read
with one query, and the batch's audit rows are collected (``Audits``) and written in one statement at its end.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from remediator.domain.fencing import current_fence
from remediator.domain.incidents import Incident
from remediator.domain.maintenance import MaintenanceWindow, covering
from remediator.errors import LeaseLost
from remediator.store.base import (
    AlertRef,
    Firing,
    FiringOutcome,
    FiringResult,
    Resolved,
    firing_decision,
    firing_detail,
    firing_outcome,
)
from remediator.store.postgres.maintenance import hold, in_force
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


Audits = list[tuple[float, int | None, str, str]]
"""Audit rows (at, incident_id, kind, detail as JSON) collected during one intake transaction, in order."""


def add_audit(audits: Audits, incident_id: int | None, kind: str, detail: dict[str, Any], now: float) -> None:
    audits.append((now, incident_id, kind, canonical_json(detail)))


async def write_audits(db: asyncpg.Connection, audits: Audits) -> None:
    """The collected rows in one statement, in their order (ids ascending as they were added)."""
    if not audits:
        return
    await db.execute(
        "INSERT INTO audit (at, incident_id, kind, detail)"
        " SELECT at, incident_id, kind, detail FROM unnest($1::double precision[], $2::bigint[], $3::text[],"
        " $4::text[]) WITH ORDINALITY AS r(at, incident_id, kind, detail, n) ORDER BY n",
        [a[0] for a in audits],
        [a[1] for a in audits],
        [a[2] for a in audits],
        [a[3] for a in audits],
    )


async def lock_keys(db: asyncpg.Connection, keys: list[int]) -> None:
    """Take the transaction-scoped advisory locks of ``keys`` in ascending order (one order for every replica,
    so two never deadlock), in one round trip: the sorted subquery is not flattened, so the locks are taken
    row by row in its order."""
    if keys:
        await db.execute(
            "SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT k FROM unnest($1::bigint[]) AS u(k) ORDER BY k) s",
            sorted(keys),
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
    db: asyncpg.Connection, incident_id: int, reason: str, now: float, audits: Audits
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
    add_audit(audits, incident_id, "resolved", {"reason": reason}, now)
    return incident_of(row)


async def supersede(
    db: asyncpg.Connection, fingerprint: str, now: float, audits: Audits, before_ts: float = float("inf")
) -> list[Incident]:
    """A later episode of ``fingerprint`` was seen: its earlier episodes that still fire have ended; their
    incidents close if nothing else fires (see the SQLite store)."""
    rows = await db.fetch(
        "UPDATE episodes SET status = 'superseded' WHERE fingerprint = $1 AND status = 'firing' AND starts_ts < $2"
        " RETURNING starts_at, incident_id",
        fingerprint,
        before_ts,
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
        add_audit(audits, incident_id, "alert_superseded", detail, now)
        incident = await close_if_quiet(db, incident_id, "a new episode of its alert began", now, audits)
        if incident is not None:
            closed.append(incident)
    return closed


async def _seen_episode(db: asyncpg.Connection, alert: AlertRef) -> tuple[asyncpg.Record | None, bool]:
    """The episode (fingerprint, startsAt) as the store remembers it (its status and incident), or None; and,
    for an unseen one only, whether a later episode of the same alert was seen (firing_decision's inputs)."""
    # Both in one query: a round trip less while the batch's locks are held.
    episode = await db.fetchrow(
        "SELECT e.status, e.incident_id, EXISTS (SELECT 1 FROM episodes n WHERE n.fingerprint = $1"
        " AND n.starts_ts > $3) AS newer"
        " FROM (SELECT 1) AS one LEFT JOIN episodes e ON e.fingerprint = $1 AND e.starts_at = $2",
        alert.fingerprint,
        alert.starts_at,
        alert.starts_ts,
    )
    assert episode is not None
    seen = None if episode["status"] is None else episode
    return seen, seen is None and bool(episode["newer"])


async def _stale_firing(
    db: asyncpg.Connection,
    alert: AlertRef,
    seen: asyncpg.Record | None,
    detail: dict[str, Any],
    now: float,
    audits: Audits,
) -> FiringResult:
    """A copy of an episode that already ended: nothing is opened."""
    if seen is None:  # remembered, so that its own resolved (or another copy) is recognised too
        await db.execute(
            "INSERT INTO episodes (fingerprint, starts_at, starts_ts, status, incident_id, seen_at)"
            " VALUES ($1, $2, $3, 'stale', NULL, $4)",
            alert.fingerprint,
            alert.starts_at,
            alert.starts_ts,
            now,
        )
    add_audit(audits, None if seen is None else seen["incident_id"], "stale_firing", detail, now)
    return FiringResult(incident=None, created=False, stale=True)


def _duplicate_firing(
    seen: asyncpg.Record, detail: dict[str, Any], now: float, audits: Audits
) -> FiringResult:
    """A re-send of an episode that still fires. Its incident is named, not read: re-sends are most of a
    storm, and nothing is done with them."""
    incident_id = seen["incident_id"]
    add_audit(audits, incident_id, "duplicate", detail, now)
    return FiringResult(incident=None, created=False, duplicate_of=incident_id)


async def _open_incident(
    db: asyncpg.Connection,
    event: Firing,
    outcome: FiringOutcome,
    held: MaintenanceWindow | None,
    now: float,
    owner: str,
    lease_until: float,
) -> asyncpg.Record:
    """Insert the incident a new episode opens on a key that has none; its row."""
    alert = event.alert
    # A refused target is created escalated: a human owns it, and no ladder can ever be run for it. One that
    # a maintenance window holds is created in maintenance: never leased or run while the window holds.
    status = {"open": "active", "open_escalated": "escalated", "open_held": "maintenance"}[outcome]
    row = await db.fetchrow(
        "INSERT INTO incidents (policy, target, status, severity, opened_at, updated_at, labels, annotations,"
        " reason, lease_owner, lease_until, lease_epoch, host)"
        " VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8, $9, $10, 1, $11) RETURNING *",
        event.policy,
        event.target,
        status,
        alert.severity,
        now,
        canonical_json(alert.labels),
        canonical_json(alert.annotations),
        event.reason or (held.held_reason if held else ""),
        "" if held else owner,
        0.0 if held else lease_until,
        event.host,
    )
    assert row is not None
    return row


async def _reactivate(
    db: asyncpg.Connection, incident_id: int, now: float, owner: str, lease_until: float
) -> asyncpg.Record:
    """A new problem on a target whose ladder had ended (waiting for its first alert to resolve) is never
    swallowed: the incident is active again, leased to this replica with a new token, and its ladder runs."""
    row = await db.fetchrow(
        "UPDATE incidents SET status = 'active', reason = '', updated_at = $1, lease_owner = $2,"
        " lease_until = $3, lease_epoch = lease_epoch + 1 WHERE id = $4 RETURNING *",
        now,
        owner,
        lease_until,
        incident_id,
    )
    assert row is not None
    return row


async def _attach_episode(db: asyncpg.Connection, incident_id: int, alert: AlertRef, now: float) -> None:
    """Record the alert as one of the incident's, and its episode as firing for it."""
    # In one statement: a round trip less while the batch's locks are held.
    await db.execute(
        "WITH attached AS (INSERT INTO incident_alerts (incident_id, fingerprint, starts_at, status)"
        " VALUES ($4, $1, $2, 'firing')"
        " ON CONFLICT (incident_id, fingerprint, starts_at) DO UPDATE SET status = 'firing')"
        " INSERT INTO episodes (fingerprint, starts_at, starts_ts, status, incident_id, seen_at)"
        " VALUES ($1, $2, $3, 'firing', $4, $5)",
        alert.fingerprint,
        alert.starts_at,
        alert.starts_ts,
        incident_id,
        now,
    )


async def record_firing(
    db: asyncpg.Connection, event: Firing, now: float, owner: str, lease_until: float, audits: Audits
) -> FiringResult:
    """Record one firing alert in intake's transaction. What it does is decided by store/base.py
    (firing_decision, then firing_outcome), as in the SQLite store; only the SQL here is this store's."""
    alert = event.alert
    detail = firing_detail(event)
    seen, newer = await _seen_episode(db, alert)
    decision = firing_decision(None if seen is None else seen["status"], newer)
    if decision == "stale":
        return await _stale_firing(db, alert, seen, detail, now, audits)
    if decision == "duplicate":
        assert seen is not None
        return _duplicate_firing(seen, detail, now, audits)
    superseded = await supersede(db, alert.fingerprint, now, audits)
    row = await db.fetchrow(
        "SELECT * FROM incidents WHERE policy = $1 AND host = $2 AND target = $3 AND status <> 'resolved'",
        event.policy,
        event.host,
        event.target,
    )
    windows = [] if event.reason else await in_force(db, now, event.target)
    window = covering(windows, event.policy, event.host, event.target, now)
    outcome = firing_outcome(None if row is None else row["status"], bool(event.reason), window is not None)
    held = window if outcome in ("open_held", "hold") else None
    created = row is None
    if row is None:
        row = await _open_incident(db, event, outcome, held, now, owner, lease_until)
    reactivated = outcome == "reactivate"
    if reactivated:
        row = await _reactivate(db, row["id"], now, owner, lease_until)
        add_audit(audits, row["id"], "reactivated", detail, now)
    elif outcome == "hold" and held is not None:
        row = await hold(db, row["id"], held, now)
    await _attach_episode(db, row["id"], alert, now)
    add_audit(audits, row["id"], "opened" if created else "attached", detail, now)
    if held is not None:
        add_audit(audits, row["id"], "maintenance", held.audit_detail(), now)
    return FiringResult(
        incident=incident_of(row),
        created=created,
        superseded=tuple(superseded),
        reactivated=reactivated,
        held=held,
    )


async def record_resolved(
    db: asyncpg.Connection, event: Resolved, now: float, audits: Audits
) -> list[Incident]:
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
        # A later episode began and ended unseen: the earlier ones still marked firing ended before it.
        return await supersede(db, event.fingerprint, now, audits, before_ts=event.starts_ts)
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
    add_audit(
        audits,
        incident_id,
        "alert_resolved",
        {"fingerprint": event.fingerprint, "starts_at": event.starts_at},
        now,
    )
    closed = await close_if_quiet(db, incident_id, "every alert of the incident resolved", now, audits)
    return [] if closed is None else [closed]
