"""``remediator approve`` and ``deny``: the answer to a step that waits for a person (``remediator incidents``
shows which).
"""

from __future__ import annotations

import argparse

from remediator.cli.arguments import Subparsers, command_parser, daemon_args
from remediator.cli.context import daemon_api


def decide_parsers(sub: Subparsers) -> None:
    for name, text in (
        ("approve", "let a step waiting for approval act"),
        ("deny", "refuse it (the incident escalates)"),
    ):
        p = command_parser(
            sub, name, text, f"  remediator incidents --status active    find it\n  remediator {name} 7"
        )
        p.add_argument("id", type=int, help="the incident id")
        daemon_args(p)
        p.set_defaults(func=cmd_decide)


def cmd_decide(args: argparse.Namespace) -> int:
    answer = daemon_api(args).post(f"/api/incidents/{args.id}/{args.command}")
    print(f"incident {answer['incident_id']}: {'approved' if answer['approved'] else 'denied'}")
    return 0
