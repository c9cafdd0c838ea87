"""Human approval of a step: a pending request per incident, answered by a person (the CLI, the API, the
one-click link in the escalation) or by its timeout, whichever comes first.

The request is a typed record kept in the store, so every replica sees it and the answer survives a restart.
An answer is a compare-and-set on the record: a link clicked at the moment the request times out, or two
replicas answering, cannot both win (the loser is told there is nothing pending). The runner asks and waits
(engine/runner.py); the escalator sends the request with its links (engine/escalate.py); the page behind the
link is server/approval_page.py.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from typing import Literal

from remediator.domain.clock import Clock
from remediator.domain.incidents import Incident
from remediator.store.base import Store

logger = logging.getLogger(__name__)

ApprovalState = Literal["pending", "approved", "denied"]


@dataclass(frozen=True)
class ApprovalRequest:
    """One request: the step that waits, when it was asked (which names it: its link is signed over it), and
    until when; then who answered, how, and when."""

    incident_id: int
    step: str
    requested_at: float
    expires_at: float
    state: ApprovalState = "pending"
    by: str = ""
    decided_at: float | None = None

    def open_at(self, now: float) -> bool:
        """Still waiting for an answer at ``now``."""
        return self.state == "pending" and now < self.expires_at

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, incident_id: int, raw: str) -> ApprovalRequest | None:
        """The stored record, or None when it is not one this code could have written (a missing field, a
        non-finite time never makes a link valid)."""
        try:
            data = json.loads(raw)
            request = cls(
                incident_id=incident_id,
                step=str(data["step"]),
                requested_at=float(data["requested_at"]),
                expires_at=float(data["expires_at"]),
                state=data.get("state", "pending"),
                by=str(data.get("by", "")),
                decided_at=None if data.get("decided_at") is None else float(data["decided_at"]),
            )
        except (KeyError, TypeError, ValueError, json.JSONDecodeError):
            return None
        finite = math.isfinite(request.requested_at) and math.isfinite(request.expires_at)
        return request if finite and request.state in ("pending", "approved", "denied") else None


def _key(incident_id: int) -> str:
    return f"approval:{incident_id}"


class Approvals:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    async def request(self, incident: Incident, step: str, timeout_s: float) -> ApprovalRequest:
        """Record a pending request (replacing an answered or expired one)."""
        now = self.clock()
        request = ApprovalRequest(incident.id, step, requested_at=now, expires_at=now + timeout_s)
        # The audit first: it is fenced by the incident's lease, so a replica that lost it stops here.
        await self.store.audit(incident.id, "approval_requested", {"step": step, "timeout_s": timeout_s}, now)
        await self.store.control_set(_key(incident.id), request.to_json(), now)
        logger.warning(
            "incident %d: %s waits for approval (%gs)",
            incident.id,
            step,
            timeout_s,
            extra=incident.log_fields,
        )
        return request

    async def get(self, incident_id: int) -> ApprovalRequest | None:
        raw = await self.store.control_get(_key(incident_id))
        return None if raw is None else ApprovalRequest.from_json(incident_id, raw)

    async def decide(
        self, incident_id: int, approve: bool, by: str, requested_at: float | None = None
    ) -> bool:
        """Answer the incident's pending request; False when none is pending (or another answer won).
        ``requested_at``: only that request (a ladder answering its own timeout must never answer the request
        of the replica that took the incident over meanwhile)."""
        raw = await self.store.control_get(_key(incident_id))
        current = None if raw is None else ApprovalRequest.from_json(incident_id, raw)
        if raw is None or current is None or current.state != "pending":
            return False
        if requested_at is not None and current.requested_at != requested_at:
            return False
        now = self.clock()
        state: ApprovalState = "approved" if approve else "denied"
        decided = dataclasses.replace(current, state=state, by=by, decided_at=now)
        if not await self.store.control_swap(_key(incident_id), raw, decided.to_json(), now):
            return False
        await self.store.audit(incident_id, state, {"step": current.step, "by": by}, now)
        logger.warning(
            "incident %d: %s %s by %s", incident_id, current.step, state, by, extra={"incident": incident_id}
        )
        return True
