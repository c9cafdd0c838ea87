"""Leases: exactly one replica runs an incident's ladder or delivers an escalation, and a replica that dies
loses both.

The replica that opens an incident holds its lease and renews it every third of ``lease_s``. A lease that was
not renewed in time is claimed by another replica (or by this one after a restart), which resumes the
ladder from the store: an interrupted action is reconciled by its verification, never repeated blindly.
Every grant comes with a new fencing token (``lease_epoch``); renewals name the token they hold, so a
replica renews only what it was granted, and the writes of one that lost a lease are refused (fencing.py).
Outbox entries are leased the same way: the replica that stored one delivers it; if it dies, another takes
the undelivered entry over (the receiver sees the same dedup key).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from remediator.domain.clock import Clock
from remediator.domain.policies import Policy
from remediator.engine.escalate import Escalator
from remediator.engine.runner import Runner
from remediator.store.base import Store

logger = logging.getLogger(__name__)


class LeaseKeeper:
    def __init__(
        self,
        store: Store,
        runner: Runner,
        escalator: Escalator,
        policies: Mapping[str, Policy],
        owner: str,
        lease_s: float,
        clock: Clock,
    ) -> None:
        self.store = store
        self.runner = runner
        self.escalator = escalator
        self.policies = policies
        self.owner = owner
        self.lease_s = lease_s
        self.clock = clock
        self._first = True
        self.claiming = True
        """False while this replica shuts down: it renews what it holds and takes nothing new."""

    async def run(self) -> None:
        """Renew and claim every third of the lease, until cancelled."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await self.tick()
            except Exception:  # a store outage must not stop the keeper; the next tick tries again
                logger.exception("lease renewal failed")

    async def tick(self) -> None:
        now = self.clock()
        held = self.runner.fences()
        if held:
            pairs = [(f.incident_id, f.epoch) for f in held]
            kept = set(await self.store.renew_leases(self.owner, pairs, now + self.lease_s))
            for lost in sorted({f.incident_id for f in held} - kept):
                logger.warning(
                    "lost the lease of incident %d to another replica; stopping its ladder here", lost
                )
                self.metrics_lost("incident")
                self.runner.abandon(lost)
        delivering = self.escalator.outbox.delivering()
        if delivering:
            kept = set(await self.store.outbox_renew(self.owner, delivering, now + self.lease_s))
            lost_entries = {i for i, _ in delivering} - kept
            for _ in lost_entries:
                self.metrics_lost("outbox")
            self.escalator.outbox.abandon(lost_entries)
        if not self.claiming:
            return
        await self.escalator.outbox.claim()
        running = self.runner.incident_ids()
        # This replica's own unexpired leases only at start (what it held before a restart): later, such an
        # incident is one intake just opened and is about to start, and a claim would bump its token under it.
        claimed = await self.store.claim_expired(
            self.owner, now, now + self.lease_s, running=running, reclaim_own=self._first
        )
        self._first = False
        for incident in claimed:
            policy = self.policies.get(incident.policy)
            if policy is None:
                reason = f"policy {incident.policy!r} is no longer loaded"
                await self.escalator.escalate(incident, None, "log", -1, reason)
                continue
            logger.info(
                "took over incident %d (%s on %s)",
                incident.id,
                incident.policy,
                incident.target,
                extra=incident.log_fields,
            )
            await self.runner.resume(incident, policy)

    def metrics_lost(self, what: str) -> None:
        self.runner.metrics.lease_lost.labels(what).inc()
