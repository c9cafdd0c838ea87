"""The escalation outbox: an entry is stored before it is sent, delivered in the background with capped
backoff until it gets through, and never silently dropped.

Each entry is leased like an incident: the replica that stored it delivers it, another takes an undelivered
one over when its holder stops renewing, and every delivery is fenced by the entry's lease epoch
(docs/safety.md, F4). Deliveries to one notifier for one incident go out in the order they were stored, so a
resolve never overtakes its trigger. Delivery is at least once; receivers drop repeats by the dedup key.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Iterable, Mapping
from typing import cast

from tenacity import AsyncRetrying, retry_if_exception_type, stop_never, wait_exponential

from remediator.domain.clock import Clock
from remediator.domain.incidents import OutboxEntry
from remediator.domain.story import EscalationPayload
from remediator.engine.breakers import Breakers
from remediator.errors import LeaseLost, NotifyError, StoreError, StoreUnavailable
from remediator.escalation.base import Annotator, Notifier, Resolver, Silencer
from remediator.metrics import Metrics
from remediator.store.base import Store

logger = logging.getLogger(__name__)

_DELIVERED = {
    "escalate": "escalation_delivered",
    "approval_requested": "approval_delivered",
    "resolve": "resolution_delivered",
    "expire_silence": "silence_expired",
    "action": "annotation_delivered",
    "maintenance": "maintenance_notice_delivered",
}
"""The audit kind of each delivered outbox event (an unknown one is named after itself, never mislabelled)."""


class Outbox:
    """Stores outbox entries and delivers the ones this replica holds."""

    def __init__(
        self,
        store: Store,
        notifiers: Mapping[str, Notifier],
        fallback: Notifier,
        breakers: Breakers,
        metrics: Metrics,
        clock: Clock,
        attempts: int,
        backoff_max_s: float,
        backoff_initial_s: float = 0.5,
        owner: str = "local",
        lease_s: float = 15.0,
    ) -> None:
        self.store = store
        self.notifiers = notifiers
        self.fallback = fallback
        self.breakers = breakers
        self.metrics = metrics
        self.clock = clock
        self.attempts = attempts
        """Deliveries past this many attempts are logged and counted as overdue (and still retried)."""
        self.backoff_max_s = backoff_max_s
        self.backoff_initial_s = backoff_initial_s
        self.owner = owner
        """This replica: it delivers only the outbox entries it holds the lease of."""
        self.lease_s = lease_s
        self._tasks: set[asyncio.Task[None]] = set()
        self._delivering: dict[int, asyncio.Task[None]] = {}  # outbox id -> its delivery in this process
        self._epochs: dict[int, int] = {}  # outbox id -> the lease epoch its delivery holds
        self._chains: dict[tuple[str, int], asyncio.Task[None]] = {}  # last delivery per (notifier, incident)

    def _notifier(self, name: str) -> Notifier:
        return self.notifiers.get(name) or self.fallback

    async def put(
        self, incident_id: int, notifier: str, dedup_key: str, payload: Mapping[str, object], now: float
    ) -> OutboxEntry:
        return await self.store.outbox_put(
            incident_id, notifier, dedup_key, payload, now, self.owner, now + self.lease_s
        )

    def spawn(self, entry: OutboxEntry) -> None:
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
        except StoreError as exc:
            # The entry stays pending: it is claimed again once its lease runs out (never lost).
            logger.error(
                "%s: delivery stopped by the store (%s); it is claimed again later", entry.dedup_key, exc
            )

    async def _send_fenced(self, notifier: Notifier, entry: OutboxEntry) -> None:
        """Send, having just confirmed in the store that this replica still holds the entry's lease for long
        enough; a send whose task was frozen past that is dropped (docs/safety.md, F4)."""
        asked, now = time.monotonic(), self.clock()
        # A notifier's request times out well within a lease (and the keeper renews it meanwhile).
        await self.store.outbox_confirm(entry, now, now + self.lease_s)
        if time.monotonic() - asked > 0.8 * self.lease_s:
            # Frozen while confirming (a GC pause, a stopped VM): confirm again (a retry) before sending.
            raise NotifyError(f"outbox entry {entry.id}: too long since the lease was confirmed to send now")
        await self._send(notifier, entry)

    async def _send(self, notifier: Notifier, entry: OutboxEntry) -> None:
        event = entry.payload.get("event", "escalate")
        # Stored by build_payload (domain/story.py) for these three events; the outbox keeps it as JSON.
        story = cast(EscalationPayload, entry.payload)
        if event in (
            "escalate",
            "approval_requested",
            "maintenance",
        ):  # an approval request reads as an escalation with links; a maintenance notice as one that says so
            await notifier.send(story, entry.dedup_key)
        elif event == "resolve" and isinstance(notifier, Resolver):
            await notifier.resolve(story, entry.dedup_key)
        elif event == "action" and isinstance(notifier, Annotator):
            await notifier.annotate(story, entry.dedup_key)
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
            # A store that is down (breakers, outbox rows) is waited out like a notifier that is down.
            retry=retry_if_exception_type((NotifyError, StoreUnavailable)),
        ):
            with attempt:
                if await self.breakers.admit(breaker) is not None:
                    raise NotifyError(f"circuit breaker {breaker} is open; not tried")
                attempts += 1
                try:
                    await self._send_fenced(notifier, entry)
                except NotifyError as exc:
                    await self.breakers.record({breaker: False})
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
                await self.breakers.record({breaker: True})
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
        logger.info(
            "%s delivered to %s after %d attempt(s)",
            entry.dedup_key,
            notifier.name,
            attempts,
            extra={"incident": entry.incident_id, "policy": policy},
        )

    async def claim(self) -> None:
        """Deliver what is pending and free: stored by a replica that died (its lease expired), or by this one
        before a restart. Run at start and with every lease renewal."""
        now = self.clock()
        running = list(self._delivering)
        for entry in await self.store.outbox_claim(self.owner, now, now + self.lease_s, running):
            self.spawn(entry)

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
