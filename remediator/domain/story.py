"""The story of an incident as people read it: the escalation payload that every notifier formats, and the
incident's timeline that the API and the CLI show.

Both are read models built from what the store keeps. They are typed, so that a notifier reading a field the
payload does not carry fails the type check, not a page at 3 a.m.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NotRequired, TypedDict

from remediator.domain.incidents import AuditRecord, Incident, StepRecord
from remediator.domain.policies import Policy


class StepEntry(TypedDict):
    """One attempt of one step, as the escalation shows it."""

    index: int
    kind: str
    name: str
    attempt: int
    status: str
    detail: str
    started_at: str | None
    finished_at: str | None


class EvidenceEntry(TypedDict):
    """What a diagnosis step found (a container's state and log lines, a database's sessions)."""

    name: str
    detail: str


class ApprovalEntry(TypedDict):
    """The step an approval request is for, and what silence does: ``on_timeout`` at ``expires_at``."""

    step: str
    timeout_s: float
    expires_at: str | None
    on_timeout: str
    """``deny`` (the step does not run and the incident escalates) or ``proceed`` (the step runs)."""


class ActionEntry(TypedDict):
    """One attempt of an action that ran, for the notifiers that record actions (``event: action``)."""

    step: str
    index: int
    attempt: int
    status: str
    """``ok`` or ``failed``."""
    detail: str
    started_at: str | None
    finished_at: str | None


class EscalationPayload(TypedDict):
    """What a human gets: what fired, what was tried, and why remediation stopped. The generic webhook sends
    it as is (documented in docs/escalation.md); Slack, PagerDuty and Alertmanager format it."""

    event: str
    """``escalate``, ``approval_requested``, ``resolve`` or ``action`` (for the notifiers that record actions)."""
    incident_id: int
    policy: str
    policy_source: str
    target: str
    target_kind: str
    """``container``, ``compose-service``, ...; empty when the policy is not known (a resolve)."""
    host: str
    """The Docker host of the target when the incident names one (fleets); empty otherwise."""
    severity: str
    priority: str
    status: str
    reason: str
    opened_at: str | None
    firing_since: str | None
    """When the alert began to fire (its ``startsAt``; the earliest of the incident's alerts), else opened_at."""
    escalated_at: str | None
    duration_s: float
    alertname: str
    labels: dict[str, str]
    annotations: dict[str, str]
    summary: str
    runbook_url: str
    dashboard_url: str
    steps: list[StepEntry]
    evidence: list[EvidenceEntry]
    next: str
    """What happens next, in a sentence for the person who reads it."""
    approval: NotRequired[ApprovalEntry]
    """Approval requests only: the step that waits and what silence does."""
    approve_url: NotRequired[str]
    deny_url: NotRequired[str]
    approve_command: NotRequired[str]
    approval_url: NotRequired[str]
    """The signed one-click approval link (approval requests only; never logged)."""
    action: NotRequired[ActionEntry]
    """``action`` events only: the attempt that ran."""
    report_url: NotRequired[str]
    """The post-incident report (``GET /api/incidents/ID/report``, token required) under the daemon's public URL;
    empty when that is not known. Absent from payloads stored before it was added."""
    resolved_at: NotRequired[str | None]
    escalation_dedup_key: NotRequired[str]
    """On a resolve: the dedup key of the escalation it closes."""


class TimelineEvent(TypedDict):
    at: str
    kind: str
    detail: dict[str, Any]


FIRING_KINDS = ("opened", "attached")
"""The audit records of an incident that name a firing alert's ``starts_at`` (store.base.firing_detail)."""


def iso(ts: float | None) -> str | None:
    return None if ts is None else _iso(ts)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def utc_time(ts: float) -> str:
    """``2026-11-23 10:04:11 UTC``: an absolute time a person reads, whatever their time zone."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def firing_since(incident: Incident, trail: Sequence[AuditRecord]) -> float:
    """When the incident's alert began to fire: the earliest ``startsAt`` of the alerts its audit ``trail``
    (``FIRING_KINDS``) attached, else when the incident opened."""
    found = [incident.opened_at]
    for record in trail:
        if record.kind in FIRING_KINDS and record.incident_id in (None, incident.id):
            try:
                found.append(datetime.fromisoformat(str(record.detail.get("starts_at", ""))).timestamp())
            except ValueError:
                continue
    return min(found)


def host_of(incident: Incident) -> str:
    """The Docker host the incident's target is on, for an Incident that names one (fleets), else ``""``."""
    return str(getattr(incident, "host", "") or "")


def what_next(
    event: str, target: str, approval: ApprovalEntry | None = None, handed_over: bool = True
) -> str:
    """What happens next, for the person who reads an escalation, an approval request or a resolve."""
    if event == "resolve":
        return "Nothing to do: the alerts resolved and the incident is closed."
    if event == "maintenance":
        return (
            f"Nothing to do: a maintenance window holds {target}, so remediator records its alerts and acts on"
            " nothing. When the window ends, if they still fire, the policy's ladder starts as for a new"
            " incident; if they resolve, the incident closes quietly."
        )
    if approval is not None:
        step = approval["step"]
        expires = approval["expires_at"]
        when = utc_time(datetime.fromisoformat(expires).timestamp()) if expires else "the timeout"
        silence = (
            f"{step} runs anyway (on_timeout: proceed)"
            if approval["on_timeout"] == "proceed"
            else f"{step} does not run and the incident is escalated to people (on_timeout: deny)"
        )
        return (
            f"Approve: {step} runs on {target} at once (every limit still applies). Deny: it does not run and"
            f" the incident is escalated to people. No answer by {when}: {silence}."
        )
    if not handed_over:
        return "For your information: remediator goes on with the next steps of the policy."
    return (
        "remediator has stopped acting on this incident: a person owns it now. "
        "It closes by itself when its alerts resolve."
    )


def report_url(public_url: str, incident_id: int) -> str:
    """Where the incident's post-incident report is (``""`` without a public URL)."""
    return f"{public_url.rstrip('/')}/api/incidents/{incident_id}/report" if public_url else ""


def build_payload(
    incident: Incident,
    policy: Policy | None,
    steps: Sequence[StepRecord],
    reason: str,
    now: float,
    *,
    priority: str = "",
    status: str = "escalated",
    escalated_at: float | None = None,
    trail: Sequence[AuditRecord] = (),
    event: str = "escalate",
    approval: ApprovalEntry | None = None,
    handed_over: bool = True,
    public_url: str = "",
) -> EscalationPayload:
    """The whole story of an incident, as a human needs it: what fired, what was tried, and why we stopped.
    ``trail``: its audit records of ``FIRING_KINDS``, for when the alert began to fire; ``approval``: the
    request of an ``approval_requested`` event; ``handed_over``: False for an escalation the ladder goes on
    after; ``public_url``: the daemon's, for ``report_url``."""
    annotations = incident.annotations
    payload: EscalationPayload = {
        "event": event,
        "incident_id": incident.id,
        "policy": incident.policy,
        "policy_source": policy.source if policy else "",
        "target": incident.target,
        "target_kind": policy.target.kind if policy else "",
        "host": host_of(incident),
        "severity": incident.severity,
        "priority": priority,
        "status": status,
        "reason": reason,
        "opened_at": iso(incident.opened_at),
        "firing_since": iso(firing_since(incident, trail)),
        "escalated_at": iso(now if escalated_at is None else escalated_at),
        "duration_s": round(now - incident.opened_at, 3),
        "alertname": incident.labels.get("alertname", ""),
        "labels": incident.labels,
        "annotations": annotations,
        "summary": annotations.get("summary", ""),
        "runbook_url": annotations.get("runbook_url", ""),
        "dashboard_url": annotations.get("dashboard_url", annotations.get("dashboard", "")),
        "steps": [
            {
                "index": s.index,
                "kind": s.kind,
                "name": s.name,
                "attempt": s.attempt,
                "status": s.status,
                "detail": s.detail,
                "started_at": iso(s.started_at),
                "finished_at": iso(s.finished_at),
            }
            for s in steps
        ],
        "evidence": [
            {"name": s.name, "detail": s.detail} for s in steps if s.kind == "diagnose" and s.status == "ok"
        ],
        "next": what_next(event, incident.target, approval, handed_over),
        "report_url": report_url(public_url, incident.id),
    }
    if approval is not None:
        payload["approval"] = approval
    return payload


def incident_timeline(steps: Sequence[StepRecord], trail: Sequence[AuditRecord]) -> list[TimelineEvent]:
    """The incident record as one chronological list: every decision of the audit trail, and every step's
    start and result."""
    events: list[tuple[float, int, TimelineEvent]] = []
    for record in trail:
        events.append((record.at, 0, {"at": _iso(record.at), "kind": record.kind, "detail": record.detail}))
    for step in steps:
        what: dict[str, Any] = {
            "index": step.index,
            "step": step.kind,
            "name": step.name,
            "attempt": step.attempt,
        }
        events.append(
            (step.started_at, 1, {"at": _iso(step.started_at), "kind": "step_started", "detail": what})
        )
        if step.finished_at is not None:
            result = {**what, "status": step.status, "detail": step.detail}
            events.append(
                (
                    step.finished_at,
                    2,
                    {"at": _iso(step.finished_at), "kind": "step_finished", "detail": result},
                )
            )
    events.sort(key=lambda e: (e[0], e[1]))
    return [event for _, _, event in events]
