"""Generic webhook notifier: POSTs the escalation JSON to a URL the team owns (a chat bridge, a ticket hook)."""

from __future__ import annotations

from remediator.domain.story import EscalationPayload
from remediator.escalation.http import HttpClient


class WebhookNotifier:
    """POST ``payload`` as JSON with an ``Idempotency-Key`` header; any 2xx is delivered.

    Only escalations are posted (the body is the payload documented in docs/escalation.md); resolutions are not.
    """

    def __init__(self, name: str, url: str, headers: dict[str, str], timeout_s: float) -> None:
        self.name = name
        self.url = url
        self.http = HttpClient(name, timeout_s, headers)

    async def send(self, payload: EscalationPayload, dedup_key: str) -> None:
        await self.http.request("POST", self.url, payload, headers={"Idempotency-Key": dedup_key})

    async def close(self) -> None:
        await self.http.close()
