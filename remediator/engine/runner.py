"""Walks a policy's ladder for one incident: diagnose, act, verify, next step, escalate.

One asyncio task per open incident. Every attempt is recorded as started before it runs and finished after,
so a crash leaves a visible "started" row that ``resume`` reconciles by verification, never by acting again.
A resolved alert never interrupts an action mid-flight; it cancels the steps that have not started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from remediator.actions.base import Action, Params, Probe, ProbeResult
from remediator.domain.clock import Clock
from remediator.domain.incidents import Incident
from remediator.domain.outcomes import Outcome
from remediator.domain.policies import Policy, Step
from remediator.engine.escalate import Escalator
from remediator.engine.gate import Gate, target_key
from remediator.errors import PermanentActionError, TemporaryActionError
from remediator.guards.refusal import Refusal
from remediator.metrics import Metrics
from remediator.store.base import Store

logger = logging.getLogger("remediator.runner")


@dataclass(frozen=True)
class RetryPolicy:
    """How often one attempt retries a backend's temporary errors before it counts as failed."""

    tries: int = 3
    initial_s: float = 0.2
    max_s: float = 2.0


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
    ) -> None:
        self.store = store
        self.actions = actions
        self.probes = probes
        self.gate = gate
        self.escalator = escalator
        self.metrics = metrics
        self.clock = clock
        self.retry = retry or RetryPolicy()
        self.poll_s = poll_s
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._busy: set[int] = set()  # incidents whose action is running right now
        self._idle = asyncio.Event()  # set whenever _busy empties, for drain
        self._resolved: dict[int, asyncio.Event] = {}

    @property
    def running(self) -> int:
        return len(self._tasks)

    def incident_ids(self) -> list[int]:
        return sorted(self._tasks)

    def abandon(self, incident_id: int) -> None:
        """Another replica holds the lease now: stop here without touching the incident."""
        task = self._tasks.get(incident_id)
        if task is not None:
            task.cancel()

    def start(self, incident: Incident, policy: Policy, resume: ResumePoint | None = None) -> None:
        if incident.id in self._tasks:
            return
        self._resolved[incident.id] = asyncio.Event()
        task = asyncio.create_task(
            self._guarded(incident, policy, resume or ResumePoint()), name=f"incident-{incident.id}"
        )
        self._tasks[incident.id] = task
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        incident_id = next((i for i, t in self._tasks.items() if t is task), None)
        if incident_id is not None:
            del self._tasks[incident_id]
            self._resolved.pop(incident_id, None)

    def resolved(self, incident_id: int) -> None:
        """The incident's alerts resolved: verifications succeed, steps not yet started are skipped."""
        event = self._resolved.get(incident_id)
        if event is not None:
            event.set()

    async def _guarded(self, incident: Incident, policy: Policy, resume: ResumePoint) -> None:
        try:
            await self._ladder(incident, policy, resume)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug or a store outage must not kill the daemon; the incident stays open and is resumed at start.
            logger.exception("ladder of incident %d stopped by an unexpected error", incident.id)

    async def _ladder(self, incident: Incident, policy: Policy, resume: ResumePoint) -> None:
        resolved = self._resolved[incident.id]
        escalated = False
        last_failure = ""
        for index in range(resume.index, len(policy.steps)):
            step = policy.steps[index]
            if resolved.is_set():
                await self._skip_rest(incident, policy, index)
                return
            if step.kind == "escalate":
                reason = last_failure or "the policy's ladder reached its escalation step"
                if await self.gate.mode(policy) == "shadow":
                    await self._shadow(
                        incident, policy, step, f"would have escalated to {step.name}: {reason}"
                    )
                else:
                    await self.escalator.escalate(incident, policy, step.name, index, reason)
                escalated = True
            elif step.kind == "diagnose":
                await self._attempt(incident, policy, step, index, attempt=1)
            else:
                first = resume.attempts_done + 1 if index == resume.index else 1
                verify_first = resume.verify_first and index == resume.index
                result = await self._act(incident, policy, step, index, first, verify_first)
                if result.recovered:
                    return
                last_failure = result.failure
                if result.refusal is not None and result.refusal.reason not in ("dry_run", "shadow"):
                    # A guard said no: a human decides now, rather than the ladder waiting or trying harder.
                    await self._escalate_now(incident, policy, index, str(result.refusal))
                    return
        if not resolved.is_set() and not escalated and await self.gate.mode(policy) != "shadow":
            reason = last_failure or "the policy's ladder ran out without recovery"
            await self.escalator.escalate(incident, policy, "log", len(policy.steps), reason)

    async def _escalate_now(self, incident: Incident, policy: Policy, index: int, reason: str) -> None:
        notifier = next((s.name for s in policy.steps[index:] if s.kind == "escalate"), None)
        notifier = notifier or next((s.name for s in policy.steps if s.kind == "escalate"), "log")
        await self.escalator.escalate(incident, policy, notifier, index, reason)

    async def _act(
        self, incident: Incident, policy: Policy, step: Step, index: int, first: int, verify_first: bool
    ) -> ActResult:
        """Attempts of one act step, each under the target's lock and through the gate."""
        resolved = self._resolved[incident.id]
        action = self.actions[step.name]
        key = target_key(policy, incident.target)
        failure = ""
        for attempt in range(first, step.attempts + 1):
            if resolved.is_set():
                return ActResult(recovered=True)
            if not (verify_first and attempt == first):
                if await self.gate.mode(policy) == "shadow":
                    shadow = await self._shadow(
                        incident, policy, step, f"would have run {step.name} on {incident.target}"
                    )
                    return ActResult(failure=str(shadow), refusal=shadow)
                refusal = await self._preflight(incident, policy, step)
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
                        self._busy.add(incident.id)  # from here on, a shutdown waits for this action
                    outcome = await self._attempt(incident, policy, step, index, attempt, step_id)
                    # The backend answered unless the error was temporary; the target failed unless ok.
                    await self.gate.record(
                        outcome.kind not in ("temporary", "timeout"), f"backend:{action.backend}"
                    )
                    await self.gate.record(outcome.ok, key)
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

    async def _preflight(self, incident: Incident, policy: Policy, step: Step) -> Refusal | None:
        """What must hold before an action, besides the limits: a human's yes, and the healthy floor."""
        if step.approval is not None and not await self._approved(incident, policy, step):
            return Refusal("approval_denied", f"{step.name} on {incident.target} was not approved")
        floor = policy.healthy_floor
        if floor is None:
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + floor.hold_s
        while True:
            result = await self._probe("prometheus", floor.prometheus)
            if result.healthy is True:
                return None
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

    async def _approved(self, incident: Incident, policy: Policy, step: Step) -> bool:
        approval = step.approval
        assert approval is not None
        requested_at = await self.gate.request_approval(incident, step, approval.timeout_s)
        await self.escalator.request_approval(
            incident, policy, policy.steps.index(step), step.name, approval.timeout_s, requested_at
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + approval.timeout_s
        while loop.time() < deadline and not self._resolved[incident.id].is_set():
            state = await self.gate.approval(incident.id)
            if state is not None and state["state"] != "pending":
                return bool(state["state"] == "approved")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._resolved[incident.id].wait(), min(self.poll_s, deadline - loop.time())
                )
        proceed = approval.on_timeout == "proceed"
        await self.gate.decide_approval(incident.id, proceed, by=f"timeout after {approval.timeout_s:g}s")
        return proceed

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
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    resolved.wait(), min(verify.interval_s, remaining) if checks else remaining
                )
        self.metrics.verifications.labels(policy.name, "recovered" if recovered else "not_recovered").inc()
        await self.store.audit(
            incident.id,
            "verified" if recovered else "not_recovered",
            {"step": step.name, "attempt": attempt, "within_s": verify.window_s, "evidence": how},
            self.clock(),
        )
        return recovered

    async def _resolved_elsewhere(self, incident_id: int) -> bool:
        """Another replica may have processed the resolution; the store is the shared truth."""
        current = await self.store.get_incident(incident_id)
        return current is not None and current.status == "resolved"

    async def _attempt(
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
        self._busy.add(incident.id)
        try:
            outcome = await self._run_action(incident, step, action, params)
            # still busy: a shutdown must wait until the result is recorded, or the step looks interrupted
            await self.store.step_finished(
                step_id, "ok" if outcome.ok else "failed", outcome.detail, self.clock()
            )
        finally:
            self._busy.discard(incident.id)
            if not self._busy:
                self._idle.set()
        self.metrics.actions.labels(policy.name, step.name, outcome.kind).inc()
        self.metrics.action_duration.labels(step.name).observe(outcome.duration_s)
        logger.info(
            "incident %d: %s %s on %s -> %s (%.3fs)",
            incident.id,
            step.kind,
            step.name,
            incident.target,
            outcome.kind,
            outcome.duration_s,
        )
        return outcome

    async def _run_action(self, incident: Incident, step: Step, action: Action, params: Params) -> Outcome:
        """The action itself, retried on temporary errors; every exception becomes an Outcome."""
        started = time.monotonic()
        try:
            async for retry in AsyncRetrying(
                stop=stop_after_attempt(self.retry.tries),
                wait=wait_exponential(multiplier=self.retry.initial_s, max=self.retry.max_s),
                retry=retry_if_exception_type(TemporaryActionError),
                reraise=True,
            ):
                with retry:
                    detail = await action.run(incident.target, params)
            return Outcome("ok", detail, time.monotonic() - started)
        except TemporaryActionError as exc:
            return Outcome("temporary", str(exc), time.monotonic() - started)
        except PermanentActionError as exc:
            return Outcome("permanent", str(exc), time.monotonic() - started)
        except Exception as exc:  # unknown errors count as permanent (ARCHITECTURE decision 8)
            logger.exception("action %s on %s raised an unmapped error", step.name, incident.target)
            return Outcome("permanent", f"{type(exc).__name__}: {exc}", time.monotonic() - started)

    async def _skip_rest(self, incident: Incident, policy: Policy, index: int) -> None:
        skipped = [s.name for s in policy.steps[index:]]
        await self.store.audit(
            incident.id, "steps_cancelled", {"reason": "alert resolved", "steps": skipped}, self.clock()
        )

    async def resume(self, incident: Incident, policy: Policy) -> None:
        """Pick up an active incident after a restart; an interrupted act is reconciled by its verification."""
        steps = await self.store.steps(incident.id)
        if not steps:
            self.start(incident, policy)
            return
        last = steps[-1]
        for record in steps:
            if record.status == "started":
                await self.store.step_finished(
                    record.id, "interrupted", "the daemon stopped mid-step", self.clock()
                )
        attempts_done = sum(1 for s in steps if s.index == last.index)
        if last.kind == "act":
            resume = ResumePoint(index=last.index, attempts_done=attempts_done - 1, verify_first=True)
        else:
            resume = ResumePoint(index=last.index + 1)
        await self.store.audit(
            incident.id, "resumed", {"index": resume.index, "verify_first": resume.verify_first}, self.clock()
        )
        self.start(incident, policy, resume)

    async def drain(self, grace_s: float) -> None:
        """Stop the ladders once no action is running (or ``grace_s`` passed): a running action is let finish,
        a waiting ladder (verification, backoff) is cancelled. The next start resumes them from the store."""
        logger.info("draining: %d ladders, %d with an action running", len(self._tasks), len(self._busy))
        if self._busy:
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace_s)
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
