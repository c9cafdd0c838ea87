"""The gauges that describe the shared store, read from it when /metrics is scraped.

Open incidents, pending approvals, the outbox's undelivered entries and the kill switch are facts about the
store, not about one process: with several replicas on one PostgreSQL, each reads the same rows and reports
the same value, so dashboards and rules aggregate them with ``max`` (design D34). Reading them at scrape time
keeps them right whichever replica opened, resolved or delivered what; intake's own increments in between
are overwritten by the next read.

/metrics is public, so its cost is bounded: scrapes arriving together share one read, a read is reused for
``min_interval_s``, and a scrape waits at most ``timeout_s`` for it. When the store cannot answer, the last
values stay and the scrape still answers (the store's own failure shows on /readyz and in the log).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

from remediator.domain.clock import Clock
from remediator.engine.gate import Gate
from remediator.engine.intake import Intake
from remediator.errors import StoreError
from remediator.metrics import Metrics
from remediator.store.base import Store

logger = logging.getLogger(__name__)

_QUEUED_AT = ("resolved_at", "escalated_at")
"""Payload fields stamped (ISO time) when an outbox entry is written: a resolve notice's resolved_at, an
escalation's or approval request's escalated_at. A silence's expiry carries none and counts only in depth."""


def _queued_at(payload: dict[str, object]) -> float | None:
    for key in _QUEUED_AT:
        value = payload.get(key)
        if isinstance(value, str) and value:
            with contextlib.suppress(ValueError):
                return datetime.fromisoformat(value).timestamp()
    return None


class StoreGauges:
    """Sets the store's gauges, and this process's intake backlog and dry-run flag, before a scrape."""

    def __init__(
        self,
        store: Store,
        gate: Gate,
        intake: Intake,
        metrics: Metrics,
        clock: Clock,
        *,
        min_interval_s: float = 5.0,
        timeout_s: float = 2.0,
    ) -> None:
        self.store = store
        self.gate = gate
        self.intake = intake
        self.metrics = metrics
        self.clock = clock
        self.min_interval_s = min_interval_s
        self.timeout_s = timeout_s
        self._read: asyncio.Future[None] | None = None
        self._read_at = float("-inf")

    async def refresh(self) -> None:
        """Bring the gauges up to date, within ``timeout_s``; never raises for the store."""
        self.metrics.intake_backlog.set(self.intake.backlog)
        self.metrics.dry_run.set(1 if self.gate.settings.dry_run else 0)
        now = self.clock()
        if self._read is None or (self._read.done() and now - self._read_at >= self.min_interval_s):
            self._read_at = now
            read = asyncio.ensure_future(self._read_store(now))
            # A scrape that stopped waiting leaves the read running: its outcome is still collected.
            read.add_done_callback(lambda done: done.cancelled() or done.exception())
            self._read = read
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._read), self.timeout_s)

    async def _read_store(self, now: float) -> None:
        try:
            incidents = await self.store.open_incidents()
            pending = 0
            for incident in incidents:
                if incident.status == "active":
                    request = await self.gate.approvals.get(incident.id)
                    pending += request is not None and request.open_at(now)
            undelivered = await self.store.outbox_pending()
            paused = await self.gate.control.paused()
        except StoreError as exc:
            logger.warning("metrics: the store's gauges keep their last values: %s", exc)
            return
        queued = [t for t in (_queued_at(e.payload) for e in undelivered) if t is not None]
        self.metrics.incidents_open.set(len(incidents))
        self.metrics.approvals_pending.set(pending)
        self.metrics.outbox_undelivered.set(len(undelivered))
        self.metrics.outbox_oldest_age.set(max(0.0, now - min(queued)) if queued else 0.0)
        self.metrics.paused.set(1 if paused else 0)
