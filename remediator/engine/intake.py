"""Intake: turns stored notifications into incident decisions, one alert at a time, in arrival order.

The webhook has already persisted the notification; intake runs it through policy matching, records the
decision (opened, attached, duplicate, resolved, unmatched, target refused) and starts or stops ladders. One
worker processes the queue, so two copies of one alert can never open two incidents.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from prometheus_client import Counter
from pydantic import ValidationError

from remediator.domain.alerts import Alert, Notification
from remediator.domain.clock import Clock
from remediator.domain.incidents import Incident
from remediator.domain.policies import Policy
from remediator.engine.escalate import Escalator
from remediator.engine.runner import Runner
from remediator.errors import StoreError
from remediator.metrics import Metrics
from remediator.policy.matching import PolicyIndex, match_alert
from remediator.store.base import (
    AlertRef,
    Firing,
    FiringResult,
    IntakeEvent,
    IntakeResult,
    Note,
    Resolved,
    Store,
)

logger = logging.getLogger("remediator.intake")

_MAX_TARGET_CHARS = 200
_RETRIES = 6  # about 25 s of backoff: a dropped connection or a failover, not a long outage
_RETRY_INITIAL_S = 0.5
_RETRY_MAX_S = 10.0


class Intake:
    """The single consumer of the inbox."""

    def __init__(
        self,
        store: Store,
        policies: Sequence[Policy],
        runner: Runner,
        escalator: Escalator,
        metrics: Metrics,
        clock: Clock,
        owner: str = "local",
        lease_s: float = 15.0,
        batch_max: int = 500,
        batch_wait_s: float = 0.01,
    ) -> None:
        self.store = store
        self.policies = policies
        self.runner = runner
        self.escalator = escalator
        self.metrics = metrics
        self.clock = clock
        self._queue: asyncio.Queue[tuple[int, Notification]] = asyncio.Queue()
        self._by_name = {p.name: p for p in policies}
        self._index = PolicyIndex(policies)
        self.batch_max = batch_max
        self.batch_wait_s = batch_wait_s
        # labels() looks the child up under a lock on every call; intake counts every alert.
        self._children: dict[tuple[Counter, tuple[str, ...]], Counter] = {}
        self.owner = owner
        self.lease_s = lease_s

    def submit(self, inbox_id: int, notification: Notification) -> None:
        """Hand over a notification that is already stored."""
        self._queue.put_nowait((inbox_id, notification))

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    async def join(self) -> None:
        """Wait until everything submitted so far is processed (for tests and benchmarks)."""
        await self._queue.join()

    async def recover(self) -> None:
        """At start: queue what the last run stored but never processed (ladders are claimed by the leases)."""
        self.metrics.incidents_open.set(len(await self.store.open_incidents()))
        for inbox_id, body in await self.store.inbox_pending():
            try:
                self.submit(inbox_id, Notification.model_validate_json(body))
            except ValidationError:
                logger.error("inbox row %d no longer validates; marked processed", inbox_id)
                await self.store.record_intake([], [inbox_id], self.clock(), self.owner, 0.0)

    async def run(self) -> None:
        """The worker loop; runs until cancelled. What queued up meanwhile is recorded in one transaction."""
        while True:
            batch = [await self._queue.get()]
            if not self._queue.empty():
                # A burst: let it gather, so it costs a few transactions rather than one per request.
                await asyncio.sleep(self.batch_wait_s)
            while len(batch) < self.batch_max and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                try:
                    await self._process(batch, _RETRIES)
                except StoreError:
                    if len(batch) == 1:
                        raise
                    # Still failing: maybe one notification the store can never take (the rest must not
                    # wait behind it forever). One at a time, each tried once.
                    for one in batch:
                        try:
                            await self._process([one], 1)
                        except StoreError:
                            logger.exception("inbox row %d left unprocessed, for the next start", one[0])
            except Exception:
                # A bug, or a store down for longer than the retries: keep taking alerts. The rows stay
                # unprocessed in the inbox, and the next start processes them again.
                logger.exception(
                    "intake failed on inbox rows %s; left for the next start", [i for i, _ in batch]
                )
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _process(self, batch: list[tuple[int, Notification]], tries: int) -> None:
        events: list[IntakeEvent] = []
        policies: list[Policy | None] = []
        for inbox_id, notification in batch:
            if notification.truncated_alerts:
                detail = {"group_key": notification.group_key, "count": notification.truncated_alerts}
                events.append(Note("truncated", detail))
                policies.append(None)
            for alert in notification.alerts:
                event, policy = self._event(alert, inbox_id)
                events.append(event)
                policies.append(policy)
        results = await self._record(events, [inbox_id for inbox_id, _ in batch], tries)
        for _, notification in batch:
            for alert in notification.alerts:
                self._count(self.metrics.alerts_received, alert.name, alert.status)
        # What follows the commit is not retried: a retry would record the batch a second time.
        for event, policy, result in zip(events, policies, results, strict=True):
            if isinstance(event, Firing) and isinstance(result, FiringResult) and policy is not None:
                await self._firing(event, policy, result)
            elif isinstance(event, Resolved) and isinstance(result, list):
                await self._resolved(result)
            elif isinstance(event, Note) and event.kind == "unmatched":
                self._decide("unmatched")

    async def _record(
        self, events: list[IntakeEvent], inbox_ids: list[int], tries: int
    ) -> list[IntakeResult]:
        """One transaction, retried with capped backoff on a store error (a dropped connection, a deadlock):
        all or nothing, so a retry never records half of it twice."""
        delay = _RETRY_INITIAL_S
        for attempt in range(1, tries + 1):
            try:
                now = self.clock()
                return await self.store.record_intake(events, inbox_ids, now, self.owner, now + self.lease_s)
            except StoreError:
                if attempt == tries:
                    raise
                logger.exception("store failed on inbox rows %s; retrying in %.1fs", inbox_ids, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)
        raise AssertionError("unreachable")

    def _event(self, alert: Alert, inbox_id: int) -> tuple[IntakeEvent, Policy | None]:
        if alert.status == "resolved":
            return Resolved(alert.fingerprint), None
        match = match_alert(self._index.candidates(alert.labels), alert.labels)
        if match is None:
            return Note("unmatched", {"fingerprint": alert.fingerprint, "labels": alert.labels}), None
        ref = AlertRef(
            fingerprint=alert.fingerprint,
            starts_at=alert.starts_at.isoformat(),
            labels=alert.labels,
            annotations=alert.annotations,
        )
        target = match.target[:_MAX_TARGET_CHARS]
        return Firing(match.policy.name, target, ref, match.refused, inbox_id), match.policy

    def _count(self, metric: Counter, *labels: str) -> None:
        child = self._children.get((metric, labels))
        if child is None:
            child = self._children[(metric, labels)] = metric.labels(*labels)
        child.inc()

    def _decide(self, decision: str) -> None:
        self._count(self.metrics.decisions, decision)

    async def _firing(self, event: Firing, policy: Policy, result: FiringResult) -> None:
        if result.duplicate:
            self._decide("duplicate")
        elif not result.created:
            self._decide("attached")
        elif event.reason:
            self._decide("target_refused")
            self.metrics.incidents_open.inc()
            notifier = next((s.name for s in policy.steps if s.kind == "escalate"), "log")
            await self.escalator.escalate(result.incident, policy, notifier, -1, event.reason)
        else:
            self._decide("opened")
            self.metrics.incidents_open.inc()
            self.runner.start(result.incident, policy)
            await self.escalator.incident_opened(result.incident, policy)

    async def _resolved(self, closed: list[Incident]) -> None:
        if not closed:
            self._decide("resolved_other")
        now = self.clock()
        for incident in closed:
            self._decide("resolved")
            self.metrics.incidents_open.dec()
            self.metrics.time_to_recovery.labels(incident.policy).observe(max(0.0, now - incident.opened_at))
            self.runner.resolved(incident.id)
            await self.escalator.incident_resolved(incident)
