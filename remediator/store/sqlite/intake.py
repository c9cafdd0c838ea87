"""How the SQLite store writes intake's decisions: episodes, incidents, their alerts and audit rows, and the
fencing check every write for an incident makes. The decisions themselves are store/base.py's (both stores
take them); only the SQL is SQLite's.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

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
from remediator.store.rows import canonical_json, incident_of
from remediator.store.sqlite.maintenance import hold, in_force

INSERT_AUDIT = "INSERT INTO audit (at, incident_id, kind, detail) VALUES"
AuditRow = tuple[float, int | None, str, str]


_ROWS_PER_STATEMENT = 200


def insert_many(db: sqlite3.Connection, insert: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """``insert`` ("INSERT INTO t (a, b) VALUES") for many rows as a few multi-row statements: one SQLite
    call per 200 rows instead of one per row."""
    if not rows:
        return
    one = "(" + ", ".join("?" * len(rows[0])) + ")"
    for start in range(0, len(rows), _ROWS_PER_STATEMENT):
        chunk = rows[start : start + _ROWS_PER_STATEMENT]
        db.execute(f"{insert} {', '.join([one] * len(chunk))}", [v for row in chunk for v in row])


def write_audit(
    db: sqlite3.Connection, incident_id: int | None, kind: str, detail: dict[str, Any], now: float
) -> None:
    db.execute(f"{INSERT_AUDIT} (?, ?, ?, ?)", (now, incident_id, kind, canonical_json(detail)))


def fenced(db: sqlite3.Connection, incident_id: int | None) -> None:
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


def close_if_quiet(
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


def supersede(
    db: sqlite3.Connection,
    fingerprint: str,
    now: float,
    audits: list[AuditRow],
    before_ts: float = float("inf"),
) -> list[Incident]:
    """A later episode of ``fingerprint`` was seen (one that began before ``before_ts``, unless bounded): its
    earlier episodes that still fire have ended (an alert has one episode at a time) even though no resolved came
    for them; their incidents close if nothing else fires."""
    rows = db.execute(
        "UPDATE episodes SET status = 'superseded' WHERE fingerprint = ? AND status = 'firing' AND starts_ts < ?"
        " RETURNING starts_at, incident_id",
        (fingerprint, before_ts),
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
        incident = close_if_quiet(db, incident_id, "a new episode of its alert began", now, audits)
        if incident is not None:
            closed.append(incident)
    return closed


def _seen_episode(db: sqlite3.Connection, alert: AlertRef) -> tuple[sqlite3.Row | None, bool]:
    """The episode (fingerprint, startsAt) as the store remembers it (its status and incident), or None; and,
    for an unseen one only, whether a later episode of the same alert was seen (firing_decision's inputs)."""
    seen: sqlite3.Row | None = db.execute(
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
    return seen, newer


def _stale_firing(
    db: sqlite3.Connection,
    alert: AlertRef,
    seen: sqlite3.Row | None,
    detail: dict[str, Any],
    now: float,
    audits: list[AuditRow],
) -> FiringResult:
    """A copy of an episode that already ended: nothing is opened."""
    if seen is None:  # remembered, so that its own resolved (or another copy) is recognised too
        db.execute(
            "INSERT INTO episodes (fingerprint, starts_at, starts_ts, status, incident_id, seen_at)"
            " VALUES (?, ?, ?, 'stale', NULL, ?)",
            (alert.fingerprint, alert.starts_at, alert.starts_ts, now),
        )
    incident_id = None if seen is None else seen["incident_id"]
    audits.append((now, incident_id, "stale_firing", canonical_json(detail)))
    return FiringResult(incident=None, created=False, stale=True)


def _duplicate_firing(
    seen: sqlite3.Row, detail: dict[str, Any], now: float, audits: list[AuditRow]
) -> FiringResult:
    """A re-send of an episode that still fires. Its incident is named, not read: re-sends are most of a
    storm, and nothing is done with them."""
    incident_id = seen["incident_id"]
    audits.append((now, incident_id, "duplicate", canonical_json(detail)))
    return FiringResult(incident=None, created=False, duplicate_of=incident_id)


def _open_incident(
    db: sqlite3.Connection,
    event: Firing,
    outcome: FiringOutcome,
    held: MaintenanceWindow | None,
    now: float,
    owner: str,
    lease_until: float,
) -> sqlite3.Row:
    """Insert the incident a new episode opens on a key that has none; its row."""
    alert = event.alert
    # A refused target is created escalated: a human owns it, and no ladder can ever be run for it. One that
    # a maintenance window holds is created in maintenance: never leased or run while the window holds.
    status = {"open": "active", "open_escalated": "escalated", "open_held": "maintenance"}[outcome]
    cursor = db.execute(
        "INSERT INTO incidents (policy, target, status, severity, opened_at, updated_at, labels,"
        " annotations, reason, lease_owner, lease_until, lease_epoch, host)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?)",
        (
            event.policy,
            event.target,
            status,
            alert.severity,
            now,
            now,
            canonical_json(alert.labels),
            canonical_json(alert.annotations),
            event.reason or (held.held_reason if held else ""),
            "" if held else owner,
            0.0 if held else lease_until,
            event.host,
        ),
    )
    row: sqlite3.Row = db.execute("SELECT * FROM incidents WHERE id = ?", (cursor.lastrowid,)).fetchone()
    return row


def _reactivate(
    db: sqlite3.Connection, incident_id: int, now: float, owner: str, lease_until: float
) -> sqlite3.Row:
    """A new problem on a target whose ladder had ended (waiting for its first alert to resolve) is never
    swallowed: the incident is active again, leased to this replica with a new token, and its ladder runs."""
    row: sqlite3.Row = db.execute(
        "UPDATE incidents SET status = 'active', reason = '', updated_at = ?, lease_owner = ?, lease_until = ?,"
        " lease_epoch = lease_epoch + 1 WHERE id = ? RETURNING *",
        (now, owner, lease_until, incident_id),
    ).fetchone()
    return row


def _attach_episode(db: sqlite3.Connection, incident_id: int, alert: AlertRef, now: float) -> None:
    """Record the alert as one of the incident's, and its episode as firing for it."""
    db.execute(
        "INSERT OR REPLACE INTO incident_alerts (incident_id, fingerprint, starts_at, status) VALUES (?, ?, ?, 'firing')",
        (incident_id, alert.fingerprint, alert.starts_at),
    )
    db.execute(
        "INSERT INTO episodes (fingerprint, starts_at, starts_ts, status, incident_id, seen_at)"
        " VALUES (?, ?, ?, 'firing', ?, ?)",
        (alert.fingerprint, alert.starts_at, alert.starts_ts, incident_id, now),
    )


def record_firing(
    db: sqlite3.Connection, event: Firing, now: float, owner: str, lease_until: float, audits: list[AuditRow]
) -> FiringResult:
    """Record one firing alert in intake's transaction. What it does is decided by store/base.py
    (firing_decision, then firing_outcome), as in the PostgreSQL store; only the SQL here is this store's."""
    alert = event.alert
    detail = firing_detail(event)
    seen, newer = _seen_episode(db, alert)
    decision = firing_decision(None if seen is None else seen["status"], newer)
    if decision == "stale":
        return _stale_firing(db, alert, seen, detail, now, audits)
    if decision == "duplicate":
        assert seen is not None
        return _duplicate_firing(seen, detail, now, audits)
    superseded = supersede(db, alert.fingerprint, now, audits)
    row: sqlite3.Row | None = db.execute(
        "SELECT * FROM incidents WHERE policy = ? AND host = ? AND target = ? AND status != 'resolved'",
        (event.policy, event.host, event.target),
    ).fetchone()
    windows = [] if event.reason else in_force(db, now, event.target)
    window = covering(windows, event.policy, event.host, event.target, now)
    outcome = firing_outcome(None if row is None else row["status"], bool(event.reason), window is not None)
    held = window if outcome in ("open_held", "hold") else None
    created = row is None
    if row is None:
        row = _open_incident(db, event, outcome, held, now, owner, lease_until)
    reactivated = outcome == "reactivate"
    if reactivated:
        row = _reactivate(db, row["id"], now, owner, lease_until)
        audits.append((now, row["id"], "reactivated", canonical_json(detail)))
    elif outcome == "hold" and held is not None:
        row = hold(db, row["id"], held, now)
    incident_id = row["id"]
    _attach_episode(db, incident_id, alert, now)
    audits.append((now, incident_id, "opened" if created else "attached", canonical_json(detail)))
    if held is not None:
        audits.append((now, incident_id, "maintenance", canonical_json(held.audit_detail())))
    return FiringResult(
        incident=incident_of(row),
        created=created,
        superseded=tuple(superseded),
        reactivated=reactivated,
        held=held,
    )


def record_resolved(
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
        # A later episode began and ended unseen (its firing lost, or inside one group interval): the earlier
        # ones still marked firing ended before it.
        return supersede(db, event.fingerprint, now, audits, before_ts=event.starts_ts)
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
    closed = close_if_quiet(db, incident_id, "every alert of the incident resolved", now, audits)
    return [] if closed is None else [closed]
