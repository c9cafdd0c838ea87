"""``remediator check``: validates a policy directory offline, as the daemon would load it (``file:line: reason``,
exit 1), and warns of escalation targets the settings do not configure.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from remediator.app import unknown_notifiers
from remediator.cli.arguments import Subparsers, command_parser, policies_arg
from remediator.cli.context import load_policies, load_settings
from remediator.errors import PolicyError, RemediatorError


def check_parser(sub: Subparsers) -> None:
    p = command_parser(
        sub,
        "check",
        "validate policy files; exit 1 with file:line: reason on a mistake, or when there is no policy",
        "  remediator check                             REMEDIATOR_POLICIES_DIR's directory (policies/)\n"
        "  remediator check policies/\n"
        "  remediator check --policies policies/        the same",
    )
    p.add_argument("dir", nargs="?", help="policy directory, the same as --policies")
    policies_arg(p)
    p.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    if args.dir and args.policies and Path(args.dir) != Path(args.policies):
        raise RemediatorError(f"two policy directories: {args.dir} and --policies {args.policies}")
    args.policies = args.dir or args.policies
    settings = load_settings(args)
    try:
        policies = load_policies(settings.policies_dir)
    except PolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for policy in policies:
        steps = " -> ".join(f"{s.kind} {s.name}" for s in policy.steps)
        print(f"ok  {policy.name:<28} {policy.source}\n    {steps}")
    for missing in unknown_notifiers(policies, settings):
        print(f"warning: escalation target not configured (escalations go to the log): {missing}")
    print(f"{len(policies)} policies valid in {settings.policies_dir}")
    return 0
