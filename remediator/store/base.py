"""The store protocol. Each method is one transaction, so a crash never leaves half a decision behind."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from remediator.domain.effectiveness import IncidentOutcome
from remediator.domain.fencing import Fence
from remediator.domain.incidents import (
    AuditRecord,
    Incident,
    IncidentStatus,
    OutboxEntry,
    StepRecord,
    StepStatus,
)
from remediator.domain.maintenance import MaintenanceWindow
from remediator.store.rows import storable


@dataclass(frozen=True)
class AlertRef:
    """The parts of one alert that intake persists."""

    fingerprint: str
    starts_at: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_ts: float = 0.0
    """``starts_at`` as a Unix time: which of two episodes of one alert is the later."""

    @property
    def severity(self) -> str:
        return storable(self.labels.get("severity", ""))


@dataclass(frozen=True)
class FiringResult:
    """What recording one firing alert did: opened an incident, attached to one, saw a re-send, or saw a stale
    copy of an episode that already ended. ``incident`` is None for a stale copy (nothing is opened for it)
    and for a re-send (``duplicate_of`` names its incident: nothing is done with it, so its row is not read;
    re-sends are most of what a storm brings)."""

    incident: Incident | None
    created: bool
    stale: bool = False
    duplicate_of: int | None = None
    superseded: tuple[Incident, ...] = ()
    """Incidents closed because this alert began a new episode while they waited on its earlier one."""
    reactivated: bool = False
    """A new problem on the target of a ``waiting`` incident (whose ladder had ended): it is active again, leased
    to the caller with a new token, and its ladder must run."""
    held: MaintenanceWindow | None = None
    """The maintenance window that holds the incident: it was opened, or moved, ``maintenance`` by this alert
    (no ladder runs, nobody is paged). None when it attached to an incident already held."""

    @property
    def duplicate(self) -> bool:
        """A re-send of an episode that still fires."""
        return self.duplicate_of is not None


def firing_detail(event: Firing) -> dict[str, Any]:
    """The audit detail of a firing's decision (opened, attached, duplicate, stale_firing), the same in both
    stores."""
    return {
        "fingerprint": event.alert.fingerprint,
        "starts_at": event.alert.starts_at,
        "alertname": event.alert.labels.get("alertname", ""),
        "policy": event.policy,
        "host": event.host,
        "policy_version": event.policy_version,
        "inbox_id": event.inbox_id,
    }


EpisodeStatus = Literal["firing", "resolved", "superseded", "stale"]
"""What the store remembers of one (fingerprint, startsAt): an episode of an alert (docs/safety.md, E1-E3)."""


def firing_decision(seen: str | None, newer_seen: bool) -> Literal["duplicate", "stale", "new"]:
    """What a firing (fingerprint, startsAt) is, given what the store remembers of that episode (``seen``, its
    status, or None) and whether a later episode of the same alert was seen. Both stores decide with this.

    A seen episode is never a new problem: a re-send while it fires is a duplicate; a copy that arrives after
    it resolved (a clustered Alertmanager's late peer, a retry) is stale. An unseen episode older than one we
    know is stale too: an alert has one episode at a time, so it ended."""
    if seen == "firing":
        return "duplicate"
    if seen is not None or newer_seen:
        return "stale"
    return "new"


FiringOutcome = Literal["open", "open_escalated", "open_held", "attach", "reactivate", "hold"]


def firing_outcome(existing: str | None, refused: bool, held: bool) -> FiringOutcome:
    """What a new firing episode does to its incident key (policy, host, target), given the status of the open
    incident of that key (``existing``, or None), whether its target was refused, and whether a maintenance
    window holds the key now (``domain/maintenance.py: covering``). Both stores decide with this.

    A refused target opens an escalated incident, window or not: a person owns it (docs/safety.md, A2). In a
    window, a new incident is opened ``maintenance``, and an ``active`` one (its ladder fenced off) or a
    ``waiting`` one is moved there: neither is ever leased or run while it holds. Otherwise a new problem on
    a ``waiting`` incident makes it active again (E3); anything else attaches."""
    if existing is None:
        if refused:
            return "open_escalated"
        return "open_held" if held else "open"
    if not refused and held and existing in ("active", "waiting"):
        return "hold"
    if not refused and existing == "waiting":
        return "reactivate"
    return "attach"


@dataclass(frozen=True)
class MaintenanceChanges:
    """What one pass over the maintenance windows changed (``Store.maintenance_pass``)."""

    held: tuple[tuple[Incident, MaintenanceWindow], ...] = ()
    """Active incidents a window that began now holds: moved to ``maintenance``, their lease taken away."""
    resumed: tuple[Incident, ...] = ()
    """Incidents no window holds any more whose alerts still fire: active again, leased to the caller with a
    new token; their ladder starts from the first step, as a new incident's would."""
    closed: tuple[Incident, ...] = ()
    """Incidents no window holds any more whose alerts all resolved: closed quietly."""


@dataclass(frozen=True)
class Firing:
    """A firing alert that matched ``policy`` and names ``target`` (``reason`` says why it was refused, if)."""

    policy: str
    target: str
    alert: AlertRef
    reason: str = ""
    inbox_id: int | None = None
    policy_version: str = ""
    """The version of the policy the alert matched (its opened record shows it)."""
    host: str = "default"
    """The Docker host of the target: part of the incident's key (policy, host, target)."""


@dataclass(frozen=True)
class Resolved:
    """One episode (fingerprint, startsAt) of an alert that resolved: it resolves that episode and no other."""

    fingerprint: str
    starts_at: str = ""
    starts_ts: float = 0.0


@dataclass(frozen=True)
class Note:
    """An intake decision that concerns no incident (unmatched alert, truncated notification)."""

    kind: str
    detail: dict[str, Any]


IntakeEvent = Firing | Resolved | Note
IntakeResult = FiringResult | list[Incident] | None
"""Per event: the FiringResult, the incidents a resolution closed, or None for a Note."""


LONGEST_ACTION_S = 3600.0
"""Longer than any action runs (its timeouts are minutes): one that started this much before the cooldown window
began has finished before it, so the cooldown query reads only the recent actions, however long the history."""


@dataclass(frozen=True)
class History:
    """What the guards need to decide on one action, read in one transaction."""

    target_actions: int
    """Actions on the target (any policy) since ``since_target``."""
    all_actions: int
    """Actions over every policy since ``since_budget``."""
    last_other_action_at: float | None
    """When an earlier incident of the same (policy, target) last acted."""
    incidents_opened: int
    """Incidents of the same (policy, target) opened since ``since_flap``, this one included."""


RetentionPass = Literal[
    "inbox",
    "incident_audit",
    "incident_steps",
    "incident_alerts",
    "incidents",
    "audit",
    "outbox",
    "episodes",
]
"""One kind of deletion of a retention run (docs/operations.md, "Retention")."""

RETENTION_PASSES: tuple[tuple[RetentionPass, str], ...] = (
    ("inbox", "inbox"),
    ("incident_audit", "audit"),
    ("incident_steps", "steps"),
    ("incident_alerts", "incident_alerts"),
    ("incidents", "incidents"),
    ("audit", "audit"),
    ("outbox", "outbox"),
    ("episodes", "episodes"),
)
"""Each pass with the table it deletes from, in the order a run makes them: a resolved incident's rows before
the incident (the foreign keys), the incident before its episodes (which stay as long as it does)."""

STORE_TABLES: tuple[str, ...] = (
    "inbox",
    "incidents",
    "incident_alerts",
    "steps",
    "audit",
    "outbox",
    "episodes",
    "breakers",
    "control",
    "maintenance",
)
"""The tables ``Store.table_rows`` counts."""


@dataclass(frozen=True)
class Cutoffs:
    """Unix times before which rows may be deleted, per kind; ``engine/retention.py`` computes them."""

    inbox: float
    """Processed notifications processed before this."""
    incidents: float
    """Resolved incidents (steps, alerts, audit) with nothing at or after this: their retention or the longest
    guard window, whichever is longer."""
    outbox: float
    """Delivered entries, of incidents that are no longer open, last updated before this."""
    audit: float
    """Audit records of no incident."""
    episodes: float
    """Ended episodes first seen before this whose incident is gone (or that had none)."""
    now: float = math.inf
    """The run's own time: a row stamped well after it was written while the clock was ahead."""


class Store(Protocol):
    """Everything the engine, server and CLI persist or read."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...

    async def inbox_put(self, body: str, now: float) -> int: ...
    async def inbox_pending(self, received_before: float | None = None) -> list[tuple[int, str]]:
        """Unprocessed notifications (id, body) in id order; only those stored before ``received_before``."""
        ...

    async def inbox_received(
        self, since: float, until: float, limit: int = 100_000
    ) -> list[tuple[float, str]]:
        """Notifications stored from ``since`` to ``until`` (received_at, body), processed or not, in the order
        they were received; at most ``limit`` (read only: for ``remediator backtest``)."""
        ...

    async def record_intake(
        self,
        events: Sequence[IntakeEvent],
        inbox_ids: Sequence[int],
        now: float,
        owner: str,
        lease_until: float,
    ) -> list[IntakeResult]:
        """Record a batch of intake decisions and mark its inbox rows processed, in one transaction.

        An incident this call creates is leased to ``owner`` until ``lease_until``: only the lease holder runs
        its ladder, so replicas that all receive the same alert act once."""
        ...

    async def claim_expired(
        self,
        owner: str,
        now: float,
        lease_until: float,
        limit: int = 100,
        running: Sequence[int] = (),
        reclaim_own: bool = True,
    ) -> list[Incident]:
        """Take the lease of active incidents whose holder stopped renewing it, and with ``reclaim_own`` (at start)
        those ``owner`` held in a previous life, except the ``running`` ones; each incident goes to exactly one
        claimant, with a new fencing token (``lease_epoch`` + 1)."""
        ...

    async def renew_leases(
        self, owner: str, held: Sequence[tuple[int, int]], lease_until: float
    ) -> list[int]:
        """Extend ``owner``'s leases of (incident id, epoch) (never shortening one that a long action extended);
        returns the ids it still holds with that epoch (a missing one was lost)."""
        ...

    async def lease_confirm(self, fence: Fence, now: float, until: float) -> None:
        """Just before a backend call: the incident is still active and leased with ``fence``, and its lease now
        lasts at least ``until`` (extended if needed). Raises LeaseLost otherwise."""
        ...

    async def release_leases(self, owner: str, incident_ids: Sequence[int]) -> None: ...

    def admission(self) -> AbstractAsyncContextManager[None]:
        """Serialises guard checks with the recording of the admitted action, across every replica."""
        ...

    async def set_status(self, incident_id: int, status: IncidentStatus, reason: str, now: float) -> None: ...

    async def step_started(
        self, incident_id: int, index: int, kind: str, name: str, attempt: int, now: float
    ) -> int: ...
    async def step_finished(self, step_id: int, status: StepStatus, detail: str, now: float) -> None: ...

    async def audit(self, incident_id: int | None, kind: str, detail: dict[str, Any], now: float) -> None: ...

    async def get_incident(self, incident_id: int) -> Incident | None: ...
    async def list_incidents(
        self, status: IncidentStatus | None = None, limit: int = 100
    ) -> list[Incident]: ...
    async def open_incidents(self) -> list[Incident]: ...
    async def steps(self, incident_id: int) -> list[StepRecord]: ...
    async def audit_trail(
        self, incident_id: int | None = None, limit: int = 1000, kinds: Sequence[str] | None = None
    ) -> list[AuditRecord]:
        """An incident's records in order (the last ``limit`` of all records without one); only ``kinds``."""
        ...

    async def history(
        self,
        policy: str,
        target: str,
        incident_id: int,
        since_target: float,
        since_budget: float,
        since_flap: float,
        since_cooldown: float = float("-inf"),
        host: str = "default",
    ) -> History:
        """The guards' counts for the target ``target`` on the Docker host ``host``: a container named sms-db on
        two hosts is two targets. ``last_other_action_at`` only counts actions that ended after
        ``since_cooldown``: earlier ones cannot refuse anything, and reading them would make each admission
        slower as a target's history grows."""
        ...

    async def breakers_load(self, names: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """The stored breakers (only ``names``, when given): a gate check reads the two that concern it."""
        ...

    async def breaker_save(self, name: str, state: dict[str, Any] | None, now: float) -> None:
        """Store a breaker's state; None deletes it (an idle breaker is the same as none)."""
        ...

    async def control_get(self, key: str) -> str | None: ...
    async def control_set(self, key: str, value: str, now: float) -> None: ...

    async def control_swap(self, key: str, expected: str, value: str, now: float) -> bool:
        """Set ``key`` to ``value`` only if it still holds ``expected`` (compare and set); whether it did. Two
        answers to one approval (a link and its timeout, two replicas) cannot both win."""
        ...

    async def outbox_put(
        self,
        incident_id: int,
        notifier: str,
        dedup_key: str,
        payload: Mapping[str, object],
        now: float,
        owner: str,
        lease_until: float,
    ) -> OutboxEntry:
        """Store an entry leased to ``owner``; an entry already stored under ``dedup_key`` is returned as it
        is, leased to ``owner`` only if its lease was free (so one replica delivers it)."""
        ...

    async def outbox_entries(self, incident_id: int) -> list[OutboxEntry]:
        """Every entry stored for one incident, in id order: who it was escalated to, and what is pending."""
        ...

    async def incident_outcomes(
        self, before_id: int | None = None, limit: int = 500
    ) -> list[IncidentOutcome]:
        """A page of incidents, newest first (ids below ``before_id``), each with what became of it: an action
        ran, its first verified recovery, an escalation stored, its refusals (``GET /api/report``). One query
        (store/effectiveness.py)."""
        ...

    async def outbox_pending(self) -> list[OutboxEntry]:
        """Every entry not delivered yet, whoever holds it, in id order."""
        ...

    async def outbox_claim(
        self, owner: str, now: float, lease_until: float, running: Sequence[int] = ()
    ) -> list[OutboxEntry]:
        """Lease to ``owner`` every pending entry whose lease expired or is already its own (except the
        ``running`` deliveries of this process), in id order, each with a new epoch."""
        ...

    async def outbox_renew(
        self, owner: str, held: Sequence[tuple[int, int]], lease_until: float
    ) -> list[int]:
        """Extend ``owner``'s leases of (entry id, epoch); returns the ids it still holds."""
        ...

    async def outbox_confirm(self, entry: OutboxEntry, now: float, until: float) -> None:
        """Just before a delivery: the entry is still pending and leased to its holder with its epoch, for at
        least ``until``. Raises LeaseLost otherwise."""
        ...

    async def outbox_release(self, owner: str, entry_ids: Sequence[int]) -> None: ...
    async def outbox_update(
        self,
        entry_id: int,
        status: str,
        attempts: int,
        error: str,
        now: float,
        lease: tuple[str, int] | None = None,
    ) -> None:
        """Record a delivery attempt; with ``lease`` (owner, epoch), only while that lease holds (LeaseLost)."""
        ...

    async def maintenance_add(
        self,
        target: str,
        host: str,
        policy: str,
        starts_at: float,
        ends_at: float,
        reason: str,
        by: str,
        now: float,
    ) -> MaintenanceWindow:
        """Store a window (an audit record ``maintenance_added`` says who and why)."""
        ...

    async def maintenance_windows(self, since: float) -> list[MaintenanceWindow]:
        """Windows not cancelled that end after ``since``, and those cancelled after it, in id order."""
        ...

    async def maintenance_cancel(self, window_id: int, by: str, now: float) -> MaintenanceWindow | None:
        """End a window now (``cancelled_at``); the window as it is after, or None when there is none. A window
        already cancelled or over is returned unchanged."""
        ...

    async def maintenance_pass(
        self, owner: str, now: float, lease_until: float, running: Sequence[int] = ()
    ) -> MaintenanceChanges:
        """Apply the windows in force at ``now``, in one transaction: hold the active incidents a window holds,
        and release the ``maintenance`` incidents none holds any more (resumed, leased to ``owner``, or closed;
        except the ``running`` ones, whose old ladder has not stopped yet). Each incident changes for exactly
        one caller."""
        ...

    async def retention_batch(self, kind: RetentionPass, cutoffs: Cutoffs, limit: int) -> int:
        """Delete at most ``limit`` rows of one pass that ``cutoffs`` let go, in one transaction; how many went.
        Replicas may run it at once (PostgreSQL skips the rows another one is deleting)."""
        ...

    async def reclaim(self, pages: int) -> int:
        """Give up to ``pages`` free pages back to the file system; how many stay free (SQLite with incremental
        auto-vacuum; otherwise nothing to do, 0)."""
        ...

    async def table_rows(self) -> dict[str, int]:
        """Rows per table of ``STORE_TABLES``."""
        ...

    async def size_bytes(self) -> int:
        """The store's size on disk: the SQLite file and its WAL, or the PostgreSQL database."""
        ...
