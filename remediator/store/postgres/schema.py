"""The PostgreSQL store's schema: numbered migrations, applied in order at open under an advisory lock
(``schema_migrations`` records them), and the fixed advisory-lock keys replicas coordinate with.

A migration that has landed is never edited; a change is a new one at the end.
"""

from __future__ import annotations

import hashlib

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE inbox (
        id BIGSERIAL PRIMARY KEY, received_at DOUBLE PRECISION NOT NULL, body TEXT NOT NULL,
        processed_at DOUBLE PRECISION);
    CREATE INDEX inbox_pending ON inbox(id) WHERE processed_at IS NULL;
    CREATE TABLE incidents (
        id BIGSERIAL PRIMARY KEY, policy TEXT NOT NULL, target TEXT NOT NULL, status TEXT NOT NULL,
        severity TEXT NOT NULL, opened_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL,
        labels TEXT NOT NULL, annotations TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
        lease_owner TEXT NOT NULL DEFAULT '', lease_until DOUBLE PRECISION NOT NULL DEFAULT 0);
    CREATE UNIQUE INDEX incidents_one_open ON incidents(policy, target) WHERE status <> 'resolved';
    CREATE INDEX incidents_key_opened ON incidents(policy, target, opened_at);
    CREATE INDEX incidents_active_lease ON incidents(lease_until) WHERE status = 'active';
    CREATE TABLE incident_alerts (
        incident_id BIGINT NOT NULL REFERENCES incidents(id), fingerprint TEXT NOT NULL, starts_at TEXT NOT NULL,
        status TEXT NOT NULL, PRIMARY KEY (incident_id, fingerprint, starts_at));
    CREATE INDEX incident_alerts_firing ON incident_alerts(fingerprint) WHERE status = 'firing';
    CREATE TABLE steps (
        id BIGSERIAL PRIMARY KEY, incident_id BIGINT NOT NULL REFERENCES incidents(id), idx INTEGER NOT NULL,
        kind TEXT NOT NULL, name TEXT NOT NULL, attempt INTEGER NOT NULL, status TEXT NOT NULL,
        started_at DOUBLE PRECISION NOT NULL, finished_at DOUBLE PRECISION, detail TEXT NOT NULL DEFAULT '');
    CREATE INDEX steps_incident ON steps(incident_id);
    CREATE INDEX steps_act_started ON steps(started_at) WHERE kind = 'act';
    CREATE TABLE audit (
        id BIGSERIAL PRIMARY KEY, at DOUBLE PRECISION NOT NULL, incident_id BIGINT, kind TEXT NOT NULL,
        detail TEXT NOT NULL);
    CREATE INDEX audit_incident ON audit(incident_id);
    CREATE TABLE outbox (
        id BIGSERIAL PRIMARY KEY, incident_id BIGINT NOT NULL, notifier TEXT NOT NULL, dedup_key TEXT NOT NULL UNIQUE,
        payload TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, status TEXT NOT NULL,
        error TEXT NOT NULL DEFAULT '', updated_at DOUBLE PRECISION NOT NULL);
    CREATE TABLE breakers (name TEXT PRIMARY KEY, state TEXT NOT NULL, updated_at DOUBLE PRECISION NOT NULL);
    CREATE TABLE control (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at DOUBLE PRECISION NOT NULL);
    """,
    """
    ALTER TABLE outbox ADD COLUMN lease_owner TEXT NOT NULL DEFAULT '';
    ALTER TABLE outbox ADD COLUMN lease_until DOUBLE PRECISION NOT NULL DEFAULT 0;
    CREATE INDEX outbox_pending_lease ON outbox(lease_until) WHERE status = 'pending';
    """,
    """
    ALTER TABLE incidents ADD COLUMN lease_epoch BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE outbox ADD COLUMN lease_epoch BIGINT NOT NULL DEFAULT 0;
    CREATE TABLE episodes (
        fingerprint TEXT NOT NULL, starts_at TEXT NOT NULL, starts_ts DOUBLE PRECISION NOT NULL,
        status TEXT NOT NULL, incident_id BIGINT, seen_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (fingerprint, starts_at));
    CREATE INDEX episodes_by_start ON episodes(fingerprint, starts_ts);
    INSERT INTO episodes (fingerprint, starts_at, starts_ts, status, incident_id, seen_at)
        SELECT fingerprint, starts_at, 0, status, incident_id, 0 FROM incident_alerts ON CONFLICT DO NOTHING;
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
    CREATE UNIQUE INDEX incidents_one_open ON incidents(policy, host, target) WHERE status <> 'resolved';
    DROP INDEX incidents_key_opened;
    CREATE INDEX incidents_key_opened ON incidents(policy, host, target, opened_at);
    """,
    # Maintenance windows (docs/design.md): a target, optionally a host and a policy ('' for any), for a time.
    """
    CREATE TABLE maintenance (
        id BIGSERIAL PRIMARY KEY, target TEXT NOT NULL, host TEXT NOT NULL, policy TEXT NOT NULL,
        starts_at DOUBLE PRECISION NOT NULL, ends_at DOUBLE PRECISION NOT NULL, reason TEXT NOT NULL,
        created_by TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, cancelled_at DOUBLE PRECISION);
    CREATE INDEX maintenance_target ON maintenance(target, ends_at);
    CREATE INDEX maintenance_ends ON maintenance(ends_at);
    CREATE INDEX incidents_maintenance ON incidents(id) WHERE status = 'maintenance';
    """,
)


# Fixed advisory-lock keys (arbitrary 64-bit numbers, spelled out so they are greppable in pg_locks).
MIGRATION_LOCK = 0x72656D6564690001
ADMISSION_LOCK = 0x72656D6564690002


def key_lock(policy: str, target: str) -> int:
    digest = hashlib.blake2b(f"{policy}\x1f{target}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def count_of(status: str) -> int:
    """Rows touched, from asyncpg's command tag ("INSERT 0 1", "UPDATE 3")."""
    return int(status.rsplit(" ", 1)[-1])
