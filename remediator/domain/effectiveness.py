"""How well each policy works: per policy over a period, the incidents it opened, how many it acted on, how many
recovered after an action (and after which step), escalated, refused (by reason), its success rate, its time to
recovery, and the pages it spared people.

A pure read model over ``IncidentOutcome``s, which both stores read in one query per page from their incidents,
steps and audit trail (so the numbers hold across restarts and replicas); the API (``GET /api/report``) and the
CLI (``remediator report``) show it. The definitions are in docs/operations.md ("How well the policies work").
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypedDict

QUIET = frozenset({"P3", "P4"})
"""Priorities that never page (settings.QUIET_PRIORITIES): an incident at one of them spares nobody a page."""


@dataclass(frozen=True)
class IncidentOutcome:
    """What became of one incident, as the store keeps it."""

    id: int
    policy: str
    status: str
    opened_at: float
    labels: dict[str, str] = field(default_factory=dict)
    acted: bool = False
    """An act step started: an action really ran (shadow mode and dry run record none)."""
    recovered_step: str | None = None
    """The act step after which verification first saw the system recover."""
    recovered_at: float | None = None
    escalated: bool = False
    """An escalation to people was stored for it (a refused target's too)."""
    refusals: tuple[str, ...] = ()
    """The reason of each guard refusal (``cooldown``, ``shadow``, ...; a dry run is ``dry_run``; a target the
    allow list refused at intake is ``target_refused``)."""


class PolicyEffect(TypedDict):
    policy: str
    incidents: int
    acted: int
    recovered: int
    """Incidents that recovered after an action (verified), among those acted on."""
    recovered_by_step: dict[str, int]
    escalated: int
    refused: int
    """Incidents with at least one refusal other than shadow mode and dry run."""
    refusals: dict[str, int]
    """Incidents refused, by reason (an incident refused twice for one reason counts once for it)."""
    shadow: int
    """Incidents shadow mode or dry run kept from acting."""
    resolved_without_action: int
    success_rate: float | None
    """recovered / acted; None when nothing acted."""
    time_to_recovery_p50_s: float | None
    time_to_recovery_p90_s: float | None
    pages_avoided: int
    """Incidents at a paging priority (P1, P2) that recovered after an action and were never escalated."""


def percentile(values: Iterable[float], q: float) -> float | None:
    """The nearest-rank ``q`` percentile (0 < q <= 1) of ``values``; None for none."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _effect(
    policy: str, outcomes: list[IncidentOutcome], priority: Callable[[dict[str, str]], str]
) -> PolicyEffect:
    acted = [o for o in outcomes if o.acted]
    recovered = [o for o in acted if o.recovered_step is not None]
    times = [o.recovered_at - o.opened_at for o in recovered if o.recovered_at is not None]
    refusals = Counter(reason for o in outcomes for reason in set(o.refusals))
    held = {"shadow", "dry_run"}
    p50, p90 = percentile(times, 0.5), percentile(times, 0.9)
    return {
        "policy": policy,
        "incidents": len(outcomes),
        "acted": len(acted),
        "recovered": len(recovered),
        "recovered_by_step": dict(sorted(Counter(str(o.recovered_step) for o in recovered).items())),
        "escalated": sum(o.escalated for o in outcomes),
        "refused": sum(any(r not in held for r in o.refusals) for o in outcomes),
        "refusals": dict(sorted(refusals.items())),
        "shadow": sum(not o.acted and any(r in held for r in o.refusals) for o in outcomes),
        "resolved_without_action": sum(
            not o.acted and not o.escalated and o.status == "resolved" for o in outcomes
        ),
        "success_rate": round(len(recovered) / len(acted), 4) if acted else None,
        "time_to_recovery_p50_s": None if p50 is None else round(p50, 3),
        "time_to_recovery_p90_s": None if p90 is None else round(p90, 3),
        "pages_avoided": sum(not o.escalated and priority(o.labels) not in QUIET for o in recovered),
    }


def effectiveness(
    outcomes: Iterable[IncidentOutcome],
    priority: Callable[[dict[str, str]], str],
    policies: Iterable[str] = (),
) -> list[PolicyEffect]:
    """Per policy (by name), from the incidents' ``outcomes``, and a row of zeros for each of ``policies`` (those
    loaded) that had none; ``priority`` reads an incident's P1..P4 from its labels as escalation does
    (escalation.routing.priority_of with the routing settings)."""
    by_policy: dict[str, list[IncidentOutcome]] = {name: [] for name in policies}
    for outcome in outcomes:
        by_policy.setdefault(outcome.policy, []).append(outcome)
    return [_effect(name, found, priority) for name, found in sorted(by_policy.items())]


def overall(outcomes: Iterable[IncidentOutcome], priority: Callable[[dict[str, str]], str]) -> PolicyEffect:
    """Every policy together, as one (named ``all``): its percentiles are over every incident's recovery."""
    return _effect("all", list(outcomes), priority)
