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
import logging
from collections.abc import Sequence
from datetime import datetime

from remediator.domain.clock import Clock
from remediator.domain.incidents import Incident, OutboxEntry, StepRecord
from remediator.domain.maintenance import MaintenanceWindow
from remediator.domain.policies import Policy
from remediator.domain.story import FIRING_KINDS, ApprovalEntry, build_payload, iso
from remediator.engine.outbox import Outbox
from remediator.errors import NotifyError
from remediator.escalation.base import Notifier, Notifiers, Resolver, Silencer, annotates, pages
from remediator.escalation.routing import priority_of, quiet, recipients
from remediator.metrics import Metrics
from remediator.settings import RoutingSettings
from remediator.signing import approval_signature
from remediator.store.base import Store

logger = logging.getLogger(__name__)

SILENCE_MARGIN_S = 300.0
"""Added to a policy's verification windows for the silence's end: actions, retries and lock waits take time."""


def _ts(iso_time: object) -> float | None:
    """The Unix time of an ISO timestamp stored in a payload, or None."""
    try:
        return datetime.fromisoformat(str(iso_time)).timestamp() if iso_time else None
    except ValueError:
        return None


def remediation_window_s(policy: Policy) -> float:
    """How long remediation may run: the verification windows of every attempt, plus a margin."""
    windows = sum(s.attempts * s.verify.window_s for s in policy.steps if s.verify is not None)
    return windows + SILENCE_MARGIN_S


class Escalator:
    """Stores escalations in the outbox and delivers them in the background."""

    def __init__(
        self,
        store: Store,
        outbox: Outbox,
        metrics: Metrics,
        clock: Clock,
        routing: RoutingSettings | None = None,
        public_url: str = "",
    ) -> None:
        self.public_url = public_url
        """Base URL of this daemon's API, for the approve/deny links (set once the listener is up)."""
        self.link_key: str | None = None
        """Signs one-click approval links (the webhook token); None: the links need the API token."""
        self.store = store
        self.outbox = outbox
        """Where every escalation, resolve and silence expiry is stored, then delivered."""
        self.notifiers = outbox.notifiers
        self.fallback = outbox.fallback
        self.metrics = metrics
        self.clock = clock
        if routing is None:
            notifiers = outbox.notifiers
            routing = notifiers.routing if isinstance(notifiers, Notifiers) else RoutingSettings()
        self.routing = routing
        self._tasks: set[asyncio.Task[None]] = set()  # silences being created

    def _notifier(self, name: str) -> Notifier:
        return self.notifiers.get(name) or self.fallback

    # -- escalation ---------------------------------------------------------------------------------------

    async def escalate(
        self,
        incident: Incident,
        policy: Policy | None,
        notifier_name: str,
        step_index: int,
        reason: str,
        *,
        hand_over: bool = True,
    ) -> None:
        """Record the escalation durably (one outbox entry per notifier), end the silences of remediation, and
        start delivery. ``hand_over``: the incident becomes ``escalated`` (a person owns it); False for an
        escalate step that more steps follow, whose ladder goes on (it stays ``active``)."""
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
        # Every escalation is also recorded where actions are (Grafana annotations), routed or not.
        chosen += [(n, x) for n, x in self._annotators() if n not in {w for w, _ in chosen}]
        steps = await self.store.steps(incident.id)
        trail = await self.store.audit_trail(incident.id, kinds=FIRING_KINDS)
        payload = build_payload(
            incident,
            policy,
            steps,
            reason,
            now,
            priority=priority,
            trail=trail,
            handed_over=hand_over,
            public_url=self.public_url,
        )
        entries: list[OutboxEntry] = []
        for wanted, notifier in chosen:
            dedup_key = f"remediator-{incident.id}-{step_index}-{wanted}"
            entries.append(await self.outbox.put(incident.id, notifier.name, dedup_key, payload, now))
            await self.store.audit(
                incident.id,
                "escalation_queued",
                {"notifier": notifier.name, "dedup_key": dedup_key, "priority": priority},
                now,
            )
        if hand_over:
            await self.store.set_status(incident.id, "escalated", reason, now)
        logger.warning(
            "incident %d escalated to %s: %s",
            incident.id,
            ", ".join(notifier.name for _, notifier in chosen),
            reason,
            extra=incident.log_fields,
        )
        entries.extend(await self._end_silences(incident, now))
        for entry in entries:
            self.outbox.spawn(entry)

    def _annotators(self) -> list[tuple[str, Notifier]]:
        return [(name, n) for name, n in self.notifiers.items() if annotates(n)]

    def annotator_names(self) -> list[str]:
        """The notifiers that record every action and escalation (Grafana) rather than tell a person."""
        return [name for name, _ in self._annotators()]

    async def action_ran(
        self,
        incident: Incident,
        policy: Policy,
        step_id: int,
        index: int,
        step_name: str,
        attempt: int,
        ok: bool,
        detail: str,
        duration_s: float,
    ) -> None:
        """An action's attempt finished: the notifiers that record actions (Grafana annotations) get it through
        the outbox, one entry each per recorded attempt (``step_id``). Nothing to do without one."""
        annotators = self._annotators()
        if not annotators:
            return
        now = self.clock()
        status = "ok" if ok else "failed"
        payload = build_payload(
            incident,
            policy,
            (),
            f"{step_name} attempt {attempt}: {status}",
            now,
            priority=priority_of(incident.labels, self.routing),
            status=incident.status,
            event="action",
            public_url=self.public_url,
        )
        payload["next"] = ""
        payload["action"] = {
            "step": step_name,
            "index": index,
            "attempt": attempt,
            "status": status,
            "detail": detail,
            "started_at": iso(now - duration_s),
            "finished_at": iso(now),
        }
        for name, notifier in annotators:
            dedup_key = f"remediator-{incident.id}-action-{step_id}-{name}"
            entry = await self.outbox.put(incident.id, notifier.name, dedup_key, payload, now)
            self.outbox.spawn(entry)

    async def request_approval(
        self,
        incident: Incident,
        policy: Policy,
        step_index: int,
        step_name: str,
        timeout_s: float,
        requested_at: float,
        on_timeout: str = "deny",
    ) -> None:
        """Ask a human to approve a step: the policy's escalation target gets the story with approve and deny
        links (and the CLI command); the incident stays active while it waits. ``requested_at`` (from the gate)
        names this request: its link and its dedup key."""
        now = self.clock()
        wanted = policy.escalation_target()
        notifier = self._notifier(wanted)
        reason = f"approval needed: {step_name} on {incident.target}, within {timeout_s:g}s"
        approval: ApprovalEntry = {
            "step": step_name,
            "timeout_s": timeout_s,
            "expires_at": iso(requested_at + timeout_s),
            "on_timeout": on_timeout,
        }
        payload = build_payload(
            incident,
            policy,
            await self.store.steps(incident.id),
            reason,
            now,
            status="awaiting_approval",
            trail=await self.store.audit_trail(incident.id, kinds=FIRING_KINDS),
            event="approval_requested",
            approval=approval,
            public_url=self.public_url,
        )
        base = f"{self.public_url.rstrip('/')}/api/incidents/{incident.id}"
        payload["event"] = "approval_requested"
        payload["approve_url"] = f"{base}/approve"
        payload["deny_url"] = f"{base}/deny"
        payload["approve_command"] = f"remediator approve {incident.id}"
        if self.link_key:
            signature = approval_signature(self.link_key, incident.id, requested_at)
            payload["approval_url"] = f"{self.public_url.rstrip('/')}/approval/{incident.id}?sig={signature}"
        # Each request is its own message: a request asked again (another attempt, another replica) has a new
        # link, and must not be taken for a repeat of the first one.
        dedup_key = f"remediator-{incident.id}-{step_index}-approval-{round(requested_at * 1000)}-{wanted}"
        entry = await self.outbox.put(incident.id, notifier.name, dedup_key, payload, now)
        await self.store.audit(
            incident.id, "approval_queued", {"notifier": notifier.name, "dedup_key": dedup_key}, now
        )
        if entry.status == "pending":
            self.outbox.spawn(entry)

    async def incident_resolved(self, incident: Incident) -> None:
        """The incident's alerts resolved: notifiers that keep something open for it (a PagerDuty incident, a
        RemediationFailed alert) close it, and the silences of its remediation end."""
        if not incident.reason and not self._silencers():
            # Never escalated nor settled (both record a reason) and nothing silenced: an incident whose alert
            # resolved while its ladder ran costs intake no store read.
            return
        now = self.clock()
        # Whom it was escalated to, from the outbox itself: the first escalation stored for each notifier.
        escalated: dict[str, OutboxEntry] = {}
        for stored in await self.store.outbox_entries(incident.id):
            if stored.payload.get("event") == "escalate":
                escalated.setdefault(stored.notifier, stored)
        entries: list[OutboxEntry] = []
        steps: list[StepRecord] | None = None
        for name, escalation in escalated.items():
            notifier = self.notifiers.get(name)
            if not isinstance(notifier, Resolver):
                continue
            if steps is None:
                steps = await self.store.steps(incident.id)
            priority = str(escalation.payload.get("priority") or priority_of(incident.labels, self.routing))
            payload = build_payload(
                incident,
                None,
                steps,
                "every alert of the incident resolved",
                now,
                priority=priority,
                status="resolved",
                escalated_at=_ts(escalation.payload.get("escalated_at")),
                public_url=self.public_url,
            )
            payload["event"] = "resolve"
            payload["resolved_at"] = iso(now)
            payload["escalation_dedup_key"] = escalation.dedup_key
            dedup_key = f"remediator-{incident.id}-resolved-{name}"
            entries.append(await self.outbox.put(incident.id, name, dedup_key, payload, now))
            await self.store.audit(
                incident.id, "resolution_queued", {"notifier": name, "dedup_key": dedup_key}, now
            )
        entries.extend(await self._end_silences(incident, now))
        for entry in entries:
            self.outbox.spawn(entry)

    # -- silences while remediation runs ------------------------------------------------------------------

    async def maintenance_notice(
        self, incident: Incident, policy: Policy | None, notifier_name: str, window: MaintenanceWindow
    ) -> None:
        """Tell ``notifier_name`` (a chat, never a pager: checked at start) that a maintenance window holds the
        incident: one outbox entry per incident and window (a repeat is the same entry), never an escalation,
        so the incident still closes quietly (incident_resolved reads only escalations)."""
        now = self.clock()
        notifier = self._notifier(notifier_name)
        priority = priority_of(incident.labels, self.routing)
        payload = build_payload(
            incident,
            policy,
            [],
            window.held_reason,
            now,
            priority=priority,
            status="maintenance",
            event="maintenance",
            public_url=self.public_url,
        )
        dedup_key = f"remediator-{incident.id}-maintenance-{window.id}-{notifier_name}"
        entry = await self.outbox.put(incident.id, notifier.name, dedup_key, payload, now)
        await self.store.audit(
            incident.id, "maintenance_notice_queued", {"notifier": notifier.name, "dedup_key": dedup_key}, now
        )
        self.outbox.spawn(entry)

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
        made = await self.store.audit_trail(incident.id, kinds=["silence_created"])
        done = {str(a.detail.get("notifier")) for a in made}
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
                {"notifier": name, "silence_id": silence_id, "matchers": matchers, "ends_at": iso(ends_at)},
                self.clock(),
            )
        # Remediation may have ended while the silence was being created: then it ends at once.
        current = await self.store.get_incident(incident.id)
        if current is None or current.status != "active":
            for entry in await self._end_silences(incident, self.clock()):
                self.outbox.spawn(entry)

    async def _end_silences(self, incident: Incident, now: float) -> list[OutboxEntry]:
        entries: list[OutboxEntry] = []
        for record in await self.store.audit_trail(incident.id, kinds=["silence_created"]):
            name, silence_id = str(record.detail.get("notifier")), str(record.detail.get("silence_id"))
            payload = {
                "event": "expire_silence",
                "incident_id": incident.id,
                "policy": incident.policy,
                "silence_id": silence_id,
            }
            dedup_key = f"remediator-{incident.id}-unsilence-{silence_id}"
            entries.append(await self.outbox.put(incident.id, name, dedup_key, payload, now))
        return entries

    # -- delivery -----------------------------------------------------------------------------------------

    async def drain(self, grace_s: float) -> None:
        """Let silences and deliveries finish within the grace period; hand what is left to the other replicas."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.outbox.drain(grace_s)
