"""Retention: the background task that keeps the store bounded, so a daemon can run for a year unattended.

Without it every webhook body and every audit record stays forever (issue 14). It deletes in small batches,
one transaction each with a pause between them, so intake never waits long for the store. What it may delete
is decided from cut-off times computed here: each kind's retention (``RetentionSettings``), except that a
resolved incident stays at least as long as the longest window a guard reads it over (cooldown, rate limit,
flapping, the global budget; docs/design.md, D2), computed from the policies in force at each run. So the
guards decide the same before and after a run. The store's SQL refuses the rest: an open incident, an
undelivered escalation, an unprocessed notification (``store/*/retention.py``).

A failed run (the store down or its disk full) is logged and tried again at the next interval; retention
never stops the daemon. Docs: docs/operations.md, "Retention"; decision D33 in docs/design.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from remediator.domain.clock import Clock
from remediator.domain.policies import Policy
from remediator.errors import StoreError
from remediator.metrics import Metrics
from remediator.settings import GuardSettings, RetentionSettings
from remediator.store.base import RETENTION_PASSES, Cutoffs, Store

logger = logging.getLogger(__name__)

FIRST_RUN_AFTER_S = 60.0
"""The first run waits this long after start (or one interval, if shorter), out of the way of recovery."""


def guard_window_s(policies: Iterable[Policy], guards: GuardSettings) -> float:
    """The longest time back any guard reads history over (seconds): the cooldown reads an earlier incident's
    last action, the rate limit and the budget count actions, flapping counts incidents opened."""
    windows = [guards.budget_window_s]
    for policy in policies:
        limits = policy.limits
        windows += [limits.cooldown_s, limits.max_actions.window_s, limits.flapping.window_s]
    return max(windows)


class Retention:
    """Deletes what the store no longer needs, every ``settings.interval_s``, and reports what it holds."""

    def __init__(
        self,
        store: Store,
        settings: RetentionSettings,
        guards: GuardSettings,
        policies: Callable[[], Iterable[Policy]],
        metrics: Metrics,
        clock: Clock,
    ) -> None:
        self.store = store
        self.settings = settings
        self.guards = guards
        self.policies = policies
        """Read at every run: a reload's new limits count from the next run on."""
        self.metrics = metrics
        self.clock = clock

    def cutoffs(self, now: float) -> Cutoffs:
        s = self.settings
        incidents_s = max(s.incidents_s, guard_window_s(self.policies(), self.guards))
        return Cutoffs(
            inbox=now - s.inbox_s,
            incidents=now - incidents_s,
            outbox=now - s.outbox_s,
            audit=now - s.audit_s,
            episodes=now - s.episodes_s,
            now=now,
        )

    async def run_once(self) -> dict[str, int]:
        """One run: every pass until it has nothing left, then give the space back and count what is left.
        Returns rows deleted per table. Raises StoreError when the store fails (nothing is half-deleted: each
        batch is its own transaction)."""
        cutoffs = self.cutoffs(self.clock())
        deleted: dict[str, int] = {}
        for kind, table in RETENTION_PASSES:
            while True:
                count = await self.store.retention_batch(kind, cutoffs, self.settings.batch)
                if count:
                    deleted[table] = deleted.get(table, 0) + count
                    self.metrics.retention_deleted.labels(table).inc(count)
                if count < self.settings.batch:
                    break
                await asyncio.sleep(self.settings.pause_s)
        while True:  # a few pages at a time: each step is a write transaction
            if await self.store.reclaim(self.settings.batch) == 0:
                break
            await asyncio.sleep(self.settings.pause_s)
        await self.observe()
        return deleted

    async def observe(self) -> None:
        """Set the rows-per-table and size gauges from the store."""
        for table, rows in (await self.store.table_rows()).items():
            self.metrics.store_rows.labels(table).set(rows)
        self.metrics.store_size.set(await self.store.size_bytes())

    async def run(self) -> None:
        """Until cancelled: a run every interval. A failure is logged and the next run tries again."""
        await asyncio.sleep(min(FIRST_RUN_AFTER_S, self.settings.interval_s))
        while True:
            ok = False
            try:
                deleted = await self.run_once()
                ok = True
                if deleted:
                    logger.info("retention deleted %s", ", ".join(f"{n} {t}" for t, n in deleted.items()))
            except StoreError as exc:
                logger.warning(
                    "retention run failed (tried again in %.0fs): %s", self.settings.interval_s, exc
                )
            except Exception:
                # A bug here must not take alerts down with it: retention can wait, intake cannot.
                logger.exception("retention run failed (tried again in %.0fs)", self.settings.interval_s)
            self.metrics.retention_last_run.set(self.clock())
            self.metrics.retention_last_success.set(1 if ok else 0)
            await asyncio.sleep(self.settings.interval_s)
