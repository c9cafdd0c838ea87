"""``remediator healthcheck``: the container's HEALTHCHECK. Docker reserves exit code 2, so this reports
unreadable settings itself, as exit 1, rather than leave them to ``main``.
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError
from pydantic_settings import SettingsError

from remediator.cli.arguments import Subparsers, command_parser
from remediator.cli.settings_errors import settings_json_problems, settings_problems
from remediator.healthcheck import TIMEOUT_S as HEALTHCHECK_TIMEOUT_S
from remediator.healthcheck import check as health_check
from remediator.settings import Settings


def healthcheck_parser(sub: Subparsers) -> None:
    p = command_parser(
        sub,
        "healthcheck",
        "is the daemon here ready? exit 0 if its /readyz says so, else 1 (for HEALTHCHECK)",
        "  remediator healthcheck\n"
        '  HEALTHCHECK CMD ["remediator", "healthcheck"]        (Dockerfile)\n'
        "  remediator healthcheck --url https://10.0.0.5:9095 --timeout 5",
        description="Asks the local daemon's /readyz where `serve` listens: REMEDIATOR_SERVER__HOST and "
        "__PORT (a wildcard address is probed on the loopback), over HTTPS when REMEDIATOR_SERVER__TLS_CERT "
        "is set (the certificate is not checked). Prints one line; exit 0 ready, 1 not (or settings it "
        "cannot read).",
    )
    p.add_argument("--url", help="the daemon's base URL (default: from REMEDIATOR_SERVER__HOST/PORT)")
    p.add_argument("--host", help="probe this address instead of REMEDIATOR_SERVER__HOST")
    p.add_argument("--port", type=int, help="probe this port instead of REMEDIATOR_SERVER__PORT")
    p.add_argument(
        "--timeout",
        type=float,
        default=HEALTHCHECK_TIMEOUT_S,
        help=f"seconds to wait for the answer (default {HEALTHCHECK_TIMEOUT_S:g})",
    )
    p.set_defaults(func=cmd_healthcheck)


def cmd_healthcheck(args: argparse.Namespace) -> int:
    """One line and 0 when the daemon is ready, else 1 (also for unreadable settings: Docker reserves 2)."""
    try:
        settings = Settings()
    except ValidationError as exc:
        print("unhealthy: " + "; ".join(settings_problems(exc)), file=sys.stderr)
        return 1
    except SettingsError as exc:
        print("unhealthy: " + "; ".join(settings_json_problems(exc)), file=sys.stderr)
        return 1
    health = health_check(settings, args.url, args.host, args.port, args.timeout)
    print(health.line, file=sys.stdout if health.ok else sys.stderr)
    return 0 if health.ok else 1
