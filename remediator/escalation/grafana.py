"""Grafana annotations: each action remediator runs and each escalation, posted to Grafana's HTTP API
(``POST /api/annotations``) as a dashboard-wide annotation, so that every graph built on the same tags shows
when remediator acted (https://grafana.com/docs/grafana/latest/developers/http_api/annotations/).

An annotation is ``{"time": ms, "timeEnd": ms, "tags": [...], "text": "..."}`` with no ``dashboardUID``
(dashboard-wide: a dashboard's annotation query on the tag ``remediator`` shows them); an action is a region
from its start to its end, an escalation a point. The request carries the service account's token as a Bearer
token (never logged). Delivered through the outbox like every notifier: at least once, so a daemon killed
between Grafana's answer and recording it posts that annotation again (Grafana has no idempotency key).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from remediator.domain.story import EscalationPayload
from remediator.escalation.http import HttpClient

TEXT_CHARS = 1000
"""An annotation's text is a tooltip: the first line matters, the evidence is in the report it links."""


def _ms(iso_time: object) -> int | None:
    try:
        return round(datetime.fromisoformat(str(iso_time)).timestamp() * 1000) if iso_time else None
    except ValueError:
        return None


def tags(payload: EscalationPayload, event: str) -> list[str]:
    """``remediator``, ``policy:NAME``, ``target:NAME``, ``host:NAME`` and ``event:action|escalation``."""
    return [
        "remediator",
        f"policy:{payload.get('policy', '')}",
        f"target:{payload.get('target', '')}",
        f"host:{payload.get('host') or 'default'}",
        f"event:{event}",
    ]


def _cut(text: str) -> str:
    return text if len(text) <= TEXT_CHARS else text[: TEXT_CHARS - 3] + "..."


def annotation(payload: EscalationPayload) -> dict[str, Any]:
    """The annotation of an action (``event: action``, a region over the attempt) or of an escalation (a point
    at ``escalated_at``)."""
    what = payload.get("alertname") or payload.get("policy", "")
    incident = f"incident {payload.get('incident_id', '')} ({what})"
    report = payload.get("report_url") or ""
    action = payload.get("action")
    if payload.get("event") == "action" and action is not None:
        detail = " ".join(str(action["detail"]).split())
        text = (
            f"remediator: {action['step']} on {payload.get('target', '')} (attempt {action['attempt']})"
            f" -> {action['status']}" + (f": {detail}" if detail else "") + f"; {incident}"
        )
        body: dict[str, Any] = {"time": _ms(action["started_at"]), "timeEnd": _ms(action["finished_at"])}
        kind = "action"
    else:
        text = f"remediator escalated {incident} at {payload.get('priority') or '-'}: {payload.get('reason', '')}"
        body = {"time": _ms(payload.get("escalated_at"))}
        kind = "escalation"
    if body["time"] is None:  # a payload without its times: Grafana stamps it with its own now
        body.pop("time")
    if body.get("timeEnd") is None:
        body.pop("timeEnd", None)
    if report:
        text = f"{_cut(text)}\nReport: {report}"
    return {**body, "tags": tags(payload, kind), "text": _cut(text) if not report else text}


class GrafanaNotifier:
    """Posts annotations for actions (``annotate``) and escalations (``send``); pages nobody, resolves nothing."""

    pages = False
    annotates_actions = True

    def __init__(self, name: str, url: str, token: str, timeout_s: float) -> None:
        self.name = name
        self.url = f"{url.rstrip('/')}/api/annotations"
        self.http = HttpClient(name, timeout_s, {"Authorization": f"Bearer {token}"})

    async def send(self, payload: EscalationPayload, dedup_key: str) -> None:
        # An approval request is a question for a person, not something that happened.
        if payload.get("event") == "approval_requested":
            return
        await self.http.request("POST", self.url, annotation(payload))

    async def annotate(self, payload: EscalationPayload, dedup_key: str) -> None:
        await self.http.request("POST", self.url, annotation(payload))

    async def close(self) -> None:
        await self.http.close()
