"""Maintenance windows in SQLite: stored windows, the windows intake reads for a firing, and the pass that holds
and releases incidents as windows begin and end. Which window holds what is decided by
``domain/maintenance.py: covering`` (the same for both stores); only the SQL is SQLite's."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence

from remediator.domain.incidents import Incident
from remediator.domain.maintenance import MaintenanceWindow, covering
from remediator.store.base import MaintenanceChanges
from remediator.store.rows import canonical_json, incident_of, window_of

RESOLVED_IN_MAINTENANCE = "its alerts resolved during maintenance"


def write_audit(
    db: sqlite3.Connection, incident_id: int | None, kind: str, detail: Mapping[str, object], now: float
) -> None:
    db.execute(
        "INSERT INTO audit (at, incident_id, kind, detail) VALUES (?, ?, ?, ?)",
        (now, incident_id, kind, canonical_json(detail)),
    )


def in_force(db: sqlite3.Connection, now: float, target: str | None = None) -> list[MaintenanceWindow]:
    """The windows in force at ``now`` (only those on ``target``, when given)."""
    sql = "SELECT * FROM maintenance WHERE cancelled_at IS NULL AND starts_at <= ? AND ends_at > ?"
    args: tuple[object, ...] = (now, now)
    if target is not None:
        sql += " AND target = ?"
        args += (target,)
    return [window_of(r) for r in db.execute(sql + " ORDER BY id", args)]


def hold(db: sqlite3.Connection, incident_id: int, window: MaintenanceWindow, now: float) -> sqlite3.Row:
    """Move an active or waiting incident to ``maintenance``: its lease is taken away with a new epoch, so a
    ladder still running for it can neither write nor call a backend again (docs/safety.md, F1, F2)."""
    row: sqlite3.Row = db.execute(
        "UPDATE incidents SET status = 'maintenance', reason = ?, updated_at = ?, lease_owner = '',"
        " lease_until = 0, lease_epoch = lease_epoch + 1 WHERE id = ? RETURNING *",
        (window.held_reason, now, incident_id),
    ).fetchone()
    return row


def add(
    db: sqlite3.Connection,
    target: str,
    host: str,
    policy: str,
    starts_at: float,
    ends_at: float,
    reason: str,
    by: str,
    now: float,
) -> MaintenanceWindow:
    row = db.execute(
        "INSERT INTO maintenance (target, host, policy, starts_at, ends_at, reason, created_by, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
        (target, host, policy, starts_at, ends_at, reason, by, now),
    ).fetchone()
    window = window_of(row)
    write_audit(db, None, "maintenance_added", window.record_detail(), now)
    return window


def listed(db: sqlite3.Connection, since: float) -> list[MaintenanceWindow]:
    rows = db.execute(
        "SELECT * FROM maintenance WHERE (cancelled_at IS NULL AND ends_at > ?) OR cancelled_at > ? ORDER BY id",
        (since, since),
    )
    return [window_of(r) for r in rows]


def cancel(db: sqlite3.Connection, window_id: int, by: str, now: float) -> MaintenanceWindow | None:
    row = db.execute(
        "UPDATE maintenance SET cancelled_at = ? WHERE id = ? AND cancelled_at IS NULL AND ends_at > ?"
        " RETURNING *",
        (now, window_id, now),
    ).fetchone()
    if row is None:
        row = db.execute("SELECT * FROM maintenance WHERE id = ?", (window_id,)).fetchone()
        return None if row is None else window_of(row)
    window = window_of(row)
    write_audit(db, None, "maintenance_cancelled", {**window.record_detail(), "cancelled_by": by}, now)
    return window


def run_pass(
    db: sqlite3.Connection, owner: str, now: float, lease_until: float, running: Sequence[int]
) -> MaintenanceChanges:
    windows = in_force(db, now)
    held: list[tuple[Incident, MaintenanceWindow]] = []
    if windows:
        targets = json.dumps(sorted({w.target for w in windows}))
        rows = db.execute(
            "SELECT * FROM incidents WHERE status = 'active' AND target IN (SELECT value FROM json_each(?))"
            " ORDER BY id",
            (targets,),
        ).fetchall()
        for row in rows:
            window = covering(windows, row["policy"], row["host"], row["target"], now)
            if window is None:
                continue
            moved = hold(db, row["id"], window, now)
            write_audit(db, row["id"], "maintenance", window.audit_detail(), now)
            held.append((incident_of(moved), window))
    resumed: list[Incident] = []
    closed: list[Incident] = []
    skip = set(running)
    for row in db.execute("SELECT * FROM incidents WHERE status = 'maintenance' ORDER BY id").fetchall():
        if row["id"] in skip or covering(windows, row["policy"], row["host"], row["target"], now):
            continue
        firing = db.execute(
            "SELECT 1 FROM incident_alerts WHERE incident_id = ? AND status = 'firing' LIMIT 1", (row["id"],)
        ).fetchone()
        if firing:
            # Evaluated as new: active, leased to this replica with a new token; its ladder starts at the first
            # step, and every guard decides on it as on any other.
            after = db.execute(
                "UPDATE incidents SET status = 'active', reason = '', updated_at = ?, lease_owner = ?,"
                " lease_until = ?, lease_epoch = lease_epoch + 1 WHERE id = ? RETURNING *",
                (now, owner, lease_until, row["id"]),
            ).fetchone()
            detail = {"then": "its alerts still fire: evaluated as new, the ladder starts"}
            write_audit(db, row["id"], "maintenance_ended", detail, now)
            resumed.append(incident_of(after))
        else:
            after = db.execute(
                "UPDATE incidents SET status = 'resolved', updated_at = ? WHERE id = ? RETURNING *",
                (now, row["id"]),
            ).fetchone()
            write_audit(db, row["id"], "maintenance_ended", {"then": "closed quietly"}, now)
            write_audit(db, row["id"], "resolved", {"reason": RESOLVED_IN_MAINTENANCE}, now)
            closed.append(incident_of(after))
    return MaintenanceChanges(held=tuple(held), resumed=tuple(resumed), closed=tuple(closed))
