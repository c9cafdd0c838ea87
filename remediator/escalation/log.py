"""The notifier that always works: writes the escalation to the log at ERROR level.

Policies that escalate to a notifier that is not configured fall back to it, so an escalation is never dropped
on the floor of a fresh install; it is also in the store's outbox and audit trail.
"""

from __future__ import annotations

import json
import logging

from remediator.domain.story import EscalationPayload

logger = logging.getLogger(__name__)


class LogNotifier:
    name = "log"

    async def send(self, payload: EscalationPayload, dedup_key: str) -> None:
        if "approval_url" in payload:  # it approves without a token: not for whoever reads the logs
            payload = {**payload, "approval_url": "(withheld from the log; remediator approve ID)"}
        logger.error("ESCALATION %s %s", dedup_key, json.dumps(payload, sort_keys=True))

    async def close(self) -> None:
        return None
