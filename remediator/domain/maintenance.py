"""Maintenance windows: a time during which a person works on a target, so remediator records its alerts and
acts on nothing, and pages nobody (docs/operations.md, "Maintenance windows"; docs/design.md).

A window names a target, optionally the Docker host and the policy; an empty host or policy matches any.
Which windows hold an incident is decided here, by one pure function both stores use (``covering``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

ANY = ""
"""A window's host or policy that matches every host or policy."""


@dataclass(frozen=True)
class MaintenanceWindow:
    """One window as the store keeps it; ``cancelled_at`` is set when a person ended it early."""

    id: int
    target: str
    host: str
    policy: str
    starts_at: float
    ends_at: float
    reason: str
    created_by: str
    created_at: float
    cancelled_at: float | None = None

    def in_force(self, now: float) -> bool:
        """Whether it holds at ``now``: begun, not over, not cancelled."""
        return self.cancelled_at is None and self.starts_at <= now < self.ends_at

    def state(self, now: float) -> str:
        """``scheduled``, ``in force``, ``ended`` or ``cancelled``: what ``maintenance list`` shows."""
        if self.cancelled_at is not None:
            return "cancelled"
        if now < self.starts_at:
            return "scheduled"
        return "in force" if now < self.ends_at else "ended"

    @property
    def held_reason(self) -> str:
        """The reason an incident it holds shows (``incidents``, ``incidents show``)."""
        return f"in maintenance: window {self.id} until {utc(self.ends_at)} ({self.reason})"

    def audit_detail(self) -> dict[str, object]:
        """The detail of the ``maintenance`` audit record of an incident it holds: which window, whose, why."""
        return {
            "window": self.id,
            "reason": self.reason,
            "by": self.created_by,
            "until": self.ends_at,
            "until_utc": utc(self.ends_at),
        }

    def record_detail(self) -> dict[str, object]:
        """The detail of the window's own audit records (``maintenance_added``, ``maintenance_cancelled``): the
        whole window, as both stores write it."""
        return {
            "window": self.id,
            "target": self.target,
            "host": self.host,
            "policy": self.policy,
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "reason": self.reason,
            "by": self.created_by,
        }

    def matches(self, policy: str, host: str, target: str) -> bool:
        """Whether it names the incident key (policy, host, target), whatever the time."""
        return self.target == target and self.host in (ANY, host) and self.policy in (ANY, policy)


def utc(ts: float) -> str:
    """A Unix time as people read it in a log or a listing: ``2026-11-30 21:40:00Z``."""
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts))


def covering(
    windows: Iterable[MaintenanceWindow], policy: str, host: str, target: str, now: float
) -> MaintenanceWindow | None:
    """The window that holds the incident (policy, host, target) at ``now``, or None. Overlapping windows hold
    as their union: of those in force, the one that ends last is returned (the hold lasts at least as long).
    Both stores decide with this, at intake and when a window begins or ends."""
    held = [w for w in windows if w.in_force(now) and w.matches(policy, host, target)]
    return max(held, key=lambda w: (w.ends_at, w.id), default=None)
