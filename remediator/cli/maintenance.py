"""``remediator maintenance``: declare, list and cancel maintenance windows on the running daemon. Durations and
start times are parsed here, and each window is signed with who declared or cancelled it (user@host), for the
audit.
"""

from __future__ import annotations

import argparse
import getpass
import re
import socket
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from remediator.cli.arguments import Subparsers, command_parser, daemon_args, output_arg
from remediator.cli.context import daemon_api
from remediator.cli.output import print_json, table
from remediator.errors import RemediatorError

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_duration(text: str) -> float:
    """``2h``, ``90m``, ``1h30m``, ``1d``, ``45s`` or a number of seconds, as seconds (ValueError otherwise)."""
    text = text.strip()
    if text.isdigit():
        return float(text)
    found = _DURATION.fullmatch(text)
    if not text or found is None or not any(found.groups()):
        raise ValueError(f"{text!r} is not a duration: write 2h, 90m, 1h30m, 1d, 45s or seconds")
    days, hours, minutes, seconds = (int(g or 0) for g in found.groups())
    return float(days * 86_400 + hours * 3600 + minutes * 60 + seconds)


def parse_start(text: str, now: float) -> float:
    """``--start``: ``+30m`` (from now), or an ISO 8601 time (``2026-12-01T22:00Z``; one without an offset is
    UTC), as a Unix time (ValueError otherwise)."""
    text = text.strip()
    if text.startswith("+"):
        return now + parse_duration(text[1:])
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a time: write +30m, or 2026-12-01T22:00Z (UTC)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def maintenance_parser(sub: Subparsers) -> None:
    p = command_parser(
        sub,
        "maintenance",
        "declare, list and cancel maintenance windows: alerts are recorded, nothing acts, nobody is paged",
        '  remediator maintenance add --target sms-db --for 2h --reason "disk swap, CHG-1234"\n'
        "  remediator maintenance add --target sms-db --host db-1 --policy database-down --for 30m \\\n"
        '      --start 2026-12-01T22:00Z --reason "failover test"\n'
        "  remediator maintenance add --target web --for 1h --start +15m --reason deploy\n"
        "  remediator maintenance list [--all]             scheduled and in force (--all: ended too)\n"
        "  remediator maintenance cancel 3                 end it now: what still fires is remediated",
        description="Maintenance windows. While a window holds a target, its alerts are recorded and their\n"
        "incidents are 'maintenance': no action runs and nobody is paged. When it ends (on time or\n"
        "cancelled), an incident whose alerts still fire starts its ladder as a new one would; one whose\n"
        "alerts resolved was closed quietly. A window longer than REMEDIATOR_MAINTENANCE__MAX_S is refused.",
    )
    p.add_argument("action", nargs="?", choices=["list", "add", "cancel"], default="list")
    p.add_argument("id", nargs="?", type=int, help="the window (for cancel)")
    p.add_argument("--target", help="the target the window holds (for add)")
    p.add_argument("--host", help="only on this Docker host (default: any host)")
    p.add_argument("--policy", help="only this policy's incidents (default: any policy)")
    p.add_argument(
        "--for", dest="duration", metavar="DURATION", help="how long: 2h, 90m, 1h30m, 1d (for add)"
    )
    p.add_argument("--reason", help="why: the audit and the incidents show it (for add)")
    p.add_argument("--start", help="when it begins: +30m, or 2026-12-01T22:00Z (default: now)")
    p.add_argument("--all", action="store_true", help="list also the windows that ended in the last day")
    output_arg(p)
    daemon_args(p)
    p.set_defaults(func=cmd_maintenance)


def _who() -> str:
    """Who declares or cancels a window, for the audit: the user and the machine the command runs on."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _window_rows(windows: Iterable[dict[str, Any]]) -> list[list[object]]:
    return [
        [
            w["id"],
            w["state"],
            w["target"],
            w["host"] or "any",
            w["policy"] or "any",
            w["starts_utc"],
            w["ends_utc"],
            w["created_by"],
            w["reason"],
        ]
        for w in windows
    ]


_WINDOW_HEADERS = ["ID", "STATE", "TARGET", "HOST", "POLICY", "STARTS (UTC)", "ENDS (UTC)", "BY", "REASON"]


def cmd_maintenance(args: argparse.Namespace) -> int:
    if args.action == "list":
        listed = daemon_api(args).get("/api/maintenance", all=1 if args.all else None)
        if args.output == "json":
            print_json(listed)
        else:
            print(table(_WINDOW_HEADERS, _window_rows(listed["windows"])))
        return 0
    if args.action == "cancel":
        if args.id is None:
            raise RemediatorError("maintenance cancel needs a window id (remediator maintenance list)")
        answer = daemon_api(args).delete(f"/api/maintenance/{args.id}", by=_who())
        if args.output == "json":
            print_json(answer)
        else:
            print(
                f"maintenance window {args.id} cancelled: incidents it held whose alerts still fire are"
                " remediated now"
            )
        return 0
    missing = [flag for flag, value in (("--target", args.target), ("--for", args.duration)) if not value]
    if not args.reason:
        missing.append("--reason")
    if missing:
        raise RemediatorError(f"maintenance add needs {', '.join(missing)}")
    try:
        body: dict[str, Any] = {
            "target": args.target,
            "for_s": parse_duration(args.duration),
            "reason": args.reason,
            "by": _who(),
        }
        if args.start:
            body["start"] = parse_start(args.start, time.time())
    except ValueError as exc:
        raise RemediatorError(str(exc)) from exc
    if args.host:
        body["host"] = args.host
    if args.policy:
        body["policy"] = args.policy
    answer = daemon_api(args).post("/api/maintenance", body)
    for warning in answer.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    if args.output == "json":
        print_json(answer)
        return 0
    w = answer["window"]
    print(
        f"maintenance window {w['id']} on {w['target']} (host {w['host'] or 'any'}, policy"
        f" {w['policy'] or 'any'}) from {w['starts_utc']} to {w['ends_utc']}: {w['state']}"
    )
    return 0
