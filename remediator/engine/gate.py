"""The gate every action passes: kill switch, dry-run, flapping, cooldown, rate limit, budget, breakers.

It reads the history from the store (so limits survive restarts and are shared by replicas), asks the pure
guards in ``remediator.guards``, and records every refusal as an audit record and a metric: never a silent drop.
"""

from __future__ import annotations

import json
import logging
from contextlib import AbstractAsyncContextManager
from typing import Any

from remediator.domain.clock import Clock
from remediator.domain.incidents import Incident
from remediator.domain.policies import Policy, Step
from remediator.engine.breakers import Breakers
from remediator.guards import limits
from remediator.guards.breaker import Breaker, BreakerConfig
from remediator.guards.locks import TargetLocks
from remediator.guards.refusal import Refusal
from remediator.metrics import Metrics
from remediator.settings import GuardSettings
from remediator.store.base import Store

logger = logging.getLogger(__name__)

PAUSED_KEY = "paused"


def target_key(policy: Policy, target: str) -> str:
    return f"{policy.target.kind}:{target}"


class Gate:
    """Decides, for one action about to run, whether it may."""

    def __init__(self, store: Store, settings: GuardSettings, metrics: Metrics, clock: Clock) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.locks = TargetLocks()
        config = BreakerConfig(settings.breaker.failures, settings.breaker.window_s, settings.breaker.open_s)
        self.circuits = Breakers(store, config, metrics, clock)
        """Breakers per backend and per target here; the outbox shares the same object for its notifiers."""

    async def load(self) -> None:
        """At start: the breakers as the last run (or another replica) left them."""
        await self.circuits.load()

    def admission(self) -> AbstractAsyncContextManager[None]:
        """Held from a check until the admitted action's start is recorded (the limits count recorded starts);
        the store makes it hold across replicas."""
        return self.store.admission()

    # -- kill switch --------------------------------------------------------------------------------------

    async def paused(self) -> bool:
        return await self.store.control_get(PAUSED_KEY) == "1"

    async def set_paused(self, paused: bool, by: str) -> None:
        now = self.clock()
        await self.store.control_set(PAUSED_KEY, "1" if paused else "0", now)
        await self.store.audit(None, "paused" if paused else "resumed", {"by": by}, now)
        logger.warning("automation %s by %s", "PAUSED" if paused else "resumed", by)

    # -- shadow mode ----------------------------------------------------------------------------------------

    async def mode(self, policy: Policy) -> str:
        """``enforce`` or ``shadow``: the policy file's mode, unless promoted (or demoted) since."""
        return await self.store.control_get(f"policy_mode:{policy.name}") or policy.mode

    async def set_mode(self, policy: str, mode: str, by: str) -> None:
        now = self.clock()
        await self.store.control_set(f"policy_mode:{policy}", mode, now)
        await self.store.audit(None, "policy_mode", {"policy": policy, "mode": mode, "by": by}, now)
        logger.warning("policy %s is now %s (by %s)", policy, mode, by)

    # -- human approval -----------------------------------------------------------------------------------

    async def request_approval(self, incident: Incident, step: Step, timeout_s: float) -> float:
        """Record a pending approval; returns when it was requested, which names this request."""
        now = self.clock()
        state = {"state": "pending", "step": step.name, "requested_at": now, "expires_at": now + timeout_s}
        # The audit first: it is fenced by the incident's lease, so a replica that lost it stops here.
        await self.store.audit(
            incident.id, "approval_requested", {"step": step.name, "timeout_s": timeout_s}, now
        )
        await self.store.control_set(f"approval:{incident.id}", json.dumps(state), now)
        return now

    async def approval(self, incident_id: int) -> dict[str, Any] | None:
        raw = await self.store.control_get(f"approval:{incident_id}")
        return None if raw is None else dict(json.loads(raw))

    async def decide_approval(self, incident_id: int, approve: bool, by: str) -> bool:
        """Answer the incident's pending approval; False when none is pending."""
        current = await self.approval(incident_id)
        if current is None or current["state"] != "pending":
            return False
        now = self.clock()
        decided = {**current, "state": "approved" if approve else "denied", "by": by, "decided_at": now}
        await self.store.control_set(f"approval:{incident_id}", json.dumps(decided), now)
        await self.store.audit(incident_id, decided["state"], {"step": current["step"], "by": by}, now)
        return True

    # -- the decision -------------------------------------------------------------------------------------

    async def check(self, incident: Incident, policy: Policy, step: Step, backend: str) -> Refusal | None:
        """None when the action may run; otherwise the refusal, already recorded."""
        refusal = await self._decide(incident, policy, step, backend)
        if refusal is not None:
            await self.refuse(incident, policy, step, refusal)
        else:
            await self.store.audit(incident.id, "admitted", {"step": step.name}, self.clock())
        return refusal

    async def refuse(self, incident: Incident, policy: Policy, step: Step, refusal: Refusal) -> None:
        """Record a refusal: an audit record with the reason, and a metric labelled by it."""
        self.metrics.refusals.labels(policy.name, refusal.reason).inc()
        await self.store.audit(
            incident.id,
            "refused" if refusal.reason != "dry_run" else "dry_run",
            {"step": step.name, "reason": refusal.reason, "detail": refusal.detail},
            self.clock(),
        )

    async def _decide(self, incident: Incident, policy: Policy, step: Step, backend: str) -> Refusal | None:
        if await self.paused():
            return Refusal("paused", "automation is paused (remediator resume, or POST /api/resume)")
        if self.settings.dry_run or policy.dry_run:
            scope = "globally" if self.settings.dry_run else f"for policy {policy.name}"
            return Refusal("dry_run", f"dry-run {scope}: would have run {step.name} on {incident.target}")
        now = self.clock()
        lim = policy.limits
        history = await self.store.history(
            policy.name,
            incident.target,
            incident.id,
            since_target=now - lim.max_actions.window_s,
            since_budget=now - self.settings.budget_window_s,
            since_flap=now - lim.flapping.window_s,
        )
        return (
            limits.flapping(
                history.incidents_opened, lim.flapping.count, lim.flapping.window_s, incident.target
            )
            or limits.cooldown(history.last_other_action_at, now, lim.cooldown_s, incident.target)
            or limits.rate_limit(
                history.target_actions, lim.max_actions.count, lim.max_actions.window_s, incident.target
            )
            or limits.budget(history.all_actions, self.settings.budget_count, self.settings.budget_window_s)
            or await self.circuits.admit(f"backend:{backend}", target_key(policy, incident.target))
        )

    # -- breakers -----------------------------------------------------------------------------------------

    @property
    def breakers(self) -> dict[str, Breaker]:
        """The breakers that are not idle (for the status API)."""
        return self.circuits.snapshot()
