"""``remediator pause``, ``resume`` and ``reload``: the switches of the running daemon, one POST each and one
line of answer.
"""

from __future__ import annotations

import argparse

from remediator.cli.arguments import Subparsers, command_parser, daemon_args
from remediator.cli.context import daemon_api


def control_parsers(sub: Subparsers) -> None:
    for name, text, example in (
        ("pause", "kill switch: stop every action now (alerts are still recorded and escalated)", "pause"),
        ("resume", "undo pause", "resume"),
        (
            "reload",
            "load the policy files again (a broken set is refused; the policies in force stay)",
            "check && remediator reload",
        ),
    ):
        p = command_parser(
            sub, name, text, f"  remediator {example}\n  remediator {name} --url http://10.0.0.5:9095"
        )
        daemon_args(p)
        p.set_defaults(func=cmd_control)


def cmd_control(args: argparse.Namespace) -> int:
    if args.command == "reload":
        answer = daemon_api(args).post("/-/reload")
        print(f"{answer['policies']} policies in force (version {answer['version']})")
        return 0
    answer = daemon_api(args).post(f"/api/{args.command}")
    print(
        "automation paused: no action runs; alerts are still recorded and escalated"
        if answer["paused"]
        else "automation resumed"
    )
    return 0
