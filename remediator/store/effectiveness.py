"""The one query both stores answer ``Store.incident_outcomes`` with: a page of incidents, newest first, each with
what became of it (an action ran, the first verified recovery, an escalation stored, the guard refusals, a
target the allow list refused: its escalation's dedup key names step -1, docs/escalation.md), read
with correlated subqueries on the per-incident indexes of steps and audit; and its rows as domain objects.
Only the JSON of a refusal's reason and the aggregate differ between the two dialects."""

from __future__ import annotations

import json

from remediator.domain.effectiveness import IncidentOutcome
from remediator.store.rows import Row

PAGE = 500
"""Incidents per page: a page is one short query, and the loop between pages lets other work run."""


def outcomes_sql(reason: str, aggregate: str, before: str, limit: str) -> str:
    """The query, with ``reason`` (the expression of a refusal record's reason), ``aggregate`` (a function of one
    argument joining them with commas) and the two parameters' placeholders."""
    return f"""
SELECT i.id, i.policy, i.status, i.opened_at, i.labels,
  EXISTS (SELECT 1 FROM steps s WHERE s.incident_id = i.id AND s.kind = 'act') AS acted,
  (SELECT a.at FROM audit a WHERE a.incident_id = i.id AND a.kind = 'verified' ORDER BY a.id LIMIT 1)
    AS verified_at,
  (SELECT a.detail FROM audit a WHERE a.incident_id = i.id AND a.kind = 'verified' ORDER BY a.id LIMIT 1)
    AS verified,
  EXISTS (SELECT 1 FROM audit a WHERE a.incident_id = i.id AND a.kind = 'escalation_queued') AS escalated,
  EXISTS (SELECT 1 FROM audit a WHERE a.incident_id = i.id AND a.kind = 'escalation_queued'
          AND a.detail LIKE '%"dedup_key": "remediator-%--1-%') AS target_refused,
  (SELECT {aggregate.format(f"CASE a.kind WHEN 'dry_run' THEN 'dry_run' ELSE {reason} END")}
     FROM audit a WHERE a.incident_id = i.id AND a.kind IN ('refused', 'dry_run')) AS refusals
FROM incidents i WHERE i.id < {before} ORDER BY i.id DESC LIMIT {limit}"""  # noqa: S608 (fragments from this code; values are parameters)


def outcome_of(row: Row) -> IncidentOutcome:
    verified = json.loads(row["verified"]) if row["verified"] else None
    return IncidentOutcome(
        id=row["id"],
        policy=row["policy"],
        status=row["status"],
        opened_at=row["opened_at"],
        labels=json.loads(row["labels"]),
        acted=bool(row["acted"]),
        recovered_step=str(verified.get("step", "")) if isinstance(verified, dict) else None,
        recovered_at=row["verified_at"],
        escalated=bool(row["escalated"]),
        refusals=tuple(r for r in (row["refusals"] or "").split(",") if r)
        + (("target_refused",) if row["target_refused"] else ()),
    )
