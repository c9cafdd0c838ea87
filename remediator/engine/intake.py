"""Intake: turns stored notifications into incident decisions, one alert at a time, in arrival order.

The webhook has already persisted the notification; intake runs it through policy matching, records the
decision (opened, attached, duplicate, stale, resolved, unmatched, target refused) and starts or stops ladders.
One worker processes the queue, so two copies of one alert can never open two incidents.

Nothing acknowledged waits for a restart (docs/safety.md, L1): a store outage is retried for as long as it
lasts, a notification the store can never take is recorded as such and set aside without holding up the
others, and a sweep re-queues any stored notification that has waited unprocessed for too long.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from functools import partial

from prometheus_client import Counter
from pydantic import ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    retry_if_not_exception_type,
    wait_exponential,
)

from remediator.domain.alerts import Alert, Notification
from remediator.domain.clock import Clock
from remediator.domain.incidents import Incident
from remediator.domain.maintenance import utc
from remediator.domain.policies import Policy
from remediator.engine.escalate import Escalator
from remediator.engine.runner import Runner
from remediator.errors import StoreDataError, StoreError, StoreUnavailable
from remediator.metrics import Metrics
from remediator.policy.matching import PolicyIndex, match_alert
from remediator.settings import DEFAULT_DOCKER_HOST
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
from remediator.store.rows import storable

logger = logging.getLogger(__name__)

_MAX_REFUSED_TARGET_CHARS = (
    200  # a refused value is only shown; an admitted one is bounded by the safe-name fence
)
_RETRY_INITIAL_S = 0.5
_RETRY_MAX_S = 10.0
_PROBE_AFTER = 3  # unexplained failures of one batch before asking whether the store takes other writes


def _store_retries(
    retried: type[BaseException], before_sleep: Callable[[RetryCallState], None]
) -> AsyncRetrying:
    """For as long as it takes, 0.5 s doubling to 10 s between tries: what the store failed to record must still
    be recorded (an acknowledged alert, a page), and intake must not hammer a store that is down."""
    return AsyncRetrying(
        retry=retry_if_exception_type(retried) & retry_if_not_exception_type(StoreDataError),
        wait=wait_exponential(multiplier=_RETRY_INITIAL_S, max=_RETRY_MAX_S),
        before_sleep=before_sleep,
        reraise=True,
    )


_OTHER = "other"  # the alertname label of every alert no policy names: the metric's series stay bounded


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
        sweep_s: float = 10.0,
        stuck_s: float = 30.0,
        docker_hosts: Collection[str] = (DEFAULT_DOCKER_HOST,),
    ) -> None:
        self.store = store
        self.docker_hosts = frozenset(docker_hosts)
        """The configured Docker hosts: an alert naming any other is refused (never connected to)."""
        self.runner = runner
        self.escalator = escalator
        self.metrics = metrics
        self.clock = clock
        self._queue: asyncio.Queue[tuple[int, Notification]] = asyncio.Queue()
        self.set_policies(policies)
        self._queued: set[int] = set()  # inbox ids submitted and not yet processed, for the sweep
        self.sweep_s = sweep_s
        self.stuck_s = stuck_s
        self.batch_max = batch_max
        self.batch_wait_s = batch_wait_s
        # labels() looks the child up under a lock on every call; intake counts every alert.
        self._children: dict[tuple[Counter, tuple[str, ...]], Counter] = {}
        self.owner = owner
        self.lease_s = lease_s
        self.maintenance_notify: str | None = None
        """The notifier told when a maintenance window holds an incident (REMEDIATOR_MAINTENANCE__NOTIFY)."""

    def set_policies(self, policies: Sequence[Policy]) -> None:
        """The policies new alerts are matched against (at start, and after a reload)."""
        self._index = PolicyIndex(policies)
        self._known_names = frozenset(
            m.value for p in policies for m in p.match if m.label == "alertname" and m.op == "="
        )

    def submit(self, inbox_id: int, notification: Notification) -> None:
        """Hand over a notification that is already stored."""
        self._queued.add(inbox_id)
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
        await self._requeue(await self.store.inbox_pending())

    async def _requeue(self, pending: list[tuple[int, str]]) -> None:
        for inbox_id, body in pending:
            if inbox_id in self._queued:
                continue
            try:
                self.submit(inbox_id, Notification.model_validate_json(body))
            except ValidationError:
                logger.error("inbox row %d no longer validates; marked processed", inbox_id)
                detail = {"inbox_id": inbox_id, "error": "stored body no longer validates"}
                await self.store.record_intake(
                    [Note("unrecordable", detail)], [inbox_id], self.clock(), self.owner, 0.0
                )

    async def sweep(self) -> None:
        """Until cancelled: re-queue notifications stored over ``stuck_s`` ago and still unprocessed, that this
        process does not hold (a batch a bug dropped, or another replica's that died between the 200 and its
        intake). Processing one twice is harmless: its alerts come back as duplicates."""
        while True:
            await asyncio.sleep(self.sweep_s)
            try:
                cutoff = self.clock() - self.stuck_s
                await self._requeue(await self.store.inbox_pending(received_before=cutoff))
            except StoreError as exc:
                logger.warning("inbox sweep failed: %s", exc)

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
                await self._process_all(batch)
            except Exception:
                # A bug: keep taking alerts. The rows stay unprocessed in the inbox; the sweep retries them.
                logger.exception("intake failed on inbox rows %s", [i for i, _ in batch])
            finally:
                for inbox_id, _ in batch:
                    self._queued.discard(inbox_id)
                    self._queue.task_done()

    async def _process_all(self, batch: list[tuple[int, Notification]]) -> None:
        """Record a batch; one notification the store can never take must not hold up the others."""
        try:
            await self._process(batch)
        except StoreDataError as exc:
            if len(batch) == 1:
                await self._set_aside(batch[0][0], exc)
                return
            logger.warning(
                "the store refused part of %d notifications; recording them one by one", len(batch)
            )
            for one in batch:
                await self._process_all([one])

    async def _set_aside(self, inbox_id: int, exc: StoreDataError) -> None:
        """A notification the store refused: its body stays in the inbox row (nothing is lost), marked processed
        with a record that says why, so that it is seen and never retried forever."""
        logger.error("inbox row %d cannot be recorded (%s); set aside with an audit record", inbox_id, exc)
        self._decide("unrecordable")
        await self._record([Note("unrecordable", {"inbox_id": inbox_id, "error": str(exc)})], [inbox_id])

    async def _process(self, batch: list[tuple[int, Notification]]) -> None:
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
        results = await self._record(events, [inbox_id for inbox_id, _ in batch])
        # Counted per batch, not per alert: a counter's increment takes a lock, and a burst is mostly alike.
        received: dict[tuple[str, str], int] = {}
        for _, notification in batch:
            for alert in notification.alerts:
                name = alert.name
                key = (name if name in self._known_names else _OTHER, alert.status)
                received[key] = received.get(key, 0) + 1
        for (name, status), count in received.items():
            self._count(self.metrics.alerts_received, name, status, amount=count)
        unmatched = 0
        try:
            # What follows the commit is not retried: a retry would record the batch a second time.
            for event, policy, result in zip(events, policies, results, strict=True):
                if isinstance(event, Firing) and isinstance(result, FiringResult) and policy is not None:
                    await self._firing(event, policy, result)
                elif isinstance(event, Resolved) and isinstance(result, list):
                    await self._resolved(result)
                elif isinstance(event, Note) and event.kind == "unmatched":
                    unmatched += 1
        finally:
            if unmatched:
                self._count(self.metrics.decisions, "unmatched", amount=unmatched)

    async def _record(self, events: list[IntakeEvent], inbox_ids: list[int]) -> list[IntakeResult]:
        """One transaction, retried with capped backoff for as long as the store is unavailable (down, its disk
        full): all or nothing, so a retry never records half of it twice. A value the store refuses
        (StoreDataError) is not retried: the caller sets it aside. An unexplained error that keeps coming
        while the store takes other writes is treated as such a refusal, so it cannot stall intake."""
        failures = 0

        def retrying(state: RetryCallState) -> None:
            logger.warning(
                "store failed on %d inbox rows (%s); retrying in %.1fs",
                len(inbox_ids),
                state.outcome.exception() if state.outcome is not None else "?",
                state.next_action.sleep if state.next_action is not None else 0.0,
            )
            self._decide("store_retry")

        async for attempt in _store_retries(StoreError, retrying):
            with attempt:
                try:
                    now = self.clock()
                    return await self.store.record_intake(
                        events, inbox_ids, now, self.owner, now + self.lease_s
                    )
                except StoreDataError:
                    raise
                except StoreError as exc:
                    failures += 1
                    unexplained = not isinstance(exc, StoreUnavailable)
                    if unexplained and failures >= _PROBE_AFTER and await self._store_takes_writes():
                        raise StoreDataError(
                            f"the store takes other writes, but not this one: {exc}"
                        ) from exc
                    raise
        raise AssertionError("retried forever")  # pragma: no cover

    async def _store_takes_writes(self) -> bool:
        try:
            await self.store.control_set("intake_probe", self.owner, self.clock())
        except StoreError:
            return False
        return True

    def _event(self, alert: Alert, inbox_id: int) -> tuple[IntakeEvent, Policy | None]:
        if alert.status == "resolved":
            return Resolved(*_episode(alert)), None
        match = match_alert(self._index.candidates(alert.labels), alert.labels, self.docker_hosts)
        if match is None:
            # Most alerts are no policy's business: they cost a lookup and an audit row, nothing more.
            return Note("unmatched", {"fingerprint": alert.fingerprint, "labels": alert.labels}), None
        fingerprint, starts_at, starts_ts = _episode(alert)
        ref = AlertRef(
            fingerprint=fingerprint,
            starts_at=starts_at,
            labels=alert.labels,
            annotations=alert.annotations,
            starts_ts=starts_ts,
        )
        # An admitted target is used exactly as the allow list saw it (the safe-name fence bounds its length);
        # cutting it could name something else. A refused one is only shown, so it is cut and made storable.
        target = match.target if not match.refused else storable(match.target[:_MAX_REFUSED_TARGET_CHARS])
        host = match.host if not match.refused else storable(match.host[:_MAX_REFUSED_TARGET_CHARS])
        firing = Firing(match.policy.name, target, ref, match.refused, inbox_id, match.policy.version, host)
        return firing, match.policy

    def _count(self, metric: Counter, *labels: str, amount: int = 1) -> None:
        child = self._children.get((metric, labels))
        if child is None:
            child = self._children[(metric, labels)] = metric.labels(*labels)
        child.inc(amount)

    def _decide(self, decision: str) -> None:
        self._count(self.metrics.decisions, decision)

    async def _firing(self, event: Firing, policy: Policy, result: FiringResult) -> None:
        if result.superseded:
            await self._resolved(list(result.superseded))
        if result.duplicate:
            self._decide("duplicate")
        elif result.stale or result.incident is None:
            # A copy of an episode that already ended (a clustered Alertmanager's late peer, a retry): it is
            # never a new problem (docs/safety.md, E1).
            self._decide("stale")
        elif result.held is not None:
            # A maintenance window holds it: recorded, and nothing acts, nobody is paged (engine/maintenance.py).
            self._decide("maintenance")
            self.metrics.maintenance.labels(policy.name, "held").inc()
            if result.created:
                self.metrics.incidents_open.inc()
            logger.info(
                "incident %d %s in maintenance (window %d until %s): no action, no page",
                result.incident.id,
                "opened" if result.created else "held",
                result.held.id,
                utc(result.held.ends_at),
                extra=result.incident.log_fields,
            )
            if self.maintenance_notify is not None:
                incident, window, notify = result.incident, result.held, self.maintenance_notify
                await self._after_commit(
                    lambda: self.escalator.maintenance_notice(incident, policy, notify, window), incident
                )
        elif result.reactivated:
            self._decide("reactivated")
            logger.info(
                "incident %d active again: a new alert on %s after its ladder had ended",
                result.incident.id,
                event.target,
                extra=result.incident.log_fields,
            )
            self.runner.start(result.incident, policy)
        elif not result.created:
            self._decide("attached")
        elif event.reason:
            self._decide("target_refused")
            self.metrics.incidents_open.inc()
            logger.warning(
                "incident %d opened and escalated: %s",
                result.incident.id,
                event.reason,
                extra=result.incident.log_fields,
            )
            notifier = policy.escalation_target()
            incident = result.incident
            await self._after_commit(
                lambda: self.escalator.escalate(incident, policy, notifier, -1, event.reason), incident
            )
        else:
            self._decide("opened")
            self.metrics.incidents_open.inc()
            logger.info(
                "incident %d opened: %s on %s (policy %s, version %s)",
                result.incident.id,
                event.alert.labels.get("alertname", ""),
                event.target,
                policy.name,
                policy.version,
                extra=result.incident.log_fields,
            )
            self.runner.start(result.incident, policy)
            await self.escalator.incident_opened(result.incident, policy)

    async def _after_commit(self, effect: Callable[[], Awaitable[None]], incident: Incident) -> None:
        """What follows a decision already committed (an escalation, a resolve notice): retried while the store is
        unavailable, because the commit will not be replayed and the page must not be lost; anything else is
        logged, and the next decision goes on."""

        def retrying(state: RetryCallState) -> None:
            logger.warning(
                "incident %d: the store is unavailable after its decision (%s); retrying in %.1fs",
                incident.id,
                state.outcome.exception() if state.outcome is not None else "?",
                state.next_action.sleep if state.next_action is not None else 0.0,
                extra=incident.log_fields,
            )

        try:
            async for attempt in _store_retries(StoreUnavailable, retrying):
                with attempt:
                    await effect()
        except Exception:
            logger.exception("incident %d: after its decision", incident.id, extra=incident.log_fields)

    async def _resolved(self, closed: list[Incident]) -> None:
        if not closed:
            self._decide("resolved_other")
        now = self.clock()
        for incident in closed:
            self._decide("resolved")
            logger.info(
                "incident %d resolved after %.1fs",
                incident.id,
                now - incident.opened_at,
                extra=incident.log_fields,
            )
            self.metrics.incidents_open.dec()
            self.metrics.time_to_recovery.labels(incident.policy).observe(max(0.0, now - incident.opened_at))
            self.runner.resolved(incident.id)
            await self._after_commit(partial(self.escalator.incident_resolved, incident), incident)


def _episode(alert: Alert) -> tuple[str, str, float]:
    """What names an alert's episode in the store: its fingerprint (storable) and its startsAt, as text and as
    a timestamp."""
    return storable(alert.fingerprint), alert.starts_at.isoformat(), alert.starts_at.timestamp()
