"""Slack incoming webhook: the escalation (or approval request) as Block Kit blocks a person reads at a glance,
with a ``text`` fallback for notifications, and a short note when the incident resolves. It carries the same
context as PagerDuty's event and the approval page: ``format.facts``, what happens next, the evidence's tail and
the runbook, dashboard, approval and incident report links.

Every value that comes from an alert is escaped (``&``, ``<``, ``>``), so a label cannot mention ``@channel``
or forge a link; texts are cut to Slack's limits (header 150, section 3000 characters).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from remediator.domain.story import EscalationPayload
from remediator.escalation import format as fmt
from remediator.escalation.http import HttpClient

_ICONS = {
    "P1": ":rotating_light:",
    "P2": ":warning:",
    "P3": ":large_yellow_circle:",
    "P4": ":information_source:",
}
_SECTION_CHARS = 3000
_EVIDENCE_CHARS = 2400


def escape(text: object) -> str:
    """Text for a mrkdwn field: Slack's three control characters escaped."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _link(url: str, text: str) -> str:
    safe = url.replace(" ", "%20").replace("|", "%7C").replace("<", "%3C").replace(">", "%3E")
    return f"<{safe}|{escape(text)}>"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": fmt.truncate(text, _SECTION_CHARS)}}


def slack_message(payload: EscalationPayload, dedup_key: str, channel: str | None = None) -> dict[str, Any]:
    """The escalation (or approval request) as an incoming-webhook body: header, summary, the facts (alert,
    severity, firing since, target, incident, duration, status), what happens next, what remediator did, why,
    the evidence, and the links."""
    priority = str(payload.get("priority", ""))
    alertname = payload.get("alertname") or payload.get("policy", "")
    target = payload.get("target", "")
    asking = payload.get("event") == "approval_requested"
    holding = payload.get("event") == "maintenance"
    if asking:
        approval = payload.get("approval")
        step = approval["step"] if approval else "a step"
        header = f":raising_hand: {priority} Approval needed: {step} on {target} ({alertname})"
    elif holding:
        header = f":construction: {priority} In maintenance, nothing acts: {alertname} on {target}"
    else:
        header = f"{_ICONS.get(priority, ':warning:')} {priority} Remediation failed: {alertname} on {target}"
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": fmt.truncate(escape(header), 150), "emoji": True},
        }
    ]
    if payload.get("summary"):
        blocks.append(_section(escape(payload["summary"])))
    blocks.append(
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": fmt.truncate(f"*{name}*\n{escape(value)}", 2000)}
                for name, value in fmt.facts(payload)
            ],
        }
    )
    following = f"*What happens next*\n{escape(fmt.next_text(payload))}"
    link = str(payload.get("approval_url") or "")
    if link.startswith(("http://", "https://")):
        following += f"\n:point_right: *{_link(link, 'Approve or deny')}*"
    blocks.append(_section(following))
    blocks.append(
        _section(
            "*What remediator did*\n" + "\n".join(f"• {escape(line)}" for line in fmt.step_lines(payload))
        )
    )
    why = "Why it asks" if asking else "Why nothing acts" if holding else "Why it escalated"
    blocks.append(_section(f"*{why}*\n{escape(payload.get('reason', ''))}"))
    evidence = fmt.evidence_text(payload, _EVIDENCE_CHARS)
    if evidence:
        code = fmt.truncate(escape(evidence).replace("```", "'''"), _SECTION_CHARS - 40)
        blocks.append(_section(f"*Evidence*\n```{code}```"))
    context = [{"type": "mrkdwn", "text": _link(url, text)} for text, url in fmt.links(payload)]
    context.append(
        {
            "type": "mrkdwn",
            "text": fmt.truncate(
                f"remediator · policy {escape(payload.get('policy_source') or payload.get('policy', ''))}"
                f" · key {escape(dedup_key)}",
                2000,
            ),
        }
    )
    blocks.append({"type": "context", "elements": context})
    body: dict[str, Any] = {
        "text": fmt.truncate(escape(f"{fmt.headline(payload)}: {payload.get('reason', '')}"), 3000),
        "blocks": blocks,
    }
    if channel:
        body["channel"] = channel
    return body


def slack_resolved(payload: EscalationPayload, channel: str | None = None) -> dict[str, Any]:
    """The short note that the escalated incident resolved."""
    alertname = payload.get("alertname") or payload.get("policy", "")
    text = (
        f":white_check_mark: Resolved: {alertname} on {payload.get('target', '')} "
        f"(incident #{payload.get('incident_id', '')}, {payload.get('policy', '')}), "
        f"{fmt.duration(float(payload.get('duration_s') or 0))} after it opened"
    )
    body: dict[str, Any] = {"text": escape(text), "blocks": [_section(escape(text))]}
    if channel:
        body["channel"] = channel
    return body


class SlackNotifier:
    """Posts to one Slack incoming webhook; Slack answers 200 ``ok``, anything else is retried."""

    pages = False

    def __init__(self, name: str, webhook_url: str, channel: str | None, timeout_s: float) -> None:
        self.name = name
        self._url = webhook_url
        self.channel = channel
        self.http = HttpClient(name, timeout_s)

    @property
    def _display(self) -> str:
        # The webhook URL is a credential: name only its host in errors and logs.
        parts = urlsplit(self._url)
        return f"{parts.scheme}://{parts.netloc}/... (Slack webhook)"

    async def send(self, payload: EscalationPayload, dedup_key: str) -> None:
        await self.http.request(
            "POST", self._url, slack_message(payload, dedup_key, self.channel), display=self._display
        )

    async def resolve(self, payload: EscalationPayload, dedup_key: str) -> None:
        await self.http.request(
            "POST", self._url, slack_resolved(payload, self.channel), display=self._display
        )

    async def close(self) -> None:
        await self.http.close()
