"""Maintenance windows: declared, listed and cancelled by people (API and CLI), honoured by intake (in the store's
own transaction, store/base.py: firing_outcome), and applied as they begin and end by a pass that runs every
``tick_s`` on every replica (docs/design.md, "Maintenance windows").

While a window holds an incident, its alerts are recorded and attached, nothing acts and nobody is paged: the
incident is ``maintenance``, which is never leased, claimed or run (docs/safety.md, A2). When no window holds
it any more, the pass makes it ``active`` again, leased to this replica with a new token, and its ladder starts
at the first step under every guard, as a new incident's would; one whose alerts all resolved meanwhile was
closed by intake when they did, quietly (it was never escalated, so no notifier has anything to close).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from remediator.domain.clock import Clock
from remediator.domain.maintenance import ANY, MaintenanceWindow, utc
from remediator.domain.policies import Policy
from remediator.engine.escalate import Escalator
from remediator.engine.runner import Runner
from remediator.errors import RemediatorError, StoreError
from remediator.metrics import Metrics
from remediator.store.base import MaintenanceChanges, Store

logger = logging.getLogger(__name__)

_MAX_TEXT = 500  # a reason, a target, a host or a policy name longer than this is a mistake


class MaintenanceRefused(RemediatorError):
    """A window that cannot be declared (too long, ends in the past, no reason): the message says why."""


@dataclass(frozen=True)
class Declared:
    """A stored window, with the warnings a person should read (an unknown target, host or policy)."""

    window: MaintenanceWindow
    warnings: tuple[str, ...] = ()


def unknown_parts(
    policies: Sequence[Policy], docker_hosts: Collection[str], target: str, host: str, policy: str
) -> list[str]:
    """Why a window may hold nothing: no loaded policy (or not the one it names) admits its target, its host is
    not configured, or its policy is not loaded. Allowed (a policy may be loaded later), but said."""
    warnings = []
    named = [p for p in policies if p.name == policy] if policy != ANY else list(policies)
    if policy != ANY and not named:
        warnings.append(f"no policy {policy!r} is loaded")
    if not any(p.target.admits(target) for p in named):
        where = f"policy {policy!r}" if policy != ANY else "loaded policy"
        warnings.append(
            f"no {where} admits target {target!r} (it is in no allow list): the window holds nothing until one"
            " does"
        )
    if host != ANY and host not in docker_hosts:
        warnings.append(f"Docker host {host!r} is not configured")
    return warnings


class Maintenance:
    """Declares windows and applies them; one per daemon."""

    def __init__(
        self,
        store: Store,
        runner: Runner,
        escalator: Escalator,
        metrics: Metrics,
        clock: Clock,
        policies: Callable[[], Sequence[Policy]],
        docker_hosts: Collection[str],
        owner: str,
        lease_s: float,
        max_s: float,
        tick_s: float,
        notify: str | None = None,
    ) -> None:
        self.store = store
        self.runner = runner
        self.escalator = escalator
        self.metrics = metrics
        self.clock = clock
        self.policies = policies
        self.docker_hosts = docker_hosts
        self.owner = owner
        self.lease_s = lease_s
        self.max_s = max_s
        self.tick_s = tick_s
        self.notify = notify
        """The notifier told when a window holds an incident (a chat; None: nobody)."""
        self._lock = asyncio.Lock()  # one pass at a time in this process (the store decides across replicas)

    async def add(
        self,
        target: str,
        duration_s: float,
        reason: str,
        by: str,
        host: str = ANY,
        policy: str = ANY,
        start: float | None = None,
    ) -> Declared:
        """Store a window from ``start`` (now by default) for ``duration_s``; MaintenanceRefused when it is too
        long, ends in the past, or lacks a target or a reason. Applied at once when it has begun."""
        now = self.clock()
        starts_at = now if start is None else start
        target, host, policy, reason = (v.strip() for v in (target, host, policy, reason))
        if not target:
            raise MaintenanceRefused("a window needs a target")
        if not reason:
            raise MaintenanceRefused(
                "a window needs a reason (--reason): the audit and the incidents show it"
            )
        if any(len(v) > _MAX_TEXT for v in (target, host, policy, reason)):
            raise MaintenanceRefused(
                f"a target, host, policy or reason is longer than {_MAX_TEXT} characters"
            )
        if not duration_s > 0:
            raise MaintenanceRefused("a window lasts more than 0 seconds")
        if duration_s > self.max_s:
            raise MaintenanceRefused(
                f"a window of {duration_s:g}s is longer than the longest allowed, {self.max_s:g}s"
                " (REMEDIATOR_MAINTENANCE__MAX_S); declare a shorter one and extend it with another"
            )
        ends_at = starts_at + duration_s
        if ends_at <= now:
            raise MaintenanceRefused(f"the window would have ended at {utc(ends_at)}, in the past")
        warnings = unknown_parts(self.policies(), self.docker_hosts, target, host, policy)
        window = await self.store.maintenance_add(target, host, policy, starts_at, ends_at, reason, by, now)
        for warning in warnings:
            logger.warning("maintenance window %d: %s", window.id, warning)
        logger.info(
            "maintenance window %d declared by %s on %s (host %s, policy %s) from %s to %s: %s",
            window.id,
            by,
            target,
            host or "any",
            policy or "any",
            utc(starts_at),
            utc(ends_at),
            reason,
        )
        if starts_at <= now:
            await self._apply_now()
        return Declared(window, tuple(warnings))

    async def windows(self, include_ended: bool = False) -> list[MaintenanceWindow]:
        """Windows scheduled or in force (with ``include_ended``, also those that ended or were cancelled in the
        last day)."""
        now = self.clock()
        return await self.store.maintenance_windows(now - 86_400.0 if include_ended else now)

    async def cancel(self, window_id: int, by: str) -> MaintenanceWindow | None:
        """End a window now; what it held is released at once (on this replica; the others' passes see it)."""
        window = await self.store.maintenance_cancel(window_id, by, self.clock())
        if window is not None:
            logger.info("maintenance window %d cancelled by %s", window_id, by)
            await self._apply_now()
        return window

    async def _apply_now(self) -> None:
        """A pass right after a change, so that it holds (or releases) without waiting for the next tick. The
        change is stored already: a failure here is only logged, and the next pass applies it."""
        try:
            await self.apply()
        except StoreError as exc:
            logger.warning("maintenance pass after a change failed (the next one applies it): %s", exc)

    async def run(self) -> None:
        """Until cancelled: apply the windows every ``tick_s``."""
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                await self.apply()
            except StoreError as exc:  # the next pass tries again
                logger.warning("maintenance pass failed: %s", exc)

    async def apply(self) -> MaintenanceChanges:
        """One pass: hold what windows that began hold, release what no window holds any more."""
        async with self._lock:
            now = self.clock()
            changes = await self.store.maintenance_pass(
                self.owner, now, now + self.lease_s, running=self.runner.incident_ids()
            )
            by_name = {p.name: p for p in self.policies()}
            for incident, window in changes.held:
                self.metrics.maintenance.labels(incident.policy, "held").inc()
                logger.info(
                    "incident %d held by maintenance window %d until %s: its ladder stops, nothing acts",
                    incident.id,
                    window.id,
                    utc(window.ends_at),
                    extra=incident.log_fields,
                )
                if self.notify is not None:
                    try:
                        await self.escalator.maintenance_notice(
                            incident, by_name.get(incident.policy), self.notify, window
                        )
                    except StoreError as exc:  # a notice is for information: the hold itself is stored
                        logger.warning("incident %d: maintenance notice not stored: %s", incident.id, exc)
            for incident in changes.closed:
                self.metrics.maintenance.labels(incident.policy, "closed").inc()
                self.metrics.incidents_open.dec()
                logger.info(
                    "incident %d closed quietly: its alerts resolved during maintenance",
                    incident.id,
                    extra=incident.log_fields,
                )
            for incident in changes.resumed:
                self.metrics.maintenance.labels(incident.policy, "resumed").inc()
                policy = by_name.get(incident.policy)
                if policy is None:
                    reason = f"maintenance ended, and policy {incident.policy!r} is no longer loaded"
                    await self.escalator.escalate(incident, None, "log", -1, reason)
                    continue
                logger.info(
                    "incident %d: maintenance ended and its alerts still fire; evaluated as new, its ladder"
                    " starts",
                    incident.id,
                    extra=incident.log_fields,
                )
                self.runner.start(incident, policy)
            return changes
