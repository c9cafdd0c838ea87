"""``remediator`` itself: the top-level parser, with every command in ``--help`` order, and ``main``, which turns
each kind of failure into one message and its exit code (2: configuration; 1: a failed call or command; 130:
interrupted).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from pydantic import ValidationError
from pydantic_settings import SettingsError

from remediator import __version__
from remediator.api_client import ApiError
from remediator.cli.approvals import decide_parsers
from remediator.cli.arguments import Subparsers
from remediator.cli.backtest import backtest_parser
from remediator.cli.check import check_parser
from remediator.cli.context import api_hint
from remediator.cli.control import control_parsers
from remediator.cli.drill import drill_parser
from remediator.cli.healthcheck import healthcheck_parser
from remediator.cli.hosts import hosts_parser
from remediator.cli.incidents import incidents_parser
from remediator.cli.maintenance import maintenance_parser
from remediator.cli.policies import policies_parser
from remediator.cli.report import report_parser
from remediator.cli.serve import serve_parser
from remediator.cli.settings_errors import settings_json_problems, settings_problems
from remediator.cli.simulate import simulate_parser
from remediator.cli.status import status_parser
from remediator.cli.store import store_parser
from remediator.env_check import warnings as env_warnings
from remediator.errors import ConfigError, RemediatorError

EPILOG = """
environment:
  Every setting is a REMEDIATOR_* variable (nested with __), e.g. REMEDIATOR_SERVER__TOKEN,
  REMEDIATOR_DOCKER__HOST, REMEDIATOR_POLICIES_DIR; docs/operations.md lists them all. A REMEDIATOR_*
  variable that is no setting is warned about, with the nearest name.

examples:
  remediator check policies/                      validate every policy file
  remediator simulate alert.json                  what an alert would trigger, acting on nothing
  remediator serve                                run the daemon (webhook on 127.0.0.1:9095/alerts)
  remediator incidents --status active            what the running daemon is working on
  remediator incidents show 7                     one incident's timeline
  remediator status                               paused? dry run? backlog, breakers
  remediator policies -o json                     every listing has -o table|json
"""


SUBCOMMANDS: list[Callable[[Subparsers], None]] = [
    serve_parser,
    check_parser,
    simulate_parser,
    backtest_parser,
    incidents_parser,
    report_parser,
    status_parser,
    control_parsers,
    policies_parser,
    hosts_parser,
    decide_parsers,
    maintenance_parser,
    drill_parser,
    store_parser,
    healthcheck_parser,
]
"""The functions that add the commands' parsers, in the order ``--help`` lists them. An explicit list rather than
registration at import: the import order of the command modules is alphabetical (ruff sorts it), the help order
is not. A new command is one more module and one more entry here."""


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="remediator",
        description="Runs on-call runbooks by itself: takes Alertmanager webhooks, runs the matching policy's "
        "bounded actions, verifies recovery, and escalates to a human when the policy runs out.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"remediator {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    for line in env_warnings(os.environ):
        print(line, file=sys.stderr)
    try:
        return int(args.func(args))
    except ValidationError as exc:
        # The commands catch what they validate themselves (payloads): what is left is configuration, the
        # settings or a part of them validated when it is used.
        for line in settings_problems(exc):
            print(f"error: {line}", file=sys.stderr)
        return 2
    except SettingsError as exc:
        for line in settings_json_problems(exc):
            print(f"error: {line}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ApiError as exc:
        print(f"error: {exc}{api_hint(exc)}", file=sys.stderr)
        return 1
    except RemediatorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
