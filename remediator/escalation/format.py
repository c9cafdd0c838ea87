"""Text shared by the notifiers: the escalation payload (``domain.story.EscalationPayload``) as lines a
person reads in a page, a chat message or an alert description."""

from __future__ import annotations

import hashlib
from datetime import datetime

from remediator.domain.story import EscalationPayload, StepEntry, utc_time, what_next


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with a marker when something was cut."""
    if len(text) <= limit:
        return text
    marker = f"... [{len(text) - limit} more characters]"
    return text[: max(0, limit - len(marker))] + marker


def tail(text: str, limit: int) -> str:
    """The last ``limit`` characters of ``text`` (evidence such as logs ends with what matters)."""
    if len(text) <= limit:
        return text
    marker = f"[{len(text) - limit} earlier characters cut] ..."
    return marker + text[len(text) - max(0, limit - len(marker)) :]


def duration(seconds: float) -> str:
    """``4m 11s``, ``2h 5m``, ``12s``, ``3d 4h``."""
    total = max(0, round(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def clock_time(iso: str | None) -> str:
    """``10:00:01`` (UTC) from an ISO timestamp; ``-`` when there is none."""
    if not iso:
        return "-"
    try:
        return datetime.fromisoformat(iso).strftime("%H:%M:%S")
    except ValueError:
        return iso


def step_line(step: StepEntry) -> str:
    """``10:00:01 act container.restart #2 -> ok: restarted sms-db``."""
    detail = " ".join(str(step.get("detail", "")).split())
    line = (
        f"{clock_time(step.get('started_at'))} {step.get('kind', '')} {step.get('name', '')} "
        f"#{step.get('attempt', 1)} -> {step.get('status', '')}"
    )
    return f"{line}: {truncate(detail, 200)}" if detail else line


def step_lines(payload: EscalationPayload) -> list[str]:
    steps = payload.get("steps") or []
    return [step_line(s) for s in steps] or ["no step ran"]


def evidence_text(payload: EscalationPayload, limit: int) -> str:
    """Every piece of evidence, each under its name, the whole cut to ``limit`` characters (keeping ends)."""
    parts = [f"{e.get('name', '')}:\n{e.get('detail', '')}" for e in payload.get("evidence") or []]
    per_part = max(200, limit // max(1, len(parts)))
    return truncate("\n\n".join(tail(p, per_part) for p in parts), limit)


def headline(payload: EscalationPayload) -> str:
    """``P1 remediation failed: DatabaseDown on sms-db``; for an approval request ``P1 approval needed:
    container.restart on sms-db (DatabaseDown)``."""
    what = payload.get("alertname") or payload.get("policy", "")
    priority, target = payload.get("priority", ""), payload.get("target", "")
    approval = payload.get("approval")
    if payload.get("event") == "approval_requested":
        step = approval["step"] if approval else "a step"
        return f"{priority} approval needed: {step} on {target} ({what})".strip()
    if payload.get("event") == "maintenance":
        return f"{priority} in maintenance, nothing acts: {what} on {target}".strip()
    return f"{priority} remediation failed: {what} on {target}".strip()


def _time(iso: str | None) -> str:
    """``2026-11-23 10:00:00 UTC`` from an ISO timestamp; ``-`` when there is none."""
    if not iso:
        return "-"
    try:
        return utc_time(datetime.fromisoformat(iso).timestamp())
    except ValueError:
        return iso


def firing_since(payload: EscalationPayload) -> str:
    """When the alert began to fire, as a person reads it (a payload stored before ``firing_since`` was
    added: when the incident opened)."""
    return _time(payload.get("firing_since") or payload.get("opened_at"))


def target_text(payload: EscalationPayload) -> str:
    """``container sms-db``, with ``on host h1`` when the incident names a host."""
    text = f"{payload.get('target_kind') or ''} {payload.get('target', '')}".strip()
    host = payload.get("host") or ""
    # A PostgreSQL target is named by its settings, not a Docker host.
    return f"{text} on host {host}" if host and payload.get("target_kind") != "postgres" else text


def next_text(payload: EscalationPayload) -> str:
    """What happens next (for a payload stored before ``next`` was added: told from its event)."""
    return payload.get("next") or what_next(
        str(payload.get("event", "escalate")), str(payload.get("target", "")), payload.get("approval")
    )


def facts(payload: EscalationPayload) -> list[tuple[str, str]]:
    """The context every notifier carries, in this order: alert, severity, firing since, target (and host),
    incident, duration, status."""
    priority = payload.get("priority", "")
    severity = payload.get("severity") or "-"
    return [
        ("Alert", str(payload.get("alertname") or payload.get("policy", ""))),
        ("Severity", f"{severity} ({priority})" if priority else severity),
        ("Firing since", firing_since(payload)),
        ("Target", target_text(payload)),
        ("Incident", f"#{payload.get('incident_id', '')} ({payload.get('policy', '')})"),
        ("Duration", duration(float(payload.get("duration_s") or 0))),
        ("Status", str(payload.get("status", ""))),
    ]


def incident_key(payload: EscalationPayload) -> str:
    """One key per incident, the same for its trigger and its resolve (PagerDuty's dedup_key).

    The id alone would collide between two remediator installations sending to one service, so a digest of
    the policy, target and opening time follows it.
    """
    seed = f"{payload.get('policy', '')}\0{payload.get('target', '')}\0{payload.get('opened_at', '')}"
    digest = hashlib.sha256(seed.encode()).hexdigest()[:12]
    return f"remediator-{payload.get('incident_id', '')}-{digest}"


def links(payload: EscalationPayload) -> list[tuple[str, str]]:
    """(text, url) for the approval page of a step waiting for a human, for the runbook and the dashboard
    when the alert's annotations name them, and for the incident report."""
    found = [
        ("Approve or deny", str(payload.get("approval_url") or "")),
        ("Runbook", str(payload.get("runbook_url") or "")),
        ("Dashboard", str(payload.get("dashboard_url") or "")),
        ("Incident report", str(payload.get("report_url") or "")),
    ]
    return [(text, url) for text, url in found if url.startswith(("http://", "https://"))]
