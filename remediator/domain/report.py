"""The post-incident report: the runbooks' incident report template (Title, Severity, Start Time, End Time,
Duration, Root Cause, Impact, Resolution, Prevention, Timeline) filled from what the store keeps of one
incident, with the parts only a person knows (root cause, impact, prevention, when the page was acknowledged)
left as prompts in brackets, as the template writes them.

A pure read model, like ``domain/story.py`` whose ``build_payload`` and ``incident_timeline`` it reuses: the API
(``GET /api/incidents/ID/report``) and the CLI (``remediator incidents report ID``) give it the incident, its
steps, its audit trail and its outbox entries, and render it as JSON or with ``markdown``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any, TypedDict

from remediator.domain.incidents import AuditRecord, Incident, OutboxEntry, StepRecord
from remediator.domain.policies import Policy
from remediator.domain.story import EvidenceEntry, StepEntry, build_payload, incident_timeline, iso, utc_time

EVIDENCE_CHARS = 20_000
"""The end of each diagnosis's output a report keeps (logs end with what matters)."""

ROOT_CAUSE_PROMPT = (
    "[What caused the incident. remediator does not know: start from the evidence and the timeline below.]"
)
IMPACT_PROMPTS = ("[X] users affected", "Service downtime: [Y minutes]", "Data affected: [Yes/No]")
PREVENTION_PROMPT = "[How to prevent it in future: fix the cause, tune the alert, or change the policy (its limits, its steps).]"
ACKNOWLEDGED_PROMPT = (
    "[HH:MM] - On-call responded: [when a person took it; remediator is not told when a page is acknowledged]"
)


class ReportEvent(TypedDict):
    """One line of the report's timeline: when, what kind (an audit kind, ``step_started``/``step_finished``,
    or ``alert_triggered``) and what happened, in a sentence."""

    at: str
    kind: str
    text: str


class EscalationEntry(TypedDict):
    """Whom the incident was escalated to, at what priority, and whether the notifier took it."""

    notifier: str
    priority: str
    delivered: bool
    attempts: int


class IncidentReport(TypedDict):
    """The filled template (JSON field names as documented in docs/operations.md)."""

    incident_id: int
    title: str
    severity: str
    """The priority, P1..P4 (the one its escalation was routed at; else read from the alert's label)."""
    alert_severity: str
    """The alert's own severity label."""
    status: str
    policy: str
    policy_source: str
    alertname: str
    target: str
    target_kind: str
    host: str
    summary: str
    start_time: str | None
    """When the alert began to fire (its ``startsAt``)."""
    opened_at: str | None
    """When remediator opened the incident."""
    end_time: str | None
    """When the incident resolved; None while it is open."""
    duration_s: float
    """From ``start_time`` to ``end_time`` (to now while it is open)."""
    outcome: str
    """In a sentence: recovered after which step, escalated to people and why, or resolved by itself."""
    resolution: list[StepEntry]
    """Every step attempt and its result, in order."""
    escalations: list[EscalationEntry]
    timeline: list[ReportEvent]
    evidence: list[EvidenceEntry]
    root_cause: str
    impact: list[str]
    prevention: str
    runbook_url: str
    dashboard_url: str
    generated_at: str | None


def _short(text: object, limit: int = 300) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _tail(text: str, limit: int = EVIDENCE_CHARS) -> str:
    return text if len(text) <= limit else f"[{len(text) - limit} earlier characters cut] ...{text[-limit:]}"


def _ts(value: str | None) -> float | None:
    try:
        return datetime.fromisoformat(value).timestamp() if value else None
    except ValueError:
        return None


def _event_text(
    kind: str, detail: dict[str, Any], incident: Incident, annotators: Collection[str] = ()
) -> str | None:
    """A timeline entry as a sentence; None for the ones a report leaves out (admissions, deliveries of
    resolves, silences and annotations)."""
    step = str(detail.get("step", ""))
    notifier = str(detail.get("notifier", ""))
    if notifier in annotators and kind in ("escalation_queued", "escalation_delivered"):
        return None  # a mark on the graphs (Grafana), not a person told
    if kind == "opened":
        return (
            f"remediator opened incident {incident.id} (policy {incident.policy}, target {incident.target})"
        )
    if kind == "attached":
        return f"Another alert attached to the incident ({detail.get('alertname', '')})"
    if kind == "step_started":  # incident_timeline's step events: "step" is the kind, "name" the action
        name, attempt = detail.get("name", ""), detail.get("attempt", 1)
        if detail.get("step") == "act":
            return f"remediator acted: {name} on {incident.target} (attempt {attempt})"
        return f"remediator ran {detail.get('step', '')} {name} (attempt {attempt})"
    if kind == "step_finished":
        name, attempt = detail.get("name", ""), detail.get("attempt", 1)
        result = f"{detail.get('step', '')} {name} #{attempt} -> {detail.get('status', '')}"
        more = _short(detail.get("detail", ""), 200)
        return f"{result}: {more}" if more else result
    if kind == "verified":
        return f"Verified: the system recovered after {step} ({_short(detail.get('evidence', ''), 200)})"
    if kind == "not_recovered":
        return f"Not recovered within {detail.get('within_s', '?')}s after {step}"
    if kind == "refused":
        reason = detail.get("reason", "")
        if reason == "shadow":
            return f"Shadow mode, nothing ran: {_short(detail.get('detail', ''))}"
        return f"A guard refused {step} ({reason}): {_short(detail.get('detail', ''))}"
    if kind == "dry_run":
        return f"Dry run, nothing ran: {_short(detail.get('detail', ''))}"
    if kind == "approval_requested":
        return f"remediator asked a person to approve {step} (within {detail.get('timeout_s', '?')}s)"
    if kind in ("approved", "denied"):
        by = str(detail.get("by", ""))
        who = "the approval's timeout" if by.startswith("timeout") else f"a person ({by})"
        return f"{step} {kind} by {who}"
    if kind == "escalation_queued":
        return f"remediator escalated to {notifier} ({detail.get('priority', '')})"
    if kind == "escalation_delivered":
        return f"Escalation delivered to {notifier}"
    if kind == "escalation_overdue":
        return f"Escalation to {notifier} still undelivered after {detail.get('attempts', '?')} attempts"
    if kind == "escalation_skipped":
        return f"Not paged through {notifier}: {detail.get('reason', '')}"
    if kind == "target_refused":
        return f"Target refused, nothing was touched: {_short(detail.get('reason', ''))}"
    if kind == "steps_cancelled":
        return f"Steps cancelled ({detail.get('reason', '')}): {', '.join(map(str, detail.get('steps', [])))}"
    if kind == "alert_resolved":
        return "Alertmanager reported the alert resolved"
    if kind == "resolved":
        return f"Incident resolved: {detail.get('reason', '')}"
    if kind == "resumed":
        return "remediator resumed the incident (after a restart or a takeover)"
    if kind in ("admitted", "approval_queued", "approval_delivered", "resolution_queued"):
        return None
    if kind in ("resolution_delivered", "silence_expired", "annotation_delivered"):
        return None
    return f"{kind}: {_short(json.dumps(detail, sort_keys=True), 200)}"


def _outcome(
    incident: Incident, steps: Sequence[StepRecord], trail: Sequence[AuditRecord], escalated: bool
) -> str:
    verified = [a for a in trail if a.kind == "verified"]
    if verified:
        last = verified[-1].detail
        return f"Recovered after {last.get('step', '')} (attempt {last.get('attempt', 1)}), verified."
    if escalated:
        reason = incident.reason or "escalated"
        return f"Escalated to people: {reason}."
    if any(a.kind == "refused" and a.detail.get("reason") == "shadow" for a in trail):
        return "Shadow mode: remediator acted on nothing and paged nobody."
    if incident.status == "resolved":
        acted = any(s.kind == "act" for s in steps)
        return (
            "The alerts resolved." if acted else "The alerts resolved before remediator acted."
        ) + " No verification recorded a recovery."
    return f"Open ({incident.status}): {incident.reason or 'remediation is running'}."


def _escalations(outbox: Sequence[OutboxEntry], annotators: Collection[str]) -> list[EscalationEntry]:
    """The escalations people were sent, from the outbox; an annotator's entries told nobody, so are left out."""
    escalations: list[EscalationEntry] = []
    for entry in outbox:
        if entry.payload.get("event") == "escalate" and entry.notifier not in annotators:
            escalations.append(
                {
                    "notifier": entry.notifier,
                    "priority": str(entry.payload.get("priority", "")),
                    "delivered": entry.status == "delivered",
                    "attempts": entry.attempts,
                }
            )
    return escalations


def _timeline(
    incident: Incident,
    alertname: str,
    start: float,
    steps: Sequence[StepRecord],
    trail: Sequence[AuditRecord],
    annotators: Collection[str],
) -> list[ReportEvent]:
    """The template's timeline: the alert triggering first (before remediator knew of it), then every event
    of the incident that a report keeps, as sentences."""
    timeline: list[ReportEvent] = [
        {
            "at": iso(start) or "",
            "kind": "alert_triggered",
            "text": f"Alert triggered: {alertname or incident.policy} on {incident.target}"
            + (f" ({incident.severity})" if incident.severity else ""),
        }
    ]
    for event in incident_timeline(steps, trail):
        text = _event_text(event["kind"], event["detail"], incident, annotators)
        if text is not None:
            timeline.append({"at": event["at"], "kind": event["kind"], "text": text})
    return timeline


def _evidence(found: Sequence[EvidenceEntry], steps: Sequence[StepRecord]) -> list[EvidenceEntry]:
    """What the diagnoses found, each cut to its end (logs end with what matters), then what the failed ones
    said, marked as failed."""
    evidence: list[EvidenceEntry] = [{"name": e["name"], "detail": _tail(e["detail"])} for e in found]
    evidence += [
        {"name": f"{s.name} (failed)", "detail": _tail(s.detail)}
        for s in steps
        if s.kind == "diagnose" and s.status != "ok" and s.detail
    ]
    return evidence


def build_report(
    incident: Incident,
    policy: Policy | None,
    steps: Sequence[StepRecord],
    trail: Sequence[AuditRecord],
    outbox: Sequence[OutboxEntry],
    now: float,
    *,
    priority: str,
    annotators: Collection[str] = (),
) -> IncidentReport:
    """The report of ``incident`` from its ``steps``, its whole audit ``trail`` and its ``outbox`` entries.
    ``priority``: its routing priority (P1..P4) from the routing settings; the priority its escalation was
    stored with wins, so that the report says what people were paged at. ``annotators``: the notifiers that only
    record (Grafana annotations), which told nobody."""
    escalations = _escalations(outbox, annotators)
    stored = [e["priority"] for e in escalations if e["priority"]]
    severity = stored[0] if stored else priority
    story = build_payload(incident, policy, steps, incident.reason, now, priority=severity, trail=trail)

    resolved = [a.at for a in trail if a.kind == "resolved"]
    end = (resolved[-1] if resolved else incident.updated_at) if incident.status == "resolved" else None
    start = _ts(story["firing_since"]) or incident.opened_at

    title = f"{story['alertname'] or incident.policy} on {incident.target}"
    if story["summary"]:
        title += f": {_short(story['summary'], 150)}"
    return {
        "incident_id": incident.id,
        "title": title,
        "severity": severity,
        "alert_severity": incident.severity,
        "status": incident.status,
        "policy": incident.policy,
        "policy_source": story["policy_source"],
        "alertname": story["alertname"],
        "target": incident.target,
        "target_kind": story["target_kind"],
        "host": incident.host,
        "summary": story["summary"],
        "start_time": iso(start),
        "opened_at": iso(incident.opened_at),
        "end_time": iso(end),
        "duration_s": round((end if end is not None else now) - start, 3),
        "outcome": _outcome(incident, steps, trail, bool(escalations) or incident.status == "escalated"),
        "resolution": story["steps"],
        "escalations": escalations,
        "timeline": _timeline(incident, story["alertname"], start, steps, trail, annotators),
        "evidence": _evidence(story["evidence"], steps),
        "root_cause": ROOT_CAUSE_PROMPT,
        "impact": list(IMPACT_PROMPTS),
        "prevention": PREVENTION_PROMPT,
        "runbook_url": story["runbook_url"],
        "dashboard_url": story["dashboard_url"],
        "generated_at": iso(now),
    }


# -- Markdown ------------------------------------------------------------------------------------------------


def _when(value: str | None) -> str:
    ts = _ts(value)
    return utc_time(ts) if ts is not None else "-"


def _clock(value: str, day: str) -> str:
    """``10:04:11`` on the report's first day, the whole UTC time on another."""
    ts = _ts(value)
    if ts is None:
        return value
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%H:%M:%S") if moment.strftime("%Y-%m-%d") == day else utc_time(ts)


def _fence(text: str) -> str:
    """A code fence longer than any run of backticks in ``text``, so that evidence cannot close it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} minutes"


def markdown(report: IncidentReport) -> str:
    """The report as Markdown, in the template's order."""
    start = report["start_time"]
    day = start[:10] if start else ""
    end = _when(report["end_time"]) if report["end_time"] else "- (still open)"
    duration = _minutes(report["duration_s"]) + ("" if report["end_time"] else " so far")
    severity = report["severity"] + (
        f" (alert severity {report['alert_severity']})" if report["alert_severity"] else ""
    )
    target = f"{report['target_kind']} {report['target']}".strip()
    if report["host"] and report["host"] != "default":
        target += f" on host {report['host']}"
    lines = [
        f"# Incident report: incident {report['incident_id']}",
        "",
        f"Title: {report['title']}",
        f"Severity: {severity}",
        f"Start Time: {_when(start)}",
        f"End Time: {end}",
        f"Duration: {duration}",
        "",
        f"Status: {report['status']}. Policy {report['policy']}"
        + (f" ({report['policy_source']})" if report["policy_source"] else "")
        + f", {target}.",
        "",
        "## Root Cause",
        "",
        report["root_cause"],
        "",
        "## Impact",
        "",
        *(f"- {line}" for line in report["impact"]),
        f"- The alert fired for {duration} (from the start time to the end time above).",
        "",
        "## Resolution",
        "",
        report["outcome"],
        "",
    ]
    for number, step in enumerate(report["resolution"], 1):
        detail = _short(step["detail"], 300)
        lines.append(
            f"{number}. {_clock(step['started_at'] or '', day)} {step['kind']} {step['name']} "
            f"(attempt {step['attempt']}): {step['status']}" + (f": {detail}" if detail else "")
        )
    if not report["resolution"]:
        lines.append("No step ran.")
    if report["escalations"]:
        lines.append("")
    for escalation in report["escalations"]:
        state = (
            "delivered"
            if escalation["delivered"]
            else f"not delivered yet ({escalation['attempts']} attempts)"
        )
        lines.append(f"- Escalated to {escalation['notifier']} at {escalation['priority']}: {state}")
    lines += ["", "## Prevention", "", report["prevention"], "", "## Timeline", ""]
    for event in report["timeline"]:
        lines.append(f"- {_clock(event['at'], day)} - {event['text']}")
    if report["escalations"]:
        lines.append(f"- {ACKNOWLEDGED_PROMPT}")
    lines += ["", "## Evidence", ""]
    for item in report["evidence"]:
        fence = _fence(item["detail"])
        lines += [f"### {item['name']}", "", fence, item["detail"], fence, ""]
    if not report["evidence"]:
        lines += ["No diagnosis ran.", ""]
    links = [("Runbook", report["runbook_url"]), ("Dashboard", report["dashboard_url"])]
    shown = [f"{name}: {url}" for name, url in links if url.startswith(("http://", "https://"))]
    lines += ["## Links", "", *(f"- {line}" for line in shown)]
    lines.append(f"- The whole record: `remediator incidents show {report['incident_id']}`")
    lines += ["", f"Generated by remediator at {_when(report['generated_at'])}.", ""]
    return "\n".join(lines)
