"""A backtest's report as people read it (``-o json`` prints the report itself): apart from the replay, so
that the wording can change without touching what is counted."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from remediator.backtest.replay import SETTLE_S


def render(
    report: dict[str, Any], table: Callable[[Sequence[str] | None, Iterable[Sequence[object]]], str]
) -> str:
    """The report as people read it: one row per policy, then every action that would have run."""
    lines = [
        f"backtest of {report['notifications']} notifications "
        f"({', '.join(f'{n} {s}' for s, n in sorted(report['alerts'].items())) or 'no alerts'}) "
        f"from {report['from'] or '-'} to {report['to'] or '-'}: nothing was executed, nobody was paged",
        "",
    ]
    rows = []
    for name, row in sorted(report["policies"].items()):
        busiest = row["busiest_hour"]
        rows.append(
            [
                name,
                row["mode"],
                row["incidents"],
                len(row["actions"]),
                f"{row['verified']}/{row['not_recovered']}",
                _pairs(row["refusals"]),
                _pairs(row["escalations"]),
                _pairs(row["pages"]),
                f"{busiest['hour']} ({busiest['incidents']} inc, {busiest['actions']} act)"
                if busiest
                else "",
            ]
        )
    headers = ["POLICY", "MODE", "INCIDENTS", "ACTIONS", "RECOVERED/NOT", "REFUSED", "ESCALATED", "PAGES"]
    lines.append(table([*headers, "BUSIEST HOUR"], rows))
    actions = [
        [a["at"], name, a["step"], a["target"], a["host"], a["incident"]]
        for name, row in sorted(report["policies"].items())
        for a in row["actions"]
    ]
    if actions:
        lines += ["", "actions that would have run:"]
        lines.append(table(["TIME", "POLICY", "STEP", "TARGET", "HOST", "INCIDENT"], sorted(actions)))
    floors = [
        f"  {name}: {row['healthy_floor']}"
        for name, row in sorted(report["policies"].items())
        if row.get("healthy_floor", "none") != "none"
    ]
    if floors:
        lines += ["", "healthy floors:", *floors]
    lines.append("")
    lines.append(f"alerts no policy takes: {report['unmatched_alerts']}")
    if report.get("unfinished_ladders"):
        lines.append(
            f"ladders still running {SETTLE_S:g}s after the history ends: {report['unfinished_ladders']}"
        )
    for problem in report.get("problems", []):
        lines.append(f"problem during the replay: {problem}")
    return "\n".join(lines)


def _pairs(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())
