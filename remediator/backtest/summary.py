"""What the store says happened, per policy: one reading for ``serve``'s store and a replay's, so that a
backtest can be compared with what the daemon did (and is, in the parity test)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from remediator.backtest.times import hour, iso
from remediator.domain.incidents import AuditRecord, Incident, StepRecord
from remediator.domain.policies import Policy
from remediator.settings import Settings
from remediator.store.base import Store

_DEDUP = re.compile(r"^remediator-(\d+)-(-?\d+)-(.+)$")


async def summarize(store: Store, policies: Sequence[Policy], settings: Settings) -> dict[str, Any]:
    """Per policy, from a store a daemon or a replay wrote: incidents opened, targets refused at intake, the
    actions that ran (step, target, host, time), diagnoses, refusals by reason, verifications, escalations and
    pages by priority, the busiest hour. The same reading for ``serve``'s store and a replay's, so the two can
    be compared."""
    paging = set(settings.escalation.pagerduty)
    rows: dict[str, dict[str, Any]] = {p.name: _empty(p) for p in policies}
    incidents = await store.list_incidents(limit=1_000_000_000)
    for incident in sorted(incidents, key=lambda i: i.id):
        row = rows.setdefault(incident.policy, _empty(None))
        steps = await store.steps(incident.id)
        trail = await store.audit_trail(incident.id, limit=1_000_000_000)
        _count(row, incident, steps, trail, paging)
    unmatched = await store.audit_trail(None, limit=1_000_000_000, kinds=["unmatched"])
    for row in rows.values():
        _busiest(row)
    return {
        "policies": rows,
        "unmatched_alerts": sum(1 for r in unmatched if r.incident_id is None),
    }


def _empty(policy: Policy | None) -> dict[str, Any]:
    return {
        "mode": policy.mode if policy is not None else "removed",
        "incidents": 0,
        "refused_targets": 0,
        "actions": [],
        "diagnoses": 0,
        "refusals": {},
        "verified": 0,
        "not_recovered": 0,
        "approvals_requested": 0,
        "escalations": {},
        "pages": {},
        "_opened_at": [],
    }


def _count(
    row: dict[str, Any],
    incident: Incident,
    steps: list[StepRecord],
    trail: list[AuditRecord],
    paging: set[str],
) -> None:
    row["incidents"] += 1
    row["_opened_at"].append(incident.opened_at)
    refusals: Counter[str] = Counter(row["refusals"])
    escalations: Counter[str] = Counter(row["escalations"])
    pages: Counter[str] = Counter(row["pages"])
    escalated: set[int] = set()  # the step indexes this incident escalated from (one escalation each)
    for record in trail:
        if record.kind in ("refused", "dry_run"):
            refusals[str(record.detail.get("reason", record.kind))] += 1
        elif record.kind in ("verified", "not_recovered"):
            row[record.kind] += 1
        elif record.kind == "approval_queued":
            row["approvals_requested"] += 1
        elif record.kind == "escalation_queued":
            found = _DEDUP.match(str(record.detail.get("dedup_key", "")))
            step = int(found.group(2)) if found else 0
            priority = str(record.detail.get("priority", "unknown"))
            if step not in escalated:
                escalated.add(step)
                escalations[priority] += 1
                if step == -1:
                    # Escalated by intake itself: the target (or its host) was refused; no ladder ran.
                    row["refused_targets"] += 1
                    refusals["allow_list"] += 1
            if str(record.detail.get("notifier", "")) in paging:
                pages[priority] += 1
    row["refusals"] = dict(sorted(refusals.items()))
    row["escalations"] = dict(sorted(escalations.items()))
    row["pages"] = dict(sorted(pages.items()))
    for act in steps:
        if act.kind == "diagnose":
            row["diagnoses"] += 1
        elif act.kind == "act":
            row["actions"].append(
                {
                    "at": iso(act.started_at),
                    "ts": act.started_at,
                    "step": act.name,
                    "target": incident.target,
                    "host": incident.host,
                    "incident": incident.id,
                }
            )


def _busiest(row: dict[str, Any]) -> None:
    """The clock hour (UTC) with the most incidents opened and actions run together; the earliest on a tie."""
    opened: Counter[str] = Counter(hour(t) for t in row.pop("_opened_at"))
    acted: Counter[str] = Counter(hour(a["ts"]) for a in row["actions"])
    hours = sorted(set(opened) | set(acted), key=lambda h: (-(opened[h] + acted[h]), h))
    row["busiest_hour"] = (
        {"hour": hours[0], "incidents": opened[hours[0]], "actions": acted[hours[0]]} if hours else None
    )
    row["actions"].sort(key=lambda a: (a["ts"], a["incident"]))
