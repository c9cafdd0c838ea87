"""``remediator incidents``: list, show and report the running daemon's incidents. Whether one waits for a person
is worked out here from its timeline (``pending_approval``), so that the listing says who must act, and how.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from remediator.api_client import ApiClient, ApiError
from remediator.cli.arguments import Subparsers, command_parser, daemon_args, output_arg
from remediator.cli.context import daemon_api
from remediator.cli.output import print_json, table, when
from remediator.domain.report import IncidentReport
from remediator.domain.report import markdown as report_markdown
from remediator.errors import RemediatorError

STATUSES = ("active", "escalated", "maintenance", "resolved")


def incidents_parser(sub: Subparsers) -> None:
    p = command_parser(
        sub,
        "incidents",
        "list the running daemon's incidents, or show one with its timeline",
        "  remediator incidents                         the latest 50\n"
        "  remediator incidents list --status active --limit 10\n"
        "  remediator incidents show 7\n"
        "  remediator incidents report 7 > incident-7.md   the post-incident report (Markdown)\n"
        "  remediator incidents report 7 -o json\n"
        "  remediator incidents -o json | jq '.incidents[].target'",
    )
    p.add_argument(
        "action",
        nargs="?",
        choices=["list", "show", "report"],
        default="list",
        help="list (default), show, or report (the post-incident report: Markdown, or -o json)",
    )
    p.add_argument("id", nargs="?", type=int, help="incident id (for show and report)")
    p.add_argument("--status", choices=STATUSES, help="only incidents in this state")
    p.add_argument("--limit", type=int, default=50, help="how many to list, newest first (default 50)")
    output_arg(p)
    daemon_args(p)
    p.set_defaults(func=cmd_incidents)


def pending_approval(timeline: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The approval request an incident's ``timeline`` leaves unanswered: step, requested_at, expires_at (unix
    seconds) and on_timeout (``deny`` or ``proceed``); None when there is none."""
    pending: dict[str, Any] | None = None
    for event in timeline:
        detail = event.get("detail") or {}
        if event.get("kind") == "approval_requested":
            requested = float(detail.get("requested_at") or datetime.fromisoformat(event["at"]).timestamp())
            pending = {
                "step": str(detail.get("step", "")),
                "requested_at": requested,
                "expires_at": requested + float(detail.get("timeout_s") or 0),
                "on_timeout": detail.get("on_timeout") or "deny",
            }
        elif event.get("kind") in ("approved", "denied") and pending is not None:
            answered = detail.get("requested_at")
            if answered is None or float(answered) == pending["requested_at"]:
                pending = None
    return pending


def _approval_reason(incident: dict[str, Any]) -> str:
    approval = incident["pending_approval"]
    silence = "it runs" if approval["on_timeout"] == "proceed" else "it is denied and escalated"
    return (
        f"{approval['step']} on {incident['target']} waits for approval: `remediator approve|deny "
        f"{incident['id']}`; unanswered at {when(approval['expires_at'])} UTC, {silence}"
    )


def _with_approval(
    api: ApiClient, incident: dict[str, Any], timeline: Sequence[dict[str, Any]] | None
) -> None:
    """Mark an active incident that waits for a person: ``pending_approval``, and its status shown as such."""
    if incident.get("status") != "active":
        return
    if timeline is None:
        try:
            timeline = api.get(f"/api/incidents/{incident['id']}").get("timeline", [])
        except ApiError as exc:
            if exc.status != 404:  # deleted meanwhile (retention): listed as it was
                raise
            return
    approval = pending_approval(timeline)
    if approval is not None:
        incident["pending_approval"] = approval


def _shown_status(incident: dict[str, Any]) -> str:
    return "awaiting approval" if "pending_approval" in incident else str(incident["status"])


def _shown_reason(incident: dict[str, Any]) -> str:
    return _approval_reason(incident) if "pending_approval" in incident else str(incident.get("reason", ""))


def cmd_incidents(args: argparse.Namespace) -> int:
    if args.action in ("show", "report"):
        if args.id is None:
            raise RemediatorError(f"incidents {args.action} needs an incident id")
        if args.action == "report":
            return _incident_report(daemon_api(args), args.id, args.output)
        return _incident_show(daemon_api(args), args.id, args.output)
    api = daemon_api(args)
    found: list[dict[str, Any]] = api.get("/api/incidents", status=args.status, limit=args.limit)["incidents"]
    for incident in found:
        _with_approval(api, incident, None)
    if args.output == "json":
        print_json({"incidents": found})
        return 0
    fleet = any(i.get("host", "default") != "default" for i in found)
    headers = ["ID", "STATUS", "OPENED (UTC)", "POLICY", *(["HOST"] if fleet else []), "TARGET", "REASON"]
    rows = [
        [
            i["id"],
            _shown_status(i),
            when(i["opened_at"]),
            i["policy"],
            *([i.get("host", "")] if fleet else []),
            i["target"],
            _shown_reason(i),
        ]
        for i in found
    ]
    print(table(headers, rows))
    if not found:
        print(f"(no {args.status + ' ' if args.status else ''}incidents)")
    return 0


def _incident_report(api: ApiClient, incident_id: int, output: str) -> int:
    """The post-incident report from the daemon (``GET /api/incidents/ID/report``), rendered here as Markdown
    by the same function as the daemon's ``?format=markdown``."""
    report = api.get(f"/api/incidents/{incident_id}/report", format="json")
    if output == "json":
        print_json(report)
    else:
        print(report_markdown(cast(IncidentReport, report)), end="")
    return 0


def _incident_show(api: ApiClient, incident_id: int, output: str) -> int:
    incident = api.get(f"/api/incidents/{incident_id}")
    _with_approval(api, incident, incident.get("timeline", []))
    if output == "json":
        print_json(incident)
        return 0
    host = incident.get("host", "default")
    print(
        f"incident {incident['id']}: {incident['policy']} on {incident['target']}"
        f"{f' (host {host})' if host != 'default' else ''}, {_shown_status(incident)}, "
        f"severity {incident.get('severity') or '-'}, opened {when(incident['opened_at'])} UTC"
    )
    reason = _shown_reason(incident)
    if reason:
        print(f"{'approval' if 'pending_approval' in incident else 'reason'}: {reason}")
    print("labels: " + ", ".join(f"{k}={v}" for k, v in sorted(incident.get("labels", {}).items())))
    print(
        table(
            ["AT (UTC)", "WHAT", "DETAIL"],
            (
                [e["at"][:19].replace("T", " "), e["kind"], json.dumps(e["detail"], sort_keys=True)]
                for e in incident.get("timeline", [])
            ),
        )
    )
    return 0
