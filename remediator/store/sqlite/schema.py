"""The SQLite store's schema: numbered migrations, applied in order at open (``PRAGMA user_version`` counts them).

A migration that has landed is never edited; a change is a new one at the end.
"""

from __future__ import annotations

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
    # Retention finds what it may delete by age without scanning whole tables.
    """
    CREATE INDEX inbox_received ON inbox(received_at);
    CREATE INDEX incidents_resolved ON incidents(updated_at) WHERE status = 'resolved';
    CREATE INDEX audit_unattached ON audit(at) WHERE incident_id IS NULL;
    CREATE INDEX episodes_seen ON episodes(seen_at);
    """,
    # A fleet: an incident is keyed by (policy, host, target); everything before it was on the one host.
    """
    ALTER TABLE incidents ADD COLUMN host TEXT NOT NULL DEFAULT 'default';
    DROP INDEX incidents_one_open;
    CREATE UNIQUE INDEX incidents_one_open ON incidents(policy, host, target) WHERE status != 'resolved';
    DROP INDEX incidents_key_opened;
    CREATE INDEX incidents_key_opened ON incidents(policy, host, target, opened_at);
    """,
    # Maintenance windows (docs/design.md): a target, optionally a host and a policy ('' for any), for a time.
    """
    CREATE TABLE maintenance (
        id INTEGER PRIMARY KEY, target TEXT NOT NULL, host TEXT NOT NULL, policy TEXT NOT NULL,
        starts_at REAL NOT NULL, ends_at REAL NOT NULL, reason TEXT NOT NULL, created_by TEXT NOT NULL,
        created_at REAL NOT NULL, cancelled_at REAL);
    CREATE INDEX maintenance_target ON maintenance(target, ends_at);
    CREATE INDEX maintenance_ends ON maintenance(ends_at);
    CREATE INDEX incidents_maintenance ON incidents(id) WHERE status = 'maintenance';
    """,
    # Retention finds the old inbox rows and unattached audit records by their ids (retention.py:
    # old_prefix_end): an index on their time cost every alert two more B-tree inserts (docs/design.md, D45).
    """
    DROP INDEX inbox_received;
    DROP INDEX audit_unattached;
    """,
)
