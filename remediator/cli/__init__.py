"""The command line: ``remediator COMMAND``. Run ``remediator --help``.

Each command has a module, named after it, with a function that builds its parser (listed in
``entrypoint.SUBCOMMANDS``, in ``--help`` order: a new command is one more module and one more entry there) and
a ``cmd_*`` that runs it. Everything that reads or changes live state (incidents, status, pause, policies, hosts,
approvals, reload, drills) calls the running daemon's API through ``api_client``, with the token the daemon
uses; ``serve``, ``store stats`` and ``backtest --inbox`` (which only reads the inbox) are the only commands that
open the store, and none creates one as a side effect of a read.

One module a command, and the few pieces they share:

    entrypoint       the top-level parser (every command in --help order) and main: failures -> message, exit code
    arguments        how a command's parser is made; -o, --policies, --url/--token
    output           tables, JSON, times in UTC
    context          the settings, the policy directory, the daemon's API and its token
    settings_errors  a bad setting as one line, named as the user set it, no credential repeated
    serve            serve
    check            check
    simulate         simulate
    backtest         backtest
    incidents        incidents (list, show, report); pending approvals
    report           report: how well each policy worked
    status           status
    control          pause, resume, reload
    policies         policies (list, shadow, promote)
    hosts            hosts
    approvals        approve, deny
    maintenance      maintenance (add, list, cancel)
    drill            drill
    store            store stats
    healthcheck      healthcheck

This package re-exports what other code and tests import from ``remediator.cli`` (``main`` for the console
script and ``python -m remediator``).
"""

from __future__ import annotations

from remediator.cli.approvals import cmd_decide
from remediator.cli.arguments import Subparsers
from remediator.cli.backtest import cmd_backtest
from remediator.cli.check import cmd_check
from remediator.cli.control import cmd_control
from remediator.cli.drill import cmd_drill
from remediator.cli.entrypoint import EPILOG, SUBCOMMANDS, main, parser
from remediator.cli.healthcheck import cmd_healthcheck
from remediator.cli.hosts import cmd_hosts
from remediator.cli.incidents import STATUSES, cmd_incidents, pending_approval
from remediator.cli.maintenance import cmd_maintenance, parse_duration, parse_start
from remediator.cli.output import print_json, table
from remediator.cli.policies import cmd_policies
from remediator.cli.report import cmd_report, report_period
from remediator.cli.serve import cmd_serve
from remediator.cli.simulate import cmd_simulate, simulate_alert
from remediator.cli.status import cmd_status
from remediator.cli.store import cmd_store

__all__ = [
    "EPILOG",
    "STATUSES",
    "SUBCOMMANDS",
    "Subparsers",
    "cmd_backtest",
    "cmd_check",
    "cmd_control",
    "cmd_decide",
    "cmd_drill",
    "cmd_healthcheck",
    "cmd_hosts",
    "cmd_incidents",
    "cmd_maintenance",
    "cmd_policies",
    "cmd_report",
    "cmd_serve",
    "cmd_simulate",
    "cmd_status",
    "cmd_store",
    "main",
    "parse_duration",
    "parse_start",
    "parser",
    "pending_approval",
    "print_json",
    "report_period",
    "simulate_alert",
    "table",
]
