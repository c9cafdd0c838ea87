"""The two read models on their own (pure functions over records, as the stores return them): the incident
report's sentences for approvals, refusals, shadow mode and an open incident, its Markdown's code fences and
evidence bounds; the effectiveness counts' definitions (nearest-rank percentiles, pages avoided by priority,
shadow and dry run outside the success rate). The daemon and both stores feed them in
tests/test_incident_report.py and tests/test_effectiveness.py."""

from __future__ import annotations

from remediator.domain.effectiveness import IncidentOutcome, effectiveness, overall, percentile
from remediator.domain.incidents import AuditRecord, Incident, OutboxEntry, StepRecord
from remediator.domain.report import EVIDENCE_CHARS, build_report, markdown

T0 = 1_764_500_000.0  # 2025-11-30 10:53:20 UTC


def _incident(**extra: object) -> Incident:
    fields: dict[str, object] = {
        "id": 7,
        "policy": "database-down",
        "target": "sms-db",
        "status": "resolved",
        "severity": "critical",
        "opened_at": T0,
        "updated_at": T0 + 600,
        "labels": {"alertname": "DatabaseDown", "severity": "critical"},
        "annotations": {"summary": "PostgreSQL is down"},
        **extra,
    }
    return Incident(**fields)  # type: ignore[arg-type]


def _audit(n: int, at: float, kind: str, **detail: object) -> AuditRecord:
    return AuditRecord(n, T0 + at, 7, kind, dict(detail))


def test_an_approved_step_and_its_recovery_read_as_sentences() -> None:
    steps = [
        StepRecord(1, 7, 0, "diagnose", "container.logs", 1, "ok", T0 + 1, T0 + 2, "FATAL: ```x``` down"),
        StepRecord(2, 7, 1, "act", "container.restart", 1, "ok", T0 + 60, T0 + 61, "restarted sms-db"),
    ]
    trail = [
        _audit(1, 0, "opened", starts_at="2025-11-30T10:50:00+00:00", alertname="DatabaseDown"),
        _audit(2, 3, "approval_requested", step="container.restart", timeout_s=300, requested_at=T0 + 3),
        _audit(3, 50, "approved", step="container.restart", by="approval link from 10.0.0.7"),
        _audit(
            4, 70, "verified", step="container.restart", attempt=1, within_s=120, evidence="alert resolved"
        ),
        _audit(5, 70, "alert_resolved"),
        _audit(6, 600, "resolved", reason="every alert resolved"),
    ]
    report = build_report(_incident(), None, steps, trail, [], T0 + 900, priority="P2")
    assert report["severity"] == "P2"  # never escalated: the priority the routing settings give
    assert report["start_time"] == "2025-11-30T10:50:00+00:00"  # the alert's startsAt, before the opening
    assert report["end_time"] is not None and report["duration_s"] == T0 + 600 - 1_764_499_800.0
    texts = [e["text"] for e in report["timeline"]]
    assert "container.restart approved by a person (approval link from 10.0.0.7)" in texts
    assert "remediator asked a person to approve container.restart (within 300s)" in texts
    assert report["outcome"] == "Recovered after container.restart (attempt 1), verified."
    text = markdown(report)
    assert "\n````\nFATAL: ```x``` down\n````\n" in text  # a fence longer than the evidence's backticks
    assert "End Time: 2025-11-30 11:03:20 UTC" in text and "Duration: 13.3 minutes" in text
    assert "On-call responded" not in text  # nobody was paged


def test_an_open_escalated_incident_with_a_timeout_and_a_refusal() -> None:
    steps = [StepRecord(1, 7, 0, "diagnose", "container.logs", 1, "failed", T0 + 1, T0 + 2, "x" * 50_000)]
    trail = [
        _audit(1, 0, "opened", starts_at="not a time"),
        _audit(2, 400, "denied", step="container.restart", by="timeout after 300s"),
        _audit(3, 401, "refused", step="container.restart", reason="approval_denied", detail="not approved"),
        _audit(4, 402, "escalation_queued", notifier="pd", priority="P1"),
    ]
    outbox = [OutboxEntry(1, 7, "pd", "k", {"event": "escalate", "priority": "P1"}, 3, "pending")]
    incident = _incident(status="escalated", reason="refused (approval_denied): not approved")
    report = build_report(incident, None, steps, trail, outbox, T0 + 900, priority="P3")
    assert report["severity"] == "P1"  # what it was paged at, whatever the settings say now
    assert report["end_time"] is None and report["duration_s"] == 900  # from the opening: no valid startsAt
    texts = [e["text"] for e in report["timeline"]]
    assert "container.restart denied by the approval's timeout" in texts
    assert "A guard refused container.restart (approval_denied): not approved" in texts
    assert report["outcome"] == "Escalated to people: refused (approval_denied): not approved."
    (evidence,) = report["evidence"]  # a failed diagnosis is evidence too, its end kept
    assert evidence["name"] == "container.logs (failed)" and len(evidence["detail"]) < EVIDENCE_CHARS + 100
    text = markdown(report)
    assert "End Time: - (still open)" in text and "Duration: 15.0 minutes so far" in text
    assert "- Escalated to pd at P1: not delivered yet (3 attempts)" in text
    assert "On-call responded: [when a person took it" in text


def _outcome(n: int, policy: str = "p", **extra: object) -> IncidentOutcome:
    fields: dict[str, object] = {"id": n, "policy": policy, "status": "resolved", "opened_at": 100.0, **extra}
    return IncidentOutcome(**fields)  # type: ignore[arg-type]


def test_effectiveness_definitions() -> None:
    critical, warning = {"severity": "critical"}, {"severity": "warning"}
    outcomes = [
        _outcome(1, acted=True, recovered_step="restart", recovered_at=110.0, labels=critical),
        _outcome(2, acted=True, recovered_step="restart", recovered_at=120.0, labels=warning),
        _outcome(3, acted=True, recovered_step="scale", recovered_at=200.0, labels=critical, escalated=True),
        _outcome(4, acted=True, escalated=True, refusals=("cooldown", "cooldown")),
        _outcome(5, refusals=("shadow", "shadow")),
        _outcome(6, refusals=("dry_run",)),
        _outcome(7),
    ]

    def priority(labels: dict[str, str]) -> str:
        return {"critical": "P1", "warning": "P3"}.get(labels.get("severity", ""), "P2")

    (effect,) = effectiveness(outcomes, priority)
    assert effect["incidents"] == 7 and effect["acted"] == 4 and effect["recovered"] == 3
    assert effect["recovered_by_step"] == {"restart": 2, "scale": 1}
    assert effect["success_rate"] == 0.75  # shadow and dry run acted on nothing: outside it
    assert effect["refused"] == 1 and effect["refusals"] == {"cooldown": 1, "dry_run": 1, "shadow": 1}
    assert effect["shadow"] == 2 and effect["resolved_without_action"] == 3
    # Nearest rank over 10, 20, 100 s: p50 is the 2nd, p90 the 3rd.
    assert (effect["time_to_recovery_p50_s"], effect["time_to_recovery_p90_s"]) == (20.0, 100.0)
    assert effect["pages_avoided"] == 1  # 2 is P3 (never pages), 3 was escalated anyway
    assert overall(outcomes, priority)["policy"] == "all"
    assert [e["policy"] for e in effectiveness([], priority, ["a", "b"])] == ["a", "b"]
    assert percentile([], 0.5) is None and percentile([5.0], 0.9) == 5.0
    assert percentile(range(1, 11), 0.9) == 9 and percentile(range(1, 11), 0.5) == 5
