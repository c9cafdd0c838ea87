"""``remediator status``: the running daemon at a glance (paused?, dry run?, backlog, breakers, maintenance);
the breakers that are not closed are listed apart, being what to look at.
"""

from __future__ import annotations

import argparse
from typing import Any

from remediator.cli.arguments import Subparsers, command_parser, daemon_args, output_arg
from remediator.cli.context import daemon_api
from remediator.cli.output import print_json, table


def status_parser(sub: Subparsers) -> None:
    p = command_parser(
        sub,
        "status",
        "paused?, dry run?, open incidents, intake backlog and breakers of the running daemon",
        "  remediator status\n  remediator status -o json\n"
        "  remediator status --url https://remediator.internal:9095",
    )
    output_arg(p)
    daemon_args(p)
    p.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    status = daemon_api(args).get("/api/status")
    if args.output == "json":
        print_json(status)
        return 0
    rows: list[list[object]] = [
        [
            "automation",
            "PAUSED: no action runs; alerts are still recorded and escalated (`remediator resume`)"
            if status.get("paused")
            else "running",
        ],
        [
            "dry run",
            "on: every decision is recorded, no action is executed" if status.get("dry_run") else "off",
        ],
        ["open incidents", status.get("open_incidents")],
        ["intake backlog", status.get("backlog")],
    ]
    breakers: dict[str, Any] = status.get("breakers") or {}
    tripped = {name: state for name, state in breakers.items() if state != "closed"}
    rows.append(["breakers", f"{len(breakers)}, {len(tripped)} not closed" if breakers else "none yet"])
    windows = status.get("maintenance_windows_in_force")
    if windows:
        rows.append(["maintenance", f"{windows} window(s) in force (`remediator maintenance list`)"])
    known = {"paused", "dry_run", "open_incidents", "backlog", "breakers", "maintenance_windows_in_force"}
    rows += [
        [k.replace("_", " "), v]
        for k, v in sorted(status.items())
        if k not in known and not isinstance(v, (dict, list))
    ]
    print(table(None, rows))
    if tripped:
        print()
        print(table(["BREAKER", "STATE"], sorted(tripped.items())))
    return 0
