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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from remediator.domain.clock import Clock
from remediator.domain.incidents import AuditRecord, Incident
from remediator.signing import approval_link_valid
from remediator.store.base import Store

logger = logging.getLogger(__name__)

ApprovalState = Literal["pending", "approved", "denied"]
OnTimeout = Literal["deny", "proceed"]


@dataclass(frozen=True)
class ApprovalRequest:
    """One request: the step that waits, when it was asked (which names it: its link is signed over it), until
    when, and what silence means (``on_timeout``; None in a record written before it was kept); then who
    answered, how, and when."""

    incident_id: int
    step: str
    requested_at: float
    expires_at: float
    state: ApprovalState = "pending"
    by: str = ""
    decided_at: float | None = None
    on_timeout: OnTimeout | None = None

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
                on_timeout=data.get("on_timeout"),
            )
        except (KeyError, TypeError, ValueError, json.JSONDecodeError):
            return None
        finite = math.isfinite(request.requested_at) and math.isfinite(request.expires_at)
        known = request.state in ("pending", "approved", "denied") and request.on_timeout in (
            None,
            "deny",
            "proceed",
        )
        return request if finite and known else None


def _key(incident_id: int) -> str:
    return f"approval:{incident_id}"


class Approvals:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    async def request(
        self, incident: Incident, step: str, timeout_s: float, on_timeout: OnTimeout | None = None
    ) -> ApprovalRequest:
        """Record a pending request (replacing an answered or expired one)."""
        now = self.clock()
        request = ApprovalRequest(
            incident.id, step, requested_at=now, expires_at=now + timeout_s, on_timeout=on_timeout
        )
        # The audit first: it is fenced by the incident's lease, so a replica that lost it stops here. It keeps
        # what a link to this request needs once a later request replaced the record (for_link).
        detail = {"step": step, "timeout_s": timeout_s, "requested_at": now, "on_timeout": on_timeout}
        await self.store.audit(incident.id, "approval_requested", detail, now)
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
        detail = {"step": current.step, "by": by, "requested_at": current.requested_at}
        await self.store.audit(incident_id, state, detail, now)
        logger.warning(
            "incident %d: %s %s by %s", incident_id, current.step, state, by, extra={"incident": incident_id}
        )
        return True

    async def for_link(self, incident_id: int, key: str | None, signature: str) -> ApprovalRequest | None:
        """The request a link with ``signature`` was made for, as it stands (pending, answered, or expired), or
        None when the link is not one we made for this incident. A request that a later one replaced is read
        back from the audit trail, with its answer, so a second responder with an old link learns what became
        of it."""
        current = await self.get(incident_id)
        if current is not None and approval_link_valid(key, incident_id, current.requested_at, signature):
            return current
        if not key or not signature:
            return None
        trail = await self.store.audit_trail(incident_id, kinds=("approval_requested", "approved", "denied"))
        for i, record in enumerate(trail):
            if record.kind != "approval_requested":
                continue
            requested_at = _number(record.detail.get("requested_at"), record.at)
            if approval_link_valid(key, incident_id, requested_at, signature):
                return _from_trail(incident_id, record, requested_at, trail[i + 1 :])
        return None


def _number(value: object, default: float) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def _from_trail(
    incident_id: int, asked: AuditRecord, requested_at: float, later: Sequence[AuditRecord]
) -> ApprovalRequest:
    """An earlier request as its audit records tell it: asked, then answered by the first answer that names it
    (an answer recorded before answers named their request is taken when it comes before the next request)."""
    on_timeout = asked.detail.get("on_timeout")
    request = ApprovalRequest(
        incident_id=incident_id,
        step=str(asked.detail.get("step", "")),
        requested_at=requested_at,
        expires_at=requested_at + _number(asked.detail.get("timeout_s"), 0.0),
        on_timeout=on_timeout if on_timeout in ("deny", "proceed") else None,
    )
    for record in later:
        if record.kind == "approval_requested":
            break
        named = record.detail.get("requested_at")
        if named is None or _number(named, math.nan) == requested_at:
            state: ApprovalState = "approved" if record.kind == "approved" else "denied"
            return dataclasses.replace(
                request, state=state, by=str(record.detail.get("by", "")), decided_at=record.at
            )
    return request
