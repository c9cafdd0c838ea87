"""PagerDuty Events API v2: a ``trigger`` when an incident escalates (or asks for approval), a ``resolve`` with
the same dedup_key when its alerts resolve (https://developer.pagerduty.com/docs/events-api-v2/trigger-events/).
``custom_details`` carry the same context as Slack and the approval page (``format.facts``, what happens next,
the evidence's tail); ``links`` the approval page, runbook, dashboard and incident report.

The dedup_key is one per incident (``format.incident_key``), so re-sends and a second escalation of the same
incident update one PagerDuty alert instead of opening another, and the resolve closes it.
"""

from __future__ import annotations

from typing import Any

from remediator.domain.story import EscalationPayload
from remediator.escalation import format as fmt
from remediator.escalation.http import HttpClient

SEVERITY = {"P1": "critical", "P2": "error", "P3": "warning", "P4": "info"}
"""PagerDuty severity per priority (P3 and P4 never reach PagerDuty: they do not page)."""

_SUMMARY_CHARS = 1024
_EVIDENCE_CHARS = 8000


def trigger_event(payload: EscalationPayload, routing_key: str, dedup_key: str) -> dict[str, Any]:
    """The Events v2 trigger for an escalation payload; ``dedup_key`` is the outbox's (kept in details)."""
    labels: dict[str, str] = payload.get("labels") or {}
    target = str(payload.get("target", ""))
    summary = fmt.headline(payload)
    if payload.get("summary"):
        summary += f": {payload['summary']}"
    summary += f" ({payload.get('reason', '')})"
    # The same context as Slack and the approval page: the facts, what happens next, evidence, links.
    context = {name.lower().replace(" ", "_"): value for name, value in fmt.facts(payload)}
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": fmt.incident_key(payload),
        "client": "remediator",
        "payload": {
            "summary": fmt.truncate(summary, _SUMMARY_CHARS),
            "source": target or "remediator",
            "severity": SEVERITY.get(str(payload.get("priority", "")), "error"),
            "timestamp": payload.get("escalated_at") or payload.get("opened_at"),
            "component": labels.get("service") or labels.get("job") or target,
            "group": payload.get("policy", ""),
            "class": payload.get("alertname", ""),
            "custom_details": {
                **context,  # alert, severity, firing_since, target, incident, duration, status
                "summary": payload.get("summary", ""),
                "priority": payload.get("priority"),
                "host": payload.get("host") or "",
                "incident_id": payload.get("incident_id"),
                "next": fmt.next_text(payload),
                "reason": payload.get("reason"),
                "opened_at": payload.get("opened_at"),
                "policy": payload.get("policy"),
                "policy_source": payload.get("policy_source"),
                "runbook_url": payload.get("runbook_url") or "",
                "dashboard_url": payload.get("dashboard_url") or "",
                "report_url": payload.get("report_url") or "",
                "steps": fmt.step_lines(payload),
                "evidence": fmt.evidence_text(payload, _EVIDENCE_CHARS),
                "labels": labels,
                "remediator_dedup_key": dedup_key,
            },
        },
    }
    found = [{"href": url, "text": text} for text, url in fmt.links(payload)]
    if found:
        event["links"] = found
    return event


def resolve_event(payload: EscalationPayload, routing_key: str) -> dict[str, Any]:
    """The Events v2 resolve of the incident's trigger (same dedup_key)."""
    return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": fmt.incident_key(payload)}


class PagerDutyNotifier:
    """Sends to one PagerDuty service; PagerDuty answers 202, 429 when rate limited."""

    pages = True

    def __init__(self, name: str, routing_key: str, url: str, timeout_s: float) -> None:
        self.name = name
        self._routing_key = routing_key
        self.url = url
        self.http = HttpClient(name, timeout_s)

    async def send(self, payload: EscalationPayload, dedup_key: str) -> None:
        await self.http.request("POST", self.url, trigger_event(payload, self._routing_key, dedup_key))

    async def resolve(self, payload: EscalationPayload, dedup_key: str) -> None:
        await self.http.request("POST", self.url, resolve_event(payload, self._routing_key))

    async def close(self) -> None:
        await self.http.close()
