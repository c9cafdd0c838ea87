"""``remediator report``: how well each policy worked over a period (``GET /api/report``). ``--since`` is parsed
here, so that a typo fails at the prompt rather than at the daemon.
"""

from __future__ import annotations

import argparse
from datetime import datetime

from remediator.cli.arguments import Subparsers, command_parser, daemon_args, output_arg
from remediator.cli.context import daemon_api
from remediator.cli.output import print_json, table, when

_PERIOD_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


def report_period(text: str) -> float:
    """``--since``: ``7d``, ``24h``, ``90m``, ``2w``, ``3600s`` or a number of seconds, as seconds."""
    text = text.strip().lower()
    unit = _PERIOD_UNITS.get(text[-1:]) if text else None
    number = text[:-1] if unit is not None else text
    try:
        value = float(number) * (unit or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a period: write 7d, 24h, 90m, 2w or seconds"
        ) from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the period must be longer than 0")
    return value


def report_parser(sub: Subparsers) -> None:
    p = command_parser(
        sub,
        "report",
        "how well each policy worked: incidents, acted, recovered (by step), escalated, refused, success rate,"
        " time to recovery, pages avoided",
        "  remediator report                     the last 7 days\n"
        "  remediator report --since 24h\n"
        "  remediator report --since 30d -o json | jq '.policies[] | {policy, success_rate}'",
        description="How well each policy worked over a period, read by the running daemon from its store (the"
        " same from any replica, after any restart; GET /api/report). Success rate: recovered / acted (shadow"
        " mode and dry run never act). Pages avoided: incidents at P1 or P2 that recovered after an action and"
        " were never escalated.",
    )
    p.add_argument(
        "--since",
        type=report_period,
        default=7 * 86_400.0,
        metavar="PERIOD",
        help="how far back, by when incidents opened: 7d (default), 24h, 90m, 2w, or seconds",
    )
    output_arg(p)
    daemon_args(p)
    p.set_defaults(func=cmd_report)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.1f}s"
    if value < 7200:
        return f"{value / 60:.1f}m"
    return f"{value / 3600:.1f}h"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} {count}" for key, count in counts.items()) or "-"


def cmd_report(args: argparse.Namespace) -> int:
    answer = daemon_api(args).get("/api/report", since=f"{args.since:g}")
    if args.output == "json":
        print_json(answer)
        return 0
    rows = []
    for effect in [*answer["policies"], answer["all"]]:
        rate = effect["success_rate"]
        rows.append(
            [
                effect["policy"],
                effect["incidents"],
                effect["acted"],
                effect["recovered"],
                "-" if rate is None else f"{rate * 100:.0f}%",
                _seconds(effect["time_to_recovery_p50_s"]),
                _seconds(effect["time_to_recovery_p90_s"]),
                effect["escalated"],
                effect["refused"],
                effect["pages_avoided"],
                _counts(effect["recovered_by_step"]),
                _counts(effect["refusals"]),
            ]
        )
    print(f"incidents opened from {when(_ts(answer['since']))} to {when(_ts(answer['until']))} UTC")
    headers = ["POLICY", "INCIDENTS", "ACTED", "RECOVERED", "SUCCESS", "TTR P50", "TTR P90", "ESCALATED"]
    headers += ["REFUSED", "PAGES AVOIDED", "RECOVERED BY STEP", "REFUSALS BY REASON"]
    print(table(headers, rows))
    return 0


def _ts(iso_time: str) -> float:
    return datetime.fromisoformat(iso_time).timestamp()
