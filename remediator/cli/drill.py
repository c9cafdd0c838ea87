"""``remediator drill``: rehearse a policy on a real target against the running daemon. ``remediator.drill``
does the work; this finds the policy and prints the verdict (exit 0 when it passed).
"""

from __future__ import annotations

import argparse
import asyncio

from remediator.actions.catalogue import SPECS
from remediator.cli.arguments import Subparsers, command_parser, daemon_args, policies_arg
from remediator.cli.context import daemon_api, load_settings
from remediator.drill import run_drill
from remediator.errors import RemediatorError
from remediator.policy.loader import load_dir


def drill_parser(sub: Subparsers) -> None:
    p = command_parser(
        sub,
        "drill",
        "inject the failure a policy covers and time detection, action and recovery",
        "  remediator drill database-down --target sms-db\n"
        "  remediator drill high-error-rate --target web --alertmanager http://127.0.0.1:9093",
        description="Stops the target container (or posts a synthetic alert, per the policy's drill: section), "
        "then follows the running daemon's incident and reports against the policy's success criteria. "
        "Exit 0 when it passed.",
    )
    p.add_argument("policy", help="the policy to rehearse")
    p.add_argument("--target", required=True, help="what to break; must pass the policy's allow list")
    p.add_argument("--alertmanager", metavar="URL", help="Alertmanager, for drills that post an alert")
    p.add_argument("--timeout", type=float, help="give up after this many seconds (default: criteria + 30)")
    p.add_argument(
        "--host",
        help="the Docker host of the target (REMEDIATOR_DOCKER__HOSTS; default: the policy's own, or default)",
    )
    p.add_argument(
        "--host-label",
        metavar="VALUE",
        help="the host label's value in a synthetic alert, for a policy that reads its host through a pattern"
        " (e.g. web-1:9100; default: the host's name)",
    )
    policies_arg(p)
    daemon_args(p)
    p.set_defaults(func=cmd_drill)


def cmd_drill(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    policies = {p.name: p for p in load_dir(settings.policies_dir, SPECS)}
    policy = policies.get(args.policy)
    if policy is None:
        raise RemediatorError(f"no policy {args.policy!r} (have: {', '.join(sorted(policies))})")
    report = asyncio.run(
        run_drill(
            settings,
            policy,
            args.target,
            daemon_api(args),
            args.alertmanager,
            args.timeout,
            host=args.host,
            host_label=args.host_label,
        )
    )
    print(report.render())
    return 0 if report.passed else 1
