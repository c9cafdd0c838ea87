"""Incidents, their steps and their audit records: what the store keeps and the API shows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

IncidentStatus = Literal["active", "waiting", "escalated", "maintenance", "resolved"]
"""``active``: a ladder runs for it (only these are leased and claimed); ``waiting``: the ladder ended without
escalating (the system recovered, or shadow mode) and the incident stays open until its alerts resolve, with
no ladder; ``escalated``: a human owns it (this includes a target the allow list refused, which is created
escalated and never runnable); ``maintenance``: a maintenance window holds it (domain/maintenance.py): its alerts
are recorded, no ladder runs and nobody is paged until the window ends, when it is ``active`` again (its alerts
still fire) or ``resolved``; ``resolved``: closed."""
INCIDENT_STATUSES: tuple[IncidentStatus, ...] = ("active", "waiting", "escalated", "maintenance", "resolved")
OPEN_STATUSES: tuple[IncidentStatus, ...] = ("active", "waiting", "escalated", "maintenance")

StepStatus = Literal["started", "ok", "failed", "skipped", "interrupted"]


@dataclass(frozen=True)
class Incident:
    """One problem on one target of one host, keyed by (policy, host, target); re-sent alerts attach to it."""

    id: int
    policy: str
    target: str
    status: IncidentStatus
    severity: str
    opened_at: float
    updated_at: float
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    reason: str = ""
    lease_owner: str = ""
    lease_epoch: int = 0
    """Incremented by every lease grant: the fencing token of the replica that holds it (domain/fencing.py)."""
    host: str = "default"
    """The Docker host the target lives on (``default`` for one host, and for a PostgreSQL target)."""

    @property
    def log_fields(self) -> dict[str, object]:
        """``extra=`` for a log line about this incident (remediator.logs.FIELDS)."""
        fields: dict[str, object] = {"incident": self.id, "policy": self.policy, "target": self.target}
        if self.host != "default":  # one host: the field would only repeat itself on every line
            fields["host"] = self.host
        return fields


@dataclass(frozen=True)
class StepRecord:
    """One attempt of one ladder step, recorded as started before it runs and finished after."""

    id: int
    incident_id: int
    index: int
    kind: str
    name: str
    attempt: int
    status: StepStatus
    started_at: float
    finished_at: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class AuditRecord:
    """One decision, with its reason: the incident timeline and the answer to "why did it do that?"."""

    id: int
    at: float
    incident_id: int | None
    kind: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OutboxEntry:
    """An escalation stored before it is sent, so a notifier outage cannot lose it."""

    id: int
    incident_id: int
    notifier: str
    dedup_key: str
    payload: dict[str, Any]
    attempts: int
    status: Literal["pending", "delivered", "failed"]
    lease_owner: str = ""
    """The replica delivering it; with several replicas exactly one holds a pending entry's lease."""
    lease_epoch: int = 0
    """Incremented by every lease grant: a delivery's writes are fenced by it, like an incident's."""
