"""``remediator backtest``: the flags of a replay. ``remediator.backtest`` replays; this picks the history (a
file, the inbox, Prometheus) and its range, and prints the report.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime
from pathlib import Path

from remediator import backtest
from remediator.cli.arguments import Subparsers, command_parser, output_arg, policies_arg
from remediator.cli.context import load_policies, load_settings
from remediator.cli.output import print_json, table, when
from remediator.errors import RemediatorError
from remediator.settings import Settings
from remediator.store.factory import build_store


def backtest_parser(sub: Subparsers) -> None:
    p = command_parser(
        sub,
        "backtest",
        "replay past alerts through the policies and guards in virtual time: what would have run, been refused"
        " or paged (nothing runs)",
        "  remediator backtest --prometheus http://prometheus:9090 --since 7d\n"
        "  remediator backtest --prometheus http://prometheus:9090 --start 2026-11-01 --end 2026-11-08 -o json\n"
        "  remediator backtest --inbox --since 1d --policies new-policies/      last day's alerts, a new policy set\n"
        "  remediator backtest --file webhooks.jsonl                            one webhook body a line",
        description="Replays alert history through the daemon's own intake, runner, gate and escalator on a "
        "throwaway SQLite store, with a virtual clock: no action runs, nobody is paged. The history is a file "
        "of webhook bodies (--file), what this daemon received (--inbox: the store's inbox, read only; it "
        "keeps REMEDIATOR_RETENTION__INBOX_S), or Prometheus's ALERTS series turned into the notifications "
        "Alertmanager would have sent (--prometheus). A verification counts as recovered when the alert's "
        "resolved came within the step's window; a healthy floor is evaluated at the replayed time in "
        "--prometheus, else it is not evaluable and taken to hold. docs/operations.md (Backtest) has the "
        "assumptions.",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--file", metavar="JSONL", help='webhook bodies, one a line ({"at": T, "body": B} or B)'
    )
    source.add_argument("--inbox", action="store_true", help="what this daemon received (its store's inbox)")
    p.add_argument(
        "--prometheus",
        metavar="URL",
        help="Prometheus: its ALERTS series are the history (without --file/--inbox), and healthy floors are "
        "evaluated there at the replayed time",
    )
    p.add_argument(
        "--since", metavar="DURATION", help="the history's last DURATION (7d, 12h, 90m; default 7d)"
    )
    p.add_argument(
        "--start", metavar="TIME", help="the history's start (ISO 8601, UTC unless it says, or Unix)"
    )
    p.add_argument("--end", metavar="TIME", help="the history's end (default: now)")
    p.add_argument(
        "--group-wait",
        type=float,
        default=backtest.AlertmanagerTiming.group_wait_s,
        metavar="S",
        help="--prometheus: seconds from an alert's first firing evaluation to its notification (default %(default)g)",
    )
    p.add_argument(
        "--group-interval",
        type=float,
        default=backtest.AlertmanagerTiming.group_interval_s,
        metavar="S",
        help="--prometheus: seconds from an alert's resolution to its resolved notification (default %(default)g)",
    )
    p.add_argument(
        "--interval",
        type=float,
        metavar="S",
        help="--prometheus: the rules' evaluation interval (default: the median gap between ALERTS samples)",
    )
    p.add_argument("--enforce", action="store_true", help="replay policies in shadow mode as enforced")
    policies_arg(p)
    output_arg(p)
    p.set_defaults(func=cmd_backtest)


def _history_range(args: argparse.Namespace, now: float) -> tuple[float, float]:
    try:
        end = backtest.parse_time(args.end) if args.end else now
        if args.start and args.since:
            raise RemediatorError("--start and --since both say where the history starts: give one")
        start = (
            backtest.parse_time(args.start)
            if args.start
            else end - backtest.parse_duration(args.since or "7d")
        )
    except ValueError as exc:
        raise RemediatorError(str(exc)) from exc
    if start >= end:
        raise RemediatorError(f"the history's start ({when(start)}) is not before its end ({when(end)})")
    return start, end


async def _inbox_history(settings: Settings, start: float, end: float) -> list[backtest.Delivery]:
    store = build_store(settings)
    await store.open()
    try:
        return await backtest.read_inbox(store, start, end)
    finally:
        await store.close()


def cmd_backtest(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    policies = load_policies(settings.policies_dir)
    start, end = _history_range(args, datetime.now(UTC).timestamp())
    if args.file:
        try:
            history = backtest.read_jsonl(Path(args.file), settings.server.max_body_bytes)
        except OSError as exc:
            raise RemediatorError(f"{args.file}: {exc.strerror or exc}") from exc
        if args.start or args.since or args.end:
            history = [d for d in history if start <= d.at <= end]
        source = f"file {args.file}"
    elif args.inbox:
        if settings.store.url is None and not settings.store_path.exists():
            raise RemediatorError(
                f"no store at {settings.store_path} (REMEDIATOR_STORE__PATH, or REMEDIATOR_STATE_DIR): run this "
                "with the daemon's settings"
            )
        history = asyncio.run(_inbox_history(settings, start, end))
        source = "the store's inbox"
    elif args.prometheus:
        timing = backtest.AlertmanagerTiming(args.group_wait, args.group_interval)
        history = backtest.read_prometheus(args.prometheus, start, end, timing, args.interval)
        source = f"ALERTS in {args.prometheus}"
    else:
        raise RemediatorError("no history: give --file JSONL, --inbox or --prometheus URL")
    report = backtest.run(history, policies, settings, prometheus=args.prometheus, enforce=args.enforce)
    report["source"] = source
    ranged = not args.file or bool(args.start or args.since or args.end)
    report["range"] = {"start": when(start), "end": when(end)} if ranged else None
    if args.output == "json":
        print_json(report)
    else:
        print(f"source: {source}" + (f", from {when(start)} to {when(end)} UTC" if ranged else ""))
        print(backtest.render(report, table))
    return 0
