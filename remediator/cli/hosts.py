"""``remediator hosts``: the Docker hosts the running daemon acts on, and how each is (reachable, engine,
breaker, latency, last error).
"""

from __future__ import annotations

import argparse

from remediator.api_client import ApiError
from remediator.cli.arguments import Subparsers, command_parser, daemon_args, output_arg
from remediator.cli.context import daemon_api
from remediator.cli.output import print_json, table, when
from remediator.errors import RemediatorError


def hosts_parser(sub: Subparsers) -> None:
    p = command_parser(
        sub,
        "hosts",
        "the Docker hosts the daemon acts on: reachable?, engine version, breaker, latency",
        "  remediator hosts\n  remediator hosts -o json",
    )
    output_arg(p)
    daemon_args(p)
    p.set_defaults(func=cmd_hosts)


def cmd_hosts(args: argparse.Namespace) -> int:
    try:
        listed = daemon_api(args).get("/api/hosts")
    except ApiError as exc:
        if exc.status == 404:
            raise RemediatorError(f"{exc.url}: this daemon has no host listing (an older version)") from exc
        raise
    if args.output == "json":
        print_json(listed)
        return 0
    rows = [
        [
            h.get("name"),
            h.get("url"),
            {True: "yes", False: "NO"}.get(h.get("reachable"), "?"),
            h.get("engine_version"),
            h.get("breaker"),
            "" if h.get("latency_ms") is None else f"{h['latency_ms']:.0f} ms",
            when(h["checked_at"]) if isinstance(h.get("checked_at"), (int, float)) else h.get("checked_at"),
            h.get("last_error"),
        ]
        for h in listed["hosts"]
    ]
    headers = ["HOST", "URL", "REACHABLE", "ENGINE", "BREAKER", "LATENCY", "CHECKED (UTC)", "LAST ERROR"]
    print(table(headers, rows))
    return 0
