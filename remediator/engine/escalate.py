"""Escalation through a durable outbox: stored before it is sent, retried with backoff, never silently dropped.

Who gets an escalation: the policy step's notifier plus the notifiers routed to the incident's priority (P1..P4,
from an alert label; see ``escalation.routing``); P3 and P4 never page. Each (incident, step, notifier) is one
outbox entry with a stable dedup key, so a receiver that sees a repeat after a crash can drop it; delivery is at
least once. When the incident resolves, the notifiers that keep something open (PagerDuty, Alertmanager, Slack)
get a resolve through the same outbox; deliveries to one notifier for one incident go out in the order they were
stored, so a resolve never overtakes its trigger. A silence of the original alert (Alertmanager, optional) is
created when the incident opens and expired through the outbox when remediation ends.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from tenacity import AsyncRetrying, retry_if_exception_type, stop_never, wait_exponential

from remediator.domain.clock import Clock
from remediator.domain.incidents import AuditRecord, Incident, OutboxEntry, StepRecord
from remediator.domain.policies import Policy
from remediator.engine.gate import Gate
from remediator.errors import LeaseLost, NotifyError, StoreError
from remediator.escalation.base import Notifier, Notifiers, Resolver, Silencer, pages
from remediator.escalation.routing import priority_of, quiet, recipients
from remediator.metrics import Metrics
from remediator.settings import RoutingSettings
from remediator.signing import approval_signature
from remediator.store.base import Store

logger = logging.getLogger("remediator.escalation")

TRAIL_LIMIT = 20_000
"""Audit records read to find an incident's escalations and silences (re-sends of a long incident add many)."""

_DELIVERED = {
    "escalate": "escalation_delivered",
    "approval_requested": "approval_delivered",
    "resolve": "resolution_delivered",
    "expire_silence": "silence_expired",
}
"""The audit kind of each delivered outbox event (an unknown one is named after itself, never mislabelled)."""

SILENCE_MARGIN_S = 300.0
"""Added to a policy's verification windows for the silence's end: actions, retries and lock waits take time."""


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def build_payload(
    incident: Incident,
    policy: Policy | None,
    steps: list[StepRecord],
    reason: str,
    now: float,
    *,
    priority: str = "",
    status: str = "escalated",
    escalated_at: float | None = None,
) -> dict[str, Any]:
    """The whole story of an incident, as a human needs it: what fired, what was tried, and why we stopped."""
    annotations = incident.annotations
    return {
        "event": "escalate",
        "incident_id": incident.id,
        "policy": incident.policy,
        "policy_source": policy.source if policy else "",
        "target": incident.target,
        "severity": incident.severity,
        "priority": priority,
        "status": status,
        "reason": reason,
        "opened_at": _iso(incident.opened_at),
        "escalated_at": _iso(now if escalated_at is None else escalated_at),
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


def incident_timeline(steps: Sequence[StepRecord], trail: Sequence[AuditRecord]) -> list[dict[str, Any]]:
    """The incident record as one chronological list: every decision of the audit trail, and every step's
    start and result, each ``{"at": ISO time, "kind": ..., "detail": {...}}``."""
    events: list[tuple[float, int, dict[str, Any]]] = []
    for record in trail:
        events.append((record.at, 0, {"at": _iso(record.at), "kind": record.kind, "detail": record.detail}))
    for step in steps:
        what = {"index": step.index, "step": step.kind, "name": step.name, "attempt": step.attempt}
        events.append(
            (step.started_at, 1, {"at": _iso(step.started_at), "kind": "step_started", "detail": what})
        )
        if step.finished_at is not None:
            result = {**what, "status": step.status, "detail": step.detail}
            events.append(
                (
                    step.finished_at,
                    2,
                    {"at": _iso(step.finished_at), "kind": "step_finished", "detail": result},
                )
            )
    events.sort(key=lambda e: (e[0], e[1]))
    return [event for _, _, event in events]


def remediation_window_s(policy: Policy) -> float:
    """How long remediation may run: the verification windows of every attempt, plus a margin."""
    windows = sum(s.attempts * s.verify.window_s for s in policy.steps if s.verify is not None)
    return windows + SILENCE_MARGIN_S


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
        routing: RoutingSettings | None = None,
        public_url: str = "",
        owner: str = "local",
        lease_s: float = 15.0,
    ) -> None:
        self.public_url = public_url
        """Base URL of this daemon's API, for the approve/deny links (set once the listener is up)."""
        self.link_key: str | None = None
        """Signs one-click approval links (the webhook token); None: the links need the API token."""
        self.store = store
        self.notifiers = notifiers
        self.fallback = fallback
        self.gate = gate
        self.metrics = metrics
        self.clock = clock
        self.attempts = attempts
        self.backoff_max_s = backoff_max_s
        self.backoff_initial_s = backoff_initial_s
        if routing is None:
            routing = notifiers.routing if isinstance(notifiers, Notifiers) else RoutingSettings()
        self.routing = routing
        self.owner = owner
        """This replica: it delivers only the outbox entries it holds the lease of."""
        self.lease_s = lease_s
        self._tasks: set[asyncio.Task[None]] = set()
        self._delivering: dict[int, asyncio.Task[None]] = {}  # outbox id -> its delivery in this process
        self._epochs: dict[int, int] = {}  # outbox id -> the lease epoch its delivery holds
        self._chains: dict[tuple[str, int], asyncio.Task[None]] = {}  # last delivery per (notifier, incident)

    def _notifier(self, name: str) -> Notifier:
        return self.notifiers.get(name) or self.fallback

    # -- escalation ---------------------------------------------------------------------------------------

    async def escalate(
        self, incident: Incident, policy: Policy | None, notifier_name: str, step_index: int, reason: str
    ) -> None:
        """Record the escalation durably (one outbox entry per notifier), mark the incident escalated, end the
        silences of remediation, and start delivery."""
        now = self.clock()
        reason = reason or "escalated"  # never empty: incident_resolved relies on it
        priority = priority_of(incident.labels, self.routing)
        chosen: list[tuple[str, Notifier]] = []
        for wanted in recipients(notifier_name, priority, self.routing):
            notifier = self._notifier(wanted)
            if quiet(priority) and pages(notifier):
                self.metrics.escalations.labels(incident.policy, notifier.name, "skipped").inc()
                await self.store.audit(
                    incident.id,
                    "escalation_skipped",
                    {"notifier": notifier.name, "priority": priority, "reason": f"{priority} never pages"},
                    now,
                )
                continue
            if notifier.name != wanted:
                await self.store.audit(
                    incident.id, "notifier_missing", {"wanted": wanted, "used": notifier.name}, now
                )
            chosen.append((wanted, notifier))
        if not chosen:
            chosen = [(self.fallback.name, self.fallback)]
        steps = await self.store.steps(incident.id)
        payload = build_payload(incident, policy, steps, reason, now, priority=priority)
        entries: list[OutboxEntry] = []
        for wanted, notifier in chosen:
            dedup_key = f"remediator-{incident.id}-{step_index}-{wanted}"
            entries.append(await self._put(incident.id, notifier.name, dedup_key, payload, now))
            await self.store.audit(
                incident.id,
                "escalation_queued",
                {"notifier": notifier.name, "dedup_key": dedup_key, "priority": priority},
                now,
            )
        await self.store.set_status(incident.id, "escalated", reason, now)
        entries.extend(await self._end_silences(incident, now))
        for entry in entries:
            self._spawn(entry)

    async def request_approval(
        self,
        incident: Incident,
        policy: Policy,
        step_index: int,
        step_name: str,
        timeout_s: float,
        requested_at: float,
    ) -> None:
        """Ask a human to approve a step: the policy's escalation target gets the story with approve and deny
        links (and the CLI command); the incident stays active while it waits. ``requested_at`` (from the gate)
        names this request: its link and its dedup key."""
        now = self.clock()
        wanted = next((s.name for s in policy.steps if s.kind == "escalate"), self.fallback.name)
        notifier = self._notifier(wanted)
        reason = f"approval needed: {step_name} on {incident.target}, within {timeout_s:g}s"
        payload = build_payload(
            incident, policy, await self.store.steps(incident.id), reason, now, status="awaiting_approval"
        )
        base = f"{self.public_url.rstrip('/')}/api/incidents/{incident.id}"
        payload.update(
            event="approval_requested",
            approve_url=f"{base}/approve",
            deny_url=f"{base}/deny",
            approve_command=f"remediator approve {incident.id}",
        )
        if self.link_key:
            signature = approval_signature(self.link_key, incident.id, requested_at)
            payload["approval_url"] = f"{self.public_url.rstrip('/')}/approval/{incident.id}?sig={signature}"
        # Each request is its own message: a request asked again (another attempt, another replica) has a new
        # link, and must not be taken for a repeat of the first one.
        dedup_key = f"remediator-{incident.id}-{step_index}-approval-{round(requested_at * 1000)}-{wanted}"
        entry = await self._put(incident.id, notifier.name, dedup_key, payload, now)
        await self.store.audit(
            incident.id, "approval_queued", {"notifier": notifier.name, "dedup_key": dedup_key}, now
        )
        if entry.status == "pending":
            self._spawn(entry)

    async def incident_resolved(self, incident: Incident) -> None:
        """The incident's alerts resolved: notifiers that keep something open for it (a PagerDuty incident, a
        RemediationFailed alert) close it, and the silences of its remediation end."""
        if not incident.reason and not self._silencers():
            # Never escalated (an escalation always records its reason) and nothing silenced: the common case
            # of a remediation that worked costs intake no store read.
            return
        now = self.clock()
        trail = await self.store.audit_trail(incident.id, TRAIL_LIMIT)
        escalated: dict[str, AuditRecord] = {}
        for record in trail:
            if record.kind == "escalation_queued":
                escalated.setdefault(str(record.detail.get("notifier", "")), record)
        entries: list[OutboxEntry] = []
        steps: list[StepRecord] | None = None
        for name, record in escalated.items():
            notifier = self.notifiers.get(name)
            if not isinstance(notifier, Resolver):
                continue
            if steps is None:
                steps = await self.store.steps(incident.id)
            priority = str(record.detail.get("priority") or priority_of(incident.labels, self.routing))
            payload = build_payload(
                incident,
                None,
                steps,
                "every alert of the incident resolved",
                now,
                priority=priority,
                status="resolved",
                escalated_at=record.at,
            )
            payload.update(
                event="resolve", resolved_at=_iso(now), escalation_dedup_key=record.detail.get("dedup_key")
            )
            dedup_key = f"remediator-{incident.id}-resolved-{name}"
            entries.append(await self._put(incident.id, name, dedup_key, payload, now))
            await self.store.audit(
                incident.id, "resolution_queued", {"notifier": name, "dedup_key": dedup_key}, now
            )
        entries.extend(await self._end_silences(incident, now, trail))
        for entry in entries:
            self._spawn(entry)

    # -- silences while remediation runs ------------------------------------------------------------------

    async def incident_opened(self, incident: Incident, policy: Policy) -> None:
        """An incident opened and its ladder starts: silence the original alert on the Alertmanagers that are
        configured to (in the background; a silence that fails only means people see the alert)."""
        silencers = self._silencers()
        if silencers:
            task = asyncio.create_task(
                self._silence(incident, policy, silencers), name=f"silence-{incident.id}"
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _silencers(self) -> list[tuple[str, Silencer]]:
        return [
            (name, n)
            for name, n in self.notifiers.items()
            if isinstance(n, Silencer) and n.silence_while_running
        ]

    async def _silence(
        self, incident: Incident, policy: Policy, silencers: Sequence[tuple[str, Silencer]]
    ) -> None:
        alertname = incident.labels.get("alertname", "")
        matchers = {"alertname": alertname, policy.target.from_label: incident.target}
        trail = await self.store.audit_trail(incident.id, TRAIL_LIMIT)
        done = {str(a.detail.get("notifier")) for a in trail if a.kind == "silence_created"}
        for name, silencer in silencers:
            if name in done:  # called again for the same incident (a resumed ladder): one silence is enough
                continue
            now = self.clock()
            ends_at = now + remediation_window_s(policy)
            comment = (
                f"remediator incident {incident.id}: policy {policy.name} is remediating {incident.target}; "
                "expired when remediation ends"
            )
            try:
                silence_id = await silencer.silence(matchers, now, ends_at, comment)
            except NotifyError as exc:
                logger.warning("incident %d: no silence on %s: %s", incident.id, name, exc)
                await self.store.audit(
                    incident.id, "silence_failed", {"notifier": name, "error": str(exc)}, now
                )
                continue
            await self.store.audit(
                incident.id,
                "silence_created",
                {"notifier": name, "silence_id": silence_id, "matchers": matchers, "ends_at": _iso(ends_at)},
                self.clock(),
            )
        # Remediation may have ended while the silence was being created: then it ends at once.
        current = await self.store.get_incident(incident.id)
        if current is None or current.status != "active":
            for entry in await self._end_silences(incident, self.clock()):
                self._spawn(entry)

    async def _end_silences(
        self, incident: Incident, now: float, trail: list[AuditRecord] | None = None
    ) -> list[OutboxEntry]:
        if trail is None:
            trail = await self.store.audit_trail(incident.id, TRAIL_LIMIT)
        entries: list[OutboxEntry] = []
        for record in trail:
            if record.kind != "silence_created":
                continue
            name, silence_id = str(record.detail.get("notifier")), str(record.detail.get("silence_id"))
            payload = {
                "event": "expire_silence",
                "incident_id": incident.id,
                "policy": incident.policy,
                "silence_id": silence_id,
            }
            dedup_key = f"remediator-{incident.id}-unsilence-{silence_id}"
            entries.append(await self._put(incident.id, name, dedup_key, payload, now))
        return entries

    # -- delivery -----------------------------------------------------------------------------------------

    async def _put(
        self, incident_id: int, notifier: str, dedup_key: str, payload: dict[str, Any], now: float
    ) -> OutboxEntry:
        return await self.store.outbox_put(
            incident_id, notifier, dedup_key, payload, now, self.owner, now + self.lease_s
        )

    def _spawn(self, entry: OutboxEntry) -> None:
        """Deliver a pending entry, after the earlier deliveries to the same notifier for the same incident."""
        if entry.status != "pending" or entry.lease_owner != self.owner or entry.id in self._delivering:
            return  # delivered already (a replayed step), another replica's, or being delivered here
        chain = (entry.notifier, entry.incident_id)
        # A context of its own: a delivery is fenced by its entry's lease, never by the ladder that stored it.
        task = asyncio.create_task(
            self._deliver_after(self._chains.get(chain), entry),
            name=f"deliver-{entry.dedup_key}",
            context=contextvars.Context(),
        )
        self._chains[chain] = task
        self._tasks.add(task)
        self._delivering[entry.id] = task
        self._epochs[entry.id] = entry.lease_epoch

        def done(finished: asyncio.Task[None]) -> None:
            self._tasks.discard(finished)
            if self._delivering.get(entry.id) is finished:
                del self._delivering[entry.id]
                self._epochs.pop(entry.id, None)
            if self._chains.get(chain) is finished:
                del self._chains[chain]

        task.add_done_callback(done)

    def delivering(self) -> list[tuple[int, int]]:
        """(entry id, lease epoch) of the outbox entries this process is delivering (renewed by the keeper)."""
        return [(i, self._epochs[i]) for i in self._delivering]

    def abandon(self, entry_ids: Iterable[int]) -> None:
        """Another replica took these entries over (this one missed renewing their leases): stop here."""
        for entry_id in entry_ids:
            task = self._delivering.pop(entry_id, None)
            self._epochs.pop(entry_id, None)
            if task is not None:
                logger.warning("outbox entry %d is delivered by another replica now; stopping here", entry_id)
                task.cancel()

    async def _deliver_after(self, previous: asyncio.Task[None] | None, entry: OutboxEntry) -> None:
        if previous is not None:
            await asyncio.wait({previous})
        try:
            await self._deliver(entry)
        except LeaseLost as exc:
            self.metrics.lease_lost.labels("outbox").inc()
            logger.warning("%s: %s; another replica delivers it now", entry.dedup_key, exc)

    async def _send_fenced(self, notifier: Notifier, entry: OutboxEntry) -> None:
        """Send, having just confirmed in the store that this replica still holds the entry's lease for long
        enough; a send whose task was frozen past that is dropped (docs/safety.md, F4)."""
        asked, now = time.monotonic(), self.clock()
        # A notifier's request times out well within a lease (and the keeper renews it meanwhile).
        await self.store.outbox_confirm(entry, now, now + self.lease_s)
        if time.monotonic() - asked > self.lease_s / 2:
            # Frozen while confirming (a GC pause, a stopped VM): the lease may have passed meanwhile.
            raise LeaseLost(f"outbox entry {entry.id}: too long since the lease was confirmed to send now")
        await self._send(notifier, entry)

    async def _send(self, notifier: Notifier, entry: OutboxEntry) -> None:
        event = entry.payload.get("event", "escalate")
        if event in (
            "escalate",
            "approval_requested",
        ):  # an approval request reads as an escalation with links
            await notifier.send(entry.payload, entry.dedup_key)
        elif event == "resolve" and isinstance(notifier, Resolver):
            await notifier.resolve(entry.payload, entry.dedup_key)
        elif event == "expire_silence" and isinstance(notifier, Silencer):
            await notifier.expire_silence(str(entry.payload["silence_id"]))
        else:  # the notifier was reconfigured since the entry was stored: nothing it can do
            logger.warning("%s: notifier %s cannot %s; dropped", entry.dedup_key, notifier.name, event)

    async def _deliver(self, entry: OutboxEntry) -> None:
        """Retry with capped exponential backoff until delivered: an escalation is never given up on.

        The notifier's circuit breaker spaces attempts while it is down; past ``attempts`` tries the entry is
        logged as overdue (and stays in the outbox, resumed after a restart).
        """
        notifier = self._notifier(entry.notifier)
        lease = (entry.lease_owner, entry.lease_epoch)
        breaker = f"notify:{notifier.name}"
        policy = str(entry.payload.get("policy", ""))
        event = str(entry.payload.get("event", "escalate"))
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
                    await self._send_fenced(notifier, entry)
                except NotifyError as exc:
                    await self.gate.record(False, breaker)
                    await self.store.outbox_update(
                        entry.id, "pending", attempts, str(exc), self.clock(), lease
                    )
                    if attempts == self.attempts:
                        self.metrics.escalations.labels(policy, notifier.name, "overdue").inc()
                        await self.store.audit(
                            entry.incident_id,
                            "escalation_overdue",
                            {
                                "notifier": notifier.name,
                                "attempts": attempts,
                                "error": str(exc),
                                "event": event,
                            },
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
        await self.store.outbox_update(entry.id, "delivered", attempts, "", now, lease)
        kind = _DELIVERED.get(event, f"{event}_delivered")
        await self.store.audit(
            entry.incident_id,
            kind,
            {"notifier": notifier.name, "dedup_key": entry.dedup_key, "attempts": attempts},
            now,
        )
        if event == "escalate":
            self.metrics.escalations.labels(policy, notifier.name, "delivered").inc()

    async def claim(self) -> None:
        """Deliver what is pending and free: stored by a replica that died (its lease expired), or by this one
        before a restart. Run at start and with every lease renewal."""
        now = self.clock()
        running = list(self._delivering)
        for entry in await self.store.outbox_claim(self.owner, now, now + self.lease_s, running):
            self._spawn(entry)

    async def drain(self, grace_s: float) -> None:
        """Let deliveries finish within the grace period; hand what is left to the other replicas at once."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
            unfinished = [i for i, task in self._delivering.items() if task in pending]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if unfinished:
                try:
                    await self.store.outbox_release(self.owner, unfinished)
                except StoreError as exc:  # they expire instead
                    logger.warning("could not release %d outbox leases: %s", len(unfinished), exc)
