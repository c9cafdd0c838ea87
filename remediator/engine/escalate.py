"""Escalation through a durable outbox: stored before it is sent, retried with backoff, never silently dropped.

The dedup key is stable per (incident, step, notifier), so a receiver that sees a repeat after a crash can
drop it; delivery is at least once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from tenacity import AsyncRetrying, retry_if_exception_type, stop_never, wait_exponential

from remediator.domain.clock import Clock
from remediator.domain.incidents import Incident, OutboxEntry, StepRecord
from remediator.domain.policies import Policy
from remediator.engine.gate import Gate
from remediator.errors import NotifyError
from remediator.escalation.base import Notifier
from remediator.metrics import Metrics
from remediator.store.base import Store

logger = logging.getLogger("remediator.escalation")


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def build_payload(
    incident: Incident, policy: Policy | None, steps: list[StepRecord], reason: str, now: float
) -> dict[str, Any]:
    """The whole story of an incident, as a human needs it: what fired, what was tried, and why we stopped."""
    annotations = incident.annotations
    return {
        "incident_id": incident.id,
        "policy": incident.policy,
        "policy_source": policy.source if policy else "",
        "target": incident.target,
        "severity": incident.severity,
        "status": "escalated",
        "reason": reason,
        "opened_at": _iso(incident.opened_at),
        "duration_s": round(now - incident.opened_at, 3),
        "alertname": incident.labels.get("alertname", ""),
        "labels": incident.labels,
        "annotations": annotations,
        "summary": annotations.get("summary", ""),
        "runbook_url": annotations.get("runbook_url", ""),
        "dashboard_url": annotations.get("dashboard_url", annotations.get("dashboard", "")),
        "steps": [
            {
                "index": s.index,
                "kind": s.kind,
                "name": s.name,
                "attempt": s.attempt,
                "status": s.status,
                "detail": s.detail,
                "started_at": _iso(s.started_at),
                "finished_at": _iso(s.finished_at),
            }
            for s in steps
        ],
        "evidence": [
            {"name": s.name, "detail": s.detail} for s in steps if s.kind == "diagnose" and s.status == "ok"
        ],
    }


class Escalator:
    """Stores escalations in the outbox and delivers them in the background."""

    def __init__(
        self,
        store: Store,
        notifiers: Mapping[str, Notifier],
        fallback: Notifier,
        gate: Gate,
        metrics: Metrics,
        clock: Clock,
        attempts: int,
        backoff_max_s: float,
        backoff_initial_s: float = 0.5,
    ) -> None:
        self.store = store
        self.notifiers = notifiers
        self.fallback = fallback
        self.gate = gate
        self.metrics = metrics
        self.clock = clock
        self.attempts = attempts
        self.backoff_max_s = backoff_max_s
        self.backoff_initial_s = backoff_initial_s
        self._tasks: set[asyncio.Task[None]] = set()

    def _notifier(self, name: str) -> Notifier:
        return self.notifiers.get(name) or self.fallback

    async def escalate(
        self, incident: Incident, policy: Policy | None, notifier_name: str, step_index: int, reason: str
    ) -> None:
        """Record the escalation durably, mark the incident escalated, and start delivery."""
        now = self.clock()
        notifier = self._notifier(notifier_name)
        if notifier.name != notifier_name:
            await self.store.audit(
                incident.id, "notifier_missing", {"wanted": notifier_name, "used": notifier.name}, now
            )
        steps = await self.store.steps(incident.id)
        payload = build_payload(incident, policy, steps, reason, now)
        dedup_key = f"remediator-{incident.id}-{step_index}-{notifier_name}"
        entry = await self.store.outbox_put(incident.id, notifier.name, dedup_key, payload, now)
        await self.store.set_status(incident.id, "escalated", reason, now)
        await self.store.audit(
            incident.id, "escalation_queued", {"notifier": notifier.name, "dedup_key": dedup_key}, now
        )
        if entry.status == "pending":  # a replayed step finds its escalation already delivered
            self._spawn(entry)

    def _spawn(self, entry: OutboxEntry) -> None:
        task = asyncio.create_task(self._deliver(entry), name=f"deliver-{entry.dedup_key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, entry: OutboxEntry) -> None:
        """Retry with capped exponential backoff until delivered: an escalation is never given up on.

        The notifier's circuit breaker spaces attempts while it is down; past ``attempts`` tries the entry is
        logged as overdue (and stays in the outbox, resumed after a restart).
        """
        notifier = self._notifier(entry.notifier)
        breaker = f"notify:{notifier.name}"
        policy = str(entry.payload.get("policy", ""))
        attempts = entry.attempts
        async for attempt in AsyncRetrying(
            stop=stop_never,
            wait=wait_exponential(multiplier=self.backoff_initial_s, max=self.backoff_max_s),
            retry=retry_if_exception_type(NotifyError),
        ):
            with attempt:
                if not await self.gate.admit_breaker(breaker):
                    raise NotifyError(f"circuit breaker {breaker} is open; not tried")
                attempts += 1
                try:
                    await notifier.send(entry.payload, entry.dedup_key)
                except NotifyError as exc:
                    await self.gate.record(False, breaker)
                    await self.store.outbox_update(entry.id, "pending", attempts, str(exc), self.clock())
                    if attempts == self.attempts:
                        self.metrics.escalations.labels(policy, notifier.name, "overdue").inc()
                        await self.store.audit(
                            entry.incident_id,
                            "escalation_overdue",
                            {"notifier": notifier.name, "attempts": attempts, "error": str(exc)},
                            self.clock(),
                        )
                        logger.error(
                            "escalation %s still undelivered after %d attempts: %s",
                            entry.dedup_key,
                            attempts,
                            exc,
                        )
                    raise
                await self.gate.record(True, breaker)
        now = self.clock()
        await self.store.outbox_update(entry.id, "delivered", attempts, "", now)
        await self.store.audit(
            entry.incident_id,
            "escalation_delivered",
            {"notifier": notifier.name, "dedup_key": entry.dedup_key, "attempts": attempts},
            now,
        )
        self.metrics.escalations.labels(policy, notifier.name, "delivered").inc()

    async def incident_resolved(self, incident: Incident) -> None:
        """The incident's alerts resolved: notifiers that track incidents (paging) close theirs."""
        return None

    async def resume(self) -> None:
        """Deliver what a previous run stored but did not deliver."""
        for entry in await self.store.outbox_pending():
            self._spawn(entry)

    async def drain(self, grace_s: float) -> None:
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
