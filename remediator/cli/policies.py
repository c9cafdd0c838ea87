"""``remediator policies``: the running daemon's policies and their mode, and switching one between shadow and
enforce without editing its file.
"""

from __future__ import annotations

import argparse

from remediator.cli.arguments import Subparsers, command_parser, daemon_args, output_arg
from remediator.cli.context import daemon_api
from remediator.cli.output import print_json, table
from remediator.errors import RemediatorError


def policies_parser(sub: Subparsers) -> None:
    p = command_parser(
        sub,
        "policies",
        "list the daemon's policies with their mode; switch one between shadow and enforce",
        "  remediator policies\n  remediator policies shadow high-error-rate     record, do not act\n"
        "  remediator policies promote high-error-rate    act again",
    )
    p.add_argument("action", nargs="?", choices=["list", "promote", "shadow"], default="list")
    p.add_argument("name", nargs="?", help="the policy (for promote and shadow)")
    output_arg(p)
    daemon_args(p)
    p.set_defaults(func=cmd_policies)


def cmd_policies(args: argparse.Namespace) -> int:
    if args.action == "list":
        listed = daemon_api(args).get("/api/policies")
        if args.output == "json":
            print_json(listed)
            return 0
        rows = []
        for p in listed["policies"]:
            mode = p["mode"] + (f" (file says {p['file_mode']})" if p["mode"] != p["file_mode"] else "")
            rows.append([p["name"], mode + (", dry run" if p.get("dry_run") else ""), p["source"]])
        print(table(["POLICY", "MODE", "SOURCE"], rows))
        return 0
    if not args.name:
        raise RemediatorError(f"policies {args.action} needs a policy name")
    answer = daemon_api(args).post(f"/api/policies/{args.name}/{args.action}")
    print(f"policy {answer['policy']} is now {answer['mode']}")
    return 0
