"""One attempt of a step's action, from its "started" record to its recorded result: the backend call, its
retries on temporary errors, and the last-moment checks immediately before each call.

A module of its own, apart from the ladder that decides what runs and when (engine/runner.py), because it is
the one place a backend call is made from: whatever path led to it (a new incident, a takeover, a resume, an
approval), the policy still admits the target and this replica still holds the incident's lease for as long
as the call may take, or nothing is sent (docs/safety.md, invariants A1 and F1-F3).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from remediator.actions.base import Action, Params
from remediator.domain.clock import Clock
from remediator.domain.fencing import call_deadline, call_guard, current_fence
from remediator.domain.incidents import Incident
from remediator.domain.outcomes import Outcome
from remediator.domain.policies import Policy, Step
from remediator.engine.escalate import Escalator
from remediator.errors import (
    LateCall,
    LeaseLost,
    PermanentActionError,
    StoreError,
    TargetRefused,
    TemporaryActionError,
)
from remediator.metrics import Metrics
from remediator.policy.matching import host_of
from remediator.store.base import Store

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """How often one attempt retries a backend's temporary errors before it counts as failed."""

    tries: int = 3
    initial_s: float = 0.2
    max_s: float = 2.0


class Attempts:
    """Runs the attempts of the runner's ladders, and knows which incidents have an action running."""

    def __init__(
        self,
        store: Store,
        actions: Mapping[str, Action],
        escalator: Escalator,
        metrics: Metrics,
        clock: Clock,
        retry: RetryPolicy,
        lease_s: float,
        call_timeout_s: float,
        host_timeouts: Mapping[str, float],
    ) -> None:
        self.store = store
        self.actions = actions
        self.escalator = escalator
        self.metrics = metrics
        self.clock = clock
        self.retry = retry
        self.lease_s = lease_s
        self.call_timeout_s = call_timeout_s
        """The longest a backend call may take besides its own ``timeout_s`` (the Docker client's timeout)."""
        self.host_timeouts = dict(host_timeouts)
        """Each Docker host's own call timeout: a slow host's long timeout must not stretch the leases (and so
        the takeover after a crash) of actions on the others."""
        self.busy: set[int] = set()
        """Incidents whose action is running right now: a drain lets them finish."""
        self.idle = asyncio.Event()
        """Set whenever ``busy`` empties, for the drain."""

    async def run(
        self,
        incident: Incident,
        policy: Policy,
        step: Step,
        index: int,
        attempt: int,
        step_id: int | None = None,
    ) -> Outcome:
        """Run one action attempt; ``step_id`` is given when the gate already recorded its start."""
        action = self.actions[step.name]
        params = action.params_model.model_validate(step.params)
        if step_id is None:
            step_id = await self.store.step_started(
                incident.id, index, step.kind, step.name, attempt, self.clock()
            )
        self.busy.add(incident.id)
        try:
            outcome = await self._run_action(incident, policy, step, action, params)
            # still busy: a shutdown must wait until the result is recorded, or the step looks interrupted
            try:
                await self.store.step_finished(
                    step_id, "ok" if outcome.ok else "failed", outcome.detail, self.clock()
                )
            except LeaseLost:
                # Never recorded as the step's result: the new holder has marked the step interrupted and
                # reconciles it by verification. Said here, so the late result is not silently lost.
                logger.warning(
                    "incident %d: %s on %s finished (%s) after this replica lost the lease; not recorded",
                    incident.id,
                    step.name,
                    incident.target,
                    outcome.kind,
                    extra=incident.log_fields,
                )
                raise
        finally:
            self.busy.discard(incident.id)
            if not self.busy:
                self.idle.set()
        self.metrics.actions.labels(policy.name, step.kind, step.name, outcome.kind, incident.host).inc()
        self.metrics.action_duration.labels(step.name).observe(outcome.duration_s)
        if step.kind == "act":
            # Recorded for graphs (Grafana annotations) through the outbox: never a reason to stop the ladder.
            try:
                await self.escalator.action_ran(
                    incident,
                    policy,
                    step_id,
                    index,
                    step.name,
                    attempt,
                    outcome.ok,
                    outcome.detail,
                    outcome.duration_s,
                )
            except StoreError as exc:
                logger.warning(
                    "incident %d: action not annotated: %s", incident.id, exc, extra=incident.log_fields
                )
        logger.info(
            "incident %d: %s %s on %s -> %s (%.3fs)",
            incident.id,
            step.kind,
            step.name,
            incident.target,
            outcome.kind,
            outcome.duration_s,
            extra=incident.log_fields,
        )
        return outcome

    async def _run_action(
        self, incident: Incident, policy: Policy, step: Step, action: Action, params: Params
    ) -> Outcome:
        """The action itself, retried on temporary errors; every exception but LeaseLost becomes an Outcome."""
        started = time.monotonic()
        try:
            async for retry in AsyncRetrying(
                stop=stop_after_attempt(self.retry.tries),
                wait=wait_exponential(multiplier=self.retry.initial_s, max=self.retry.max_s),
                retry=retry_if_exception_type(TemporaryActionError),
                reraise=True,
            ):
                with retry:
                    await self._last_moment(incident, policy, params, action.backend)
                    detail = await action.run(incident.target, params, host=incident.host)
            return Outcome("ok", detail, time.monotonic() - started)
        except (LeaseLost, StoreError):
            # Nothing was sent: not the action's failure. The ladder stops; the incident stays active, leased
            # to this replica, and is claimed and reconciled again once the store answers.
            raise
        except TemporaryActionError as exc:
            return Outcome("temporary", str(exc), time.monotonic() - started)
        except PermanentActionError as exc:
            return Outcome("permanent", str(exc), time.monotonic() - started)
        except Exception as exc:  # unknown errors count as permanent (docs/design.md, D8)
            logger.exception(
                "action %s on %s raised an unmapped error",
                step.name,
                incident.target,
                extra=incident.log_fields,
            )
            return Outcome("permanent", f"{type(exc).__name__}: {exc}", time.monotonic() - started)

    async def _last_moment(
        self, incident: Incident, policy: Policy, params: Params, backend: str = ""
    ) -> None:
        """Immediately before a backend call, whatever path led here (a new incident, a takeover, a resume, an
        approval): the policy admits the target (A1), and this replica holds the incident's lease with its
        token for at least as long as the call may take (F2). ``call_deadline`` lets a backend that sends from
        a thread drop a call whose thread was frozen past the lease (F3)."""
        if not policy.target.admits(incident.target):
            raise PermanentActionError(
                f"target {incident.target!r} is not admitted by policy {policy.name!r} (allow list or safe-name"
                " fence): no backend call names it"
            )
        try:
            # The host too, from the alert's own labels, as intake read it (the policy may have been reloaded).
            host = host_of(policy, incident.labels)
        except TargetRefused as exc:
            raise PermanentActionError(f"host {incident.host!r} is no longer admitted: {exc}") from exc
        if host != incident.host:
            raise PermanentActionError(
                f"policy {policy.name!r} now names host {host!r} for this alert, not {incident.host!r}: no backend"
                " call is made"
            )
        fence = current_fence.get()
        if fence is None:
            return  # a test rig driving an attempt directly; every ladder task has a fence
        call_s = (
            self.host_timeouts.get(incident.host, self.call_timeout_s)
            if backend == "docker"
            else self.call_timeout_s
        )
        timeout_s = float(getattr(params, "timeout_s", 0) or 0) + call_s

        async def confirm() -> float:
            asked, now = time.monotonic(), self.clock()
            await self.store.lease_confirm(fence, now, now + timeout_s + self.lease_s)
            # The lease now lasts the call's timeout plus a lease: a call that starts within a lease of the
            # confirmation (measured from before it, in case this process froze during it) ends while the lease
            # holds. 0.8: a margin for the clocks' granularity and the time to the socket.
            deadline = asked + 0.8 * self.lease_s
            if time.monotonic() > deadline:
                raise LateCall(f"incident {incident.id}: too long since the lease was confirmed to act now")
            return deadline

        call_deadline.set(await confirm())
        call_guard.set(confirm)
