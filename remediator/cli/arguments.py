"""The argparse pieces the commands share, so that every command's ``--help`` reads the same way: how a
subcommand's parser is made (one-line help, description, examples), ``-o table|json``, ``--policies``, and
``--url``/``--token`` for the commands that call the running daemon.
"""

from __future__ import annotations

import argparse
from typing import Any, TypeAlias

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def command_parser(
    sub: Subparsers, name: str, text: str, examples: str = "", **kwargs: Any
) -> argparse.ArgumentParser:
    """A subcommand with its one-line help, and its examples under ``--help``."""
    return sub.add_parser(
        name,
        help=text,
        description=kwargs.pop("description", text[0].upper() + text[1:] + "."),
        epilog=f"examples:\n{examples}" if examples else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **kwargs,
    )


def output_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--output", choices=["table", "json"], default="table", help="a table (default) or JSON"
    )


def policies_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--policies", metavar="DIR", help="policy directory (default: REMEDIATOR_POLICIES_DIR, policies/)"
    )


def daemon_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        help="the daemon's base URL (default: from REMEDIATOR_SERVER__HOST/PORT, https with TLS_CERT)",
    )
    parser.add_argument(
        "--token",
        help="the API token (default: the daemon's own: REMEDIATOR_SERVER__TOKEN, __TOKEN_FILE or "
        "<state_dir>/token; prefer those: other users can read a flag in ps)",
    )
