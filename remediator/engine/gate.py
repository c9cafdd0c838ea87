"""The gate every action passes: kill switch, dry-run, flapping, cooldown, rate limit, budget, breakers.

It reads the history from the store (so limits survive restarts and are shared by replicas), asks the pure
guards in ``remediator.guards``, and records every refusal as an audit record and a metric: never a silent drop.
"""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager

from remediator.domain.clock import Clock
from remediator.domain.incidents import Incident
from remediator.domain.policies import DOCKER_KINDS, Policy, Step
from remediator.engine.approvals import Approvals
from remediator.engine.breakers import Breakers
from remediator.engine.control import Control
from remediator.guards import limits
from remediator.guards.breaker import Breaker, BreakerConfig
from remediator.guards.locks import TargetLocks
from remediator.guards.refusal import Refusal
from remediator.metrics import Metrics
from remediator.settings import DEFAULT_DOCKER_HOST, GuardSettings
from remediator.store.base import Store

logger = logging.getLogger(__name__)


def target_key(policy: Policy, incident: Incident) -> str:
    """The target's lock and breaker name: ``container:sms-db``, or ``container:web-1/sms-db`` on a host other
    than ``default`` (the same name on two hosts is two targets)."""
    if incident.host == DEFAULT_DOCKER_HOST or policy.target.kind not in DOCKER_KINDS:
        return f"{policy.target.kind}:{incident.target}"
    return f"{policy.target.kind}:{incident.host}/{incident.target}"


def backend_key(backend: str, incident: Incident) -> str:
    """The backend's breaker name: one per Docker host (``backend:docker:web-1``), one per other backend."""
    if backend == "docker":
        return f"backend:docker:{incident.host}"
    return f"backend:{backend}"


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
        self.control = Control(store, clock)
        """The kill switch the gate checks first, and each policy's mode."""
        self.approvals = Approvals(store, clock)
        """Requests for a person's yes, which the runner waits for before a step that needs one."""
        """Breakers per backend and per target here; the outbox shares the same object for its notifiers."""

    async def load(self) -> None:
        """At start: the breakers as the last run (or another replica) left them."""
        await self.circuits.load()

    def admission(self) -> AbstractAsyncContextManager[None]:
        """Held from a check until the admitted action's start is recorded (the limits count recorded starts);
        the store makes it hold across replicas."""
        return self.store.admission()

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
        logger.warning(
            "incident %d: %s refused (%s): %s",
            incident.id,
            step.name,
            refusal.reason,
            refusal.detail,
            extra=incident.log_fields,
        )
        await self.store.audit(
            incident.id,
            "refused" if refusal.reason != "dry_run" else "dry_run",
            {"step": step.name, "reason": refusal.reason, "detail": refusal.detail},
            self.clock(),
        )

    async def _decide(self, incident: Incident, policy: Policy, step: Step, backend: str) -> Refusal | None:
        if await self.control.paused():
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
            since_cooldown=now - lim.cooldown_s,
            host=incident.host,
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
            or await self.circuits.admit(backend_key(backend, incident), target_key(policy, incident))
        )

    # -- breakers -----------------------------------------------------------------------------------------

    @property
    def breakers(self) -> dict[str, Breaker]:
        """The breakers that are not idle (for the status API)."""
        return self.circuits.snapshot()
