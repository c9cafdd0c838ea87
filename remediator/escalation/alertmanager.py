"""Alertmanager as a notifier: a ``RemediationFailed`` alert posted to its v2 API, so that its routing (teams,
receivers, inhibitions, repeat intervals) pages the right person; resolved (``endsAt`` = now) when the incident
resolves. Optionally a silence of the original alert while remediation runs, expired when it ends.

The alert carries the original alert's labels (so routes on ``team``, ``service`` or ``severity`` still match),
with ``alertname=RemediationFailed`` and ``original_alertname``, ``policy``, ``target``, ``priority`` and
``incident`` added. Its ``startsAt`` is the escalation time in the trigger and the resolve alike, so
Alertmanager merges the two into one alert.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from remediator.domain.story import EscalationPayload
from remediator.errors import NotifyError
from remediator.escalation import format as fmt
from remediator.escalation.http import HttpClient

ALERTNAME = "RemediationFailed"
_DESCRIPTION_CHARS = 6000


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def _ts(iso: Any, default: float) -> float:
    try:
        return datetime.fromisoformat(str(iso)).timestamp()
    except ValueError:
        return default


def alert_labels(payload: EscalationPayload) -> dict[str, str]:
    labels = {k: v for k, v in (payload.get("labels") or {}).items() if v != ""}
    labels.update(
        {
            "alertname": ALERTNAME,
            "original_alertname": str(payload.get("alertname", "")),
            "policy": str(payload.get("policy", "")),
            "target": str(payload.get("target", "")),
            "priority": str(payload.get("priority", "")),
            "incident": str(payload.get("incident_id", "")),
        }
    )
    return {k: v for k, v in labels.items() if v != ""}


def remediation_failed_alert(payload: EscalationPayload, ends_at: float) -> dict[str, Any]:
    """One alert for ``POST /api/v2/alerts``: labels, annotations, startsAt (the escalation) and endsAt."""
    starts = _ts(payload.get("escalated_at"), ends_at)
    description = "\n".join(
        [
            f"remediator escalated incident {payload.get('incident_id')} ({payload.get('policy')}): "
            f"{payload.get('reason', '')}",
            "",
            "Steps:",
            *(f"- {line}" for line in fmt.step_lines(payload)),
        ]
    )
    evidence = fmt.evidence_text(payload, 2000)
    if evidence:
        description += f"\n\nEvidence:\n{evidence}"
    annotations = {
        "summary": f"Remediation failed: {payload.get('alertname') or payload.get('policy')} on "
        f"{payload.get('target', '')}",
        "description": fmt.truncate(description, _DESCRIPTION_CHARS),
        "original_summary": str(payload.get("summary", "")),
        "runbook_url": str(payload.get("runbook_url", "")),
        "dashboard_url": str(payload.get("dashboard_url", "")),
    }
    return {
        "labels": alert_labels(payload),
        "annotations": {k: v for k, v in annotations.items() if v},
        "startsAt": _iso(starts),
        "endsAt": _iso(max(ends_at, starts)),
    }


class AlertmanagerNotifier:
    """Talks to one Alertmanager's v2 API."""

    pages = False

    def __init__(
        self,
        name: str,
        url: str,
        headers: dict[str, str],
        silence_while_running: bool,
        alert_ttl_s: float,
        timeout_s: float,
    ) -> None:
        self.name = name
        self.url = url.rstrip("/")
        self.silence_while_running = silence_while_running
        self.alert_ttl_s = alert_ttl_s
        self.http = HttpClient(name, timeout_s, headers)

    async def send(self, payload: EscalationPayload, dedup_key: str) -> None:
        escalated = _ts(payload.get("escalated_at"), 0.0)
        alert = remediation_failed_alert(payload, escalated + self.alert_ttl_s)
        await self.http.request("POST", f"{self.url}/api/v2/alerts", [alert])

    async def resolve(self, payload: EscalationPayload, dedup_key: str) -> None:
        ended = _ts(payload.get("resolved_at"), 0.0)
        await self.http.request(
            "POST", f"{self.url}/api/v2/alerts", [remediation_failed_alert(payload, ended)]
        )

    async def silence(self, matchers: dict[str, str], starts_at: float, ends_at: float, comment: str) -> str:
        body = {
            "matchers": [
                {"name": name, "value": value, "isRegex": False, "isEqual": True}
                for name, value in matchers.items()
            ],
            "startsAt": _iso(starts_at),
            "endsAt": _iso(ends_at),
            "createdBy": "remediator",
            "comment": comment,
        }
        _, text = await self.http.request("POST", f"{self.url}/api/v2/silences", body)
        try:
            silence_id = json.loads(text)["silenceID"]
        except (ValueError, KeyError, TypeError) as exc:
            raise NotifyError(
                f"{self.name}: {self.url} answered a silence without an id: {text[:200]}"
            ) from exc
        return str(silence_id)

    async def expire_silence(self, silence_id: str) -> None:
        # Alertmanager 0.25 answers 200 for an expired silence and 500 "silence not found" for one it no longer
        # has (or never had): either way it silences nothing any more.
        status, text = await self.http.request(
            "DELETE", f"{self.url}/api/v2/silence/{quote(silence_id, safe='')}", ok_statuses=(404, 500)
        )
        if status == 500 and "not found" not in text:
            raise NotifyError(
                f"{self.name}: {self.url} answered 500 expiring silence {silence_id}: {text[:200]}"
            )

    async def close(self) -> None:
        await self.http.close()
