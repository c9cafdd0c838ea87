"""Rows to domain objects, shared by both stores: sqlite3.Row and asyncpg.Record both index by column name,
and both stores keep JSON in text columns."""

from __future__ import annotations

import json
from typing import Any, Protocol

from remediator.domain.incidents import AuditRecord, Incident, OutboxEntry, StepRecord
from remediator.domain.maintenance import MaintenanceWindow

# One encoder for every JSON column: json.dumps(..., sort_keys=True) builds a new encoder per call, and intake
# writes one audit row per alert.
canonical_json = json.JSONEncoder(sort_keys=True).encode
"""ASCII-only (non-ASCII is escaped), so a JSON column holds any string, U+0000 and lone surrogates included."""


def storable(text: str) -> str:
    """``text`` as both stores can hold it, and the same in both: PostgreSQL's text cannot contain U+0000, and
    neither UTF-8 codec takes a lone surrogate (valid in a JSON string). Both become U+FFFD."""
    # The common case (fingerprints, names) returns without a loop over every character.
    if text.isascii() and "\x00" not in text:
        return text
    if "\x00" in text or any("\ud800" <= c <= "\udfff" for c in text):
        return "".join("\ufffd" if c == "\x00" or "\ud800" <= c <= "\udfff" else c for c in text)
    return text


class Row(Protocol):
    def __getitem__(self, key: str) -> Any: ...


def incident_of(row: Row) -> Incident:
    return Incident(
        id=row["id"],
        policy=row["policy"],
        target=row["target"],
        status=row["status"],
        severity=row["severity"],
        opened_at=row["opened_at"],
        updated_at=row["updated_at"],
        labels=json.loads(row["labels"]),
        annotations=json.loads(row["annotations"]),
        reason=row["reason"],
        lease_owner=row["lease_owner"],
        lease_epoch=row["lease_epoch"],
        host=row["host"],
    )


def window_of(row: Row) -> MaintenanceWindow:
    return MaintenanceWindow(
        id=row["id"],
        target=row["target"],
        host=row["host"],
        policy=row["policy"],
        starts_at=row["starts_at"],
        ends_at=row["ends_at"],
        reason=row["reason"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        cancelled_at=row["cancelled_at"],
    )


def outbox_of(row: Row) -> OutboxEntry:
    return OutboxEntry(
        id=row["id"],
        incident_id=row["incident_id"],
        notifier=row["notifier"],
        dedup_key=row["dedup_key"],
        payload=json.loads(row["payload"]),
        attempts=row["attempts"],
        status=row["status"],
        lease_owner=row["lease_owner"],
        lease_epoch=row["lease_epoch"],
    )


def step_of(row: Row) -> StepRecord:
    return StepRecord(
        id=row["id"],
        incident_id=row["incident_id"],
        index=row["idx"],
        kind=row["kind"],
        name=row["name"],
        attempt=row["attempt"],
        status=row["status"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        detail=row["detail"],
    )


def audit_of(row: Row) -> AuditRecord:
    return AuditRecord(
        id=row["id"],
        at=row["at"],
        incident_id=row["incident_id"],
        kind=row["kind"],
        detail=json.loads(row["detail"]),
    )


def newer_schema(store: str, version: int, known: int) -> str:
    """Why a replica refuses a store a newer remediator migrated: it would not know what the new columns mean
    (an older replica ignoring incidents' ``host`` could act on the wrong Docker host)."""
    return (
        f"{store} has schema version {version}; this remediator knows {known}: it was written by a newer"
        " version, so run that version here too (every replica must be upgraded before new features are used)"
    )
