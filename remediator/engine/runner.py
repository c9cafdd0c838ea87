"""Walks a policy's ladder for one incident: diagnose, act, verify, next step, escalate.

One asyncio task per open incident. Every attempt is recorded as started before it runs and finished after,
so a crash leaves a visible "started" row that ``resume`` reconciles by verification, never by acting again.
A resolved alert never interrupts an action mid-flight; it cancels the steps that have not started.

Each ladder task carries the fencing token of its lease (domain/fencing.py): every write it makes is refused
once another replica took the incident over, and immediately before every backend call it checks, in the
store, that it still holds the lease for long enough, and that the policy still admits the target
(docs/safety.md, invariants A1 and F1-F3). Those checks, and the call with its retries, are engine/attempts.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from remediator.actions.base import Action, Probe, ProbeResult
from remediator.domain.clock import Clock
from remediator.domain.fencing import Fence, current_fence
from remediator.domain.incidents import Incident
from remediator.domain.policies import Policy, Step
from remediator.engine.attempts import Attempts
from remediator.engine.attempts import RetryPolicy as RetryPolicy
from remediator.engine.escalate import Escalator
from remediator.engine.gate import Gate, backend_key, target_key
from remediator.errors import LeaseLost
from remediator.escalation.routing import priority_of, quiet
from remediator.guards.refusal import Refusal
from remediator.metrics import Metrics
from remediator.store.base import Store

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActResult:
    """How one act step ended: recovered, failed (why), or refused by a guard."""

    recovered: bool = False
    failure: str = ""
    refusal: Refusal | None = None


@dataclass(frozen=True)
class ResumePoint:
    """Where a ladder picks up after a restart of the daemon."""

    index: int = 0
    attempts_done: int = 0
    verify_first: bool = False


class Runner:
    """Owns the ladder tasks of open incidents."""

    def __init__(
        self,
        store: Store,
        actions: Mapping[str, Action],
        probes: Mapping[str, Probe],
        gate: Gate,
        escalator: Escalator,
        metrics: Metrics,
        clock: Clock,
        retry: RetryPolicy | None = None,
        poll_s: float = 1.0,
        lease_s: float = 15.0,
        call_timeout_s: float = 30.0,
        host_timeouts: Mapping[str, float] | None = None,
    ) -> None:
        self.store = store
        self.actions = actions
        self.probes = probes
        self.gate = gate
        self.escalator = escalator
        self.metrics = metrics
        self.clock = clock
        self.poll_s = poll_s
        self._attempts = Attempts(
            store,
            actions,
            escalator,
            metrics,
            clock,
            retry or RetryPolicy(),
            lease_s,
            call_timeout_s,
            host_timeouts or {},
        )
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._fences: dict[int, Fence] = {}
        self._policy_of: dict[int, str] = {}  # incident -> the name of the policy its ladder runs
        self._orphaned: dict[int, str] = {}  # incident -> why its policy is gone (a reload removed it)
        self._resolved: dict[int, asyncio.Event] = {}

    @property
    def running(self) -> int:
        return len(self._tasks)

    def incident_ids(self) -> list[int]:
        return sorted(self._tasks)

    def fences(self) -> list[Fence]:
        """The leases the running ladders hold (the keeper renews exactly these)."""
        return [self._fences[i] for i in sorted(self._tasks) if i in self._fences]

    def abandon(self, incident_id: int) -> None:
        """Another replica holds the lease now: stop here without touching the incident."""
        task = self._tasks.get(incident_id)
        if task is not None:
            task.cancel()

    def start(self, incident: Incident, policy: Policy, *, reconcile: bool = False) -> None:
        """Run the incident's ladder in its own task, under the lease ``incident`` was granted with;
        ``reconcile``: taken over (or resumed after a restart), so first settle what the store says ran."""
        if incident.id in self._tasks:
            return
        if incident.status != "active":
            # Only an active incident has a ladder: an escalated one (a refused target among them) belongs
            # to a human, a waiting one already ran its ladder (docs/safety.md, A2).
            logger.error(
                "incident %d is %s: no ladder runs for it",
                incident.id,
                incident.status,
                extra=incident.log_fields,
            )
            return
        self._resolved[incident.id] = asyncio.Event()
        self._fences[incident.id] = Fence(incident.id, incident.lease_owner, incident.lease_epoch)
        self._policy_of[incident.id] = policy.name
        # A context of its own: the fence set in it is seen by this ladder's writes and by nothing else.
        task = asyncio.create_task(
            self._guarded(incident, policy, reconcile),
            name=f"incident-{incident.id}",
            context=contextvars.Context(),
        )
        self._tasks[incident.id] = task
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        incident_id = next((i for i, t in self._tasks.items() if t is task), None)
        if incident_id is not None:
            del self._tasks[incident_id]
            self._resolved.pop(incident_id, None)
            self._fences.pop(incident_id, None)
            self._policy_of.pop(incident_id, None)
            self._orphaned.pop(incident_id, None)

    def policies_removed(self, names: set[str], why: str) -> list[int]:
        """A reload removed these policies: each running ladder of one of them finishes its current step (its
        policy object stays in force for it until then) and escalates with ``why``; the incidents affected."""
        hit = sorted(i for i, name in self._policy_of.items() if name in names)
        for incident_id in hit:
            self._orphaned[incident_id] = f"{why}: policy {self._policy_of[incident_id]!r} was removed"
        return hit

    def resolved(self, incident_id: int) -> None:
        """The incident's alerts resolved: verifications succeed, steps not yet started are skipped."""
        event = self._resolved.get(incident_id)
        if event is not None:
            event.set()

    async def _guarded(self, incident: Incident, policy: Policy, reconcile: bool) -> None:
        current_fence.set(self._fences[incident.id])
        try:
            resume = await self._reconcile(incident) if reconcile else ResumePoint()
            await self._ladder(incident, policy, resume)
        except asyncio.CancelledError:
            raise
        except LeaseLost as exc:
            # Another replica holds the incident now: it reconciles whatever this one left half done.
            self.metrics.lease_lost.labels("incident").inc()
            logger.warning(
                "incident %d: %s; this replica stops working on it",
                incident.id,
                exc,
                extra=incident.log_fields,
            )
        except Exception:
            # A bug or a store outage must not kill the daemon; the incident stays open and is resumed at start.
            logger.exception(
                "ladder of incident %d stopped by an unexpected error", incident.id, extra=incident.log_fields
            )

    async def _ladder(self, incident: Incident, policy: Policy, resume: ResumePoint) -> None:
        resolved = self._resolved[incident.id]
        escalated = False
        last_failure = ""
        for index in range(resume.index, len(policy.steps)):
            step = policy.steps[index]
            if resolved.is_set():
                await self._skip_rest(incident, policy, index)
                return
            if incident.id in self._orphaned:
                # The step that was running finished; the policy is gone, so a person decides the rest.
                await self._escalate_now(incident, policy, index, self._orphaned[incident.id])
                return
            if step.kind == "escalate":
                reason = last_failure or "the policy's ladder reached its escalation step"
                if await self.gate.control.mode(policy) == "shadow":
                    await self._shadow(
                        incident, policy, step, f"would have escalated to {step.name}: {reason}"
                    )
                else:
                    # Steps after it still run (a person is told, and automation goes on): the incident
                    # stays active, so its lease still holds for them; the last escalation hands it over.
                    last = all(s.kind == "escalate" for s in policy.steps[index + 1 :])
                    await self.escalator.escalate(incident, policy, step.name, index, reason, hand_over=last)
                    escalated = last
            elif step.kind == "diagnose":
                outcome = await self._attempts.run(incident, policy, step, index, attempt=1)
                if step.must_pass and not outcome.ok:
                    # A check that must pass before acting did not (or could not run): nothing after it runs.
                    if resolved.is_set():
                        await self._skip_rest(incident, policy, index + 1)
                        return
                    reason = (
                        f"{step.name} must pass before the steps after it, and it failed: {outcome.detail}"
                    )
                    if await self.gate.control.mode(policy) == "shadow":
                        await self._shadow(
                            incident, policy, step, f"would have stopped and escalated: {reason}"
                        )
                        how = "shadow mode: a must-pass diagnosis failed; waiting for the alerts to resolve"
                        await self.store.set_status(incident.id, "waiting", how, self.clock())
                    else:
                        await self._escalate_now(incident, policy, index, reason)
                    return
            else:
                first = resume.attempts_done + 1 if index == resume.index else 1
                verify_first = resume.verify_first and index == resume.index
                result = await self._act(incident, policy, step, index, first, verify_first)
                if result.recovered:
                    if not resolved.is_set():
                        # Recovered, but its alerts have not resolved yet: open, with no ladder to claim.
                        how = f"recovered after {step.name}; waiting for the alerts to resolve"
                        await self.store.set_status(incident.id, "waiting", how, self.clock())
                    return
                last_failure = result.failure
                if result.refusal is not None and result.refusal.reason not in ("dry_run", "shadow"):
                    # A guard said no: a human decides now, rather than the ladder waiting or trying harder.
                    await self._escalate_now(incident, policy, index, str(result.refusal))
                    return
        if resolved.is_set() or escalated:
            return
        if await self.gate.control.mode(policy) == "shadow":
            # Nothing acted and nobody was paged; the ladder is over all the same: never claimed and run again.
            how = "shadow mode: the ladder ran without acting; waiting for the alerts to resolve"
            await self.store.set_status(incident.id, "waiting", how, self.clock())
            return
        reason = last_failure or "the policy's ladder ran out without recovery"
        await self.escalator.escalate(incident, policy, "log", len(policy.steps), reason)

    async def _escalate_now(self, incident: Incident, policy: Policy, index: int, reason: str) -> None:
        notifier = policy.escalation_target(index)
        await self.escalator.escalate(incident, policy, notifier, index, reason)

    async def _act(
        self, incident: Incident, policy: Policy, step: Step, index: int, first: int, verify_first: bool
    ) -> ActResult:
        """Attempts of one act step, each under the target's lock and through the gate."""
        resolved = self._resolved[incident.id]
        action = self.actions[step.name]
        key = target_key(policy, incident)
        failure = ""
        for attempt in range(first, step.attempts + 1):
            if resolved.is_set():
                return ActResult(recovered=True)
            if not (verify_first and attempt == first):
                if await self.gate.control.mode(policy) == "shadow":
                    shadow = await self._shadow(
                        incident, policy, step, f"would have run {step.name} on {incident.target}"
                    )
                    return ActResult(failure=str(shadow), refusal=shadow)
                refusal = await self._preflight(incident, policy, step, index)
                if refusal is not None:
                    await self.gate.refuse(incident, policy, step, refusal)
                    return ActResult(failure=str(refusal), refusal=refusal)
                if resolved.is_set():  # the alert resolved while a human or the floor was deciding
                    return ActResult(recovered=True)
            async with self.gate.locks.hold(key, policy.limits.lock_wait_s) as held:
                if not held:
                    locked = Refusal(
                        "locked", f"another step held {key} for over {policy.limits.lock_wait_s:g}s"
                    )
                    await self.gate.refuse(incident, policy, step, locked)
                    return ActResult(failure=str(locked), refusal=locked)
                if not (verify_first and attempt == first):
                    # Check and record under one lock, so concurrent ladders cannot all pass a limit that
                    # only one of them may use (the count is read from the steps it records).
                    async with self.gate.admission():
                        refusal = await self.gate.check(incident, policy, step, action.backend)
                        if refusal is not None:
                            return ActResult(failure=str(refusal), refusal=refusal)
                        step_id = await self.store.step_started(
                            incident.id, index, step.kind, step.name, attempt, self.clock()
                        )
                        self._attempts.busy.add(incident.id)  # from here on, a shutdown waits for this action
                    outcome = await self._attempts.run(incident, policy, step, index, attempt, step_id)
                    # The backend answered unless the error was temporary; the target failed unless ok.
                    await self.gate.circuits.record(
                        {backend_key(action.backend, incident): outcome.kind != "temporary", key: outcome.ok}
                    )
                    if not outcome.ok:
                        failure = f"{step.name} attempt {attempt}/{step.attempts} failed ({outcome.kind}): {outcome.detail}"
                        if outcome.kind == "permanent":
                            return ActResult(failure=failure)
                        continue
                if await self._verify(incident, policy, step, attempt):
                    return ActResult(recovered=True)
            failure = (
                f"{step.name} attempt {attempt}/{step.attempts} ran, but the system did not recover within "
                f"{step.verify.window_s if step.verify else 0:g}s"
            )
        return ActResult(failure=failure)

    async def _shadow(self, incident: Incident, policy: Policy, step: Step, detail: str) -> Refusal:
        refusal = Refusal("shadow", f"shadow mode: {detail}")
        await self.gate.refuse(incident, policy, step, refusal)
        return refusal

    async def _preflight(self, incident: Incident, policy: Policy, step: Step, index: int) -> Refusal | None:
        """What must hold before an action, besides the limits: a human's yes, and the healthy floor."""
        if step.approval is not None and not await self._approved(incident, policy, step, index):
            return Refusal("approval_denied", f"{step.name} on {incident.target} was not approved")
        floor = policy.healthy_floor
        if floor is None:
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + floor.hold_s
        said_at: tuple[str, float] | None = None
        while True:
            result = await self._probe("prometheus", floor.prometheus)
            if result.healthy is True:
                return None
            said_at = self._check_said(incident, f"healthy floor: {result.detail}", said_at)
            if loop.time() >= deadline or self._resolved[incident.id].is_set():
                # missing data is never read as healthy: no series, or no Prometheus, holds the action too
                state = "cannot be evaluated" if result.healthy is None else "does not hold"
                return Refusal(
                    "healthy_floor", f"healthy floor {state} ({result.detail}); held {floor.hold_s:g}s"
                )
            await asyncio.sleep(min(floor.interval_s, max(0.0, deadline - loop.time())))

    async def _probe(self, kind: str, spec: object) -> ProbeResult:
        probe = self.probes.get(kind)
        if probe is None:
            return ProbeResult(None, f"no {kind} configured")
        return await probe.check(spec)

    async def _approved(self, incident: Incident, policy: Policy, step: Step, index: int) -> bool:
        approval = step.approval
        assert approval is not None
        approvals = self.gate.approvals
        request = await approvals.request(incident, step.name, approval.timeout_s, approval.on_timeout)
        await self.escalator.request_approval(
            incident, policy, index, step.name, approval.timeout_s, request.requested_at, approval.on_timeout
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + approval.timeout_s
        while loop.time() < deadline and not self._resolved[incident.id].is_set():
            answer = await approvals.get(incident.id)
            if answer is not None and answer.state != "pending":
                return answer.state == "approved"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._resolved[incident.id].wait(), min(self.poll_s, deadline - loop.time())
                )
        proceed = approval.on_timeout == "proceed"
        by = f"timeout after {approval.timeout_s:g}s"
        if await approvals.decide(incident.id, proceed, by=by, requested_at=request.requested_at):
            return proceed
        # A person answered at the very moment it timed out: their answer stands.
        answer = await approvals.get(incident.id)
        return answer is not None and answer.state == "approved"

    def _check_said(
        self, incident: Incident, how: str, said: tuple[str, float] | None, every_s: float = 10.0
    ) -> tuple[str, float] | None:
        """Say in the log why a check does not hold yet (a Prometheus that is not there, a 503): at once, then
        when the reason changes, else at most every ``every_s``. A check failing for a whole window was silent."""
        now = time.monotonic()
        if said is not None and said[0] == how and now - said[1] < every_s:
            return said
        logger.warning(
            "incident %d: check does not hold yet: %s", incident.id, how, extra=incident.log_fields
        )
        return (how, now)

    async def _verify(self, incident: Incident, policy: Policy, step: Step, attempt: int) -> bool:
        """Wait for the alert to resolve or for every configured check to hold, within the step's window."""
        verify = step.verify
        if verify is None:  # the schema requires verify on act steps; kept for type narrowing
            return False
        resolved = self._resolved[incident.id]
        checks = [
            (kind, spec) for kind, spec in (("http", verify.http), ("prometheus", verify.prometheus)) if spec
        ]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + verify.window_s
        recovered, how = False, ""
        said_at: tuple[str, float] | None = None
        while True:
            if resolved.is_set():
                recovered, how = True, "alert resolved"
                break
            if checks:
                results = [await self._probe(kind, spec) for kind, spec in checks]
                how = "; ".join(f"{kind}: {r.detail}" for (kind, _), r in zip(checks, results, strict=True))
                if all(r.healthy is True for r in results):
                    recovered = True
                    break
                said_at = self._check_said(incident, how, said_at)
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    resolved.wait(), min(verify.interval_s, remaining) if checks else remaining
                )
        self.metrics.verifications.labels(policy.name, "recovered" if recovered else "not_recovered").inc()
        if recovered:
            self.metrics.recoveries.labels(policy.name, step.name).inc()
            if not quiet(priority_of(incident.labels, self.escalator.routing)):
                self.metrics.pages_avoided.labels(policy.name).inc()
        (logger.info if recovered else logger.warning)(
            "incident %d: %s attempt %d %s (%s)",
            incident.id,
            step.name,
            attempt,
            "recovered" if recovered else f"did not recover within {verify.window_s:g}s",
            how or "no check",
            extra=incident.log_fields,
        )
        await self.store.audit(
            incident.id,
            "verified" if recovered else "not_recovered",
            {"step": step.name, "attempt": attempt, "within_s": verify.window_s, "evidence": how},
            self.clock(),
        )
        return recovered

    async def _skip_rest(self, incident: Incident, policy: Policy, index: int) -> None:
        skipped = [s.name for s in policy.steps[index:]]
        await self.store.audit(
            incident.id, "steps_cancelled", {"reason": "alert resolved", "steps": skipped}, self.clock()
        )

    async def resume(self, incident: Incident, policy: Policy) -> None:
        """Pick up an active incident after a restart or a takeover; an interrupted act is reconciled by its
        verification. The reconciliation runs in the ladder's task, under the new lease's fence."""
        self.start(incident, policy, reconcile=True)

    async def _reconcile(self, incident: Incident) -> ResumePoint:
        steps = await self.store.steps(incident.id)
        if not steps:
            return ResumePoint()
        last = steps[-1]
        for record in steps:
            if record.status == "started":
                await self.store.step_finished(
                    record.id, "interrupted", "the daemon stopped mid-step", self.clock()
                )
        attempts_done = sum(1 for s in steps if s.index == last.index)
        if last.kind == "act":
            resume = ResumePoint(index=last.index, attempts_done=attempts_done - 1, verify_first=True)
        elif last.kind == "diagnose" and last.status != "ok":
            # Interrupted or failed: run the (read-only) diagnosis again, so a must-pass check that failed
            # is never skipped on the way to the act after it.
            resume = ResumePoint(index=last.index)
        else:
            resume = ResumePoint(index=last.index + 1)
        await self.store.audit(
            incident.id, "resumed", {"index": resume.index, "verify_first": resume.verify_first}, self.clock()
        )
        return resume

    async def drain(self, grace_s: float) -> None:
        """Stop the ladders once no action is running (or ``grace_s`` passed): a running action is let finish,
        a waiting ladder (verification, backoff) is cancelled. The next start resumes them from the store."""
        logger.info(
            "draining: %d ladders, %d with an action running", len(self._tasks), len(self._attempts.busy)
        )
        if self._attempts.busy:
            self._attempts.idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._attempts.idle.wait(), grace_s)
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
