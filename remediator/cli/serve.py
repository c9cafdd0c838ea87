"""``remediator serve``: runs the daemon. What keeps it from starting (an address taken or unknown, a certificate
it cannot read) becomes a configuration error naming the setting, not a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import ssl

from remediator.actions.catalogue import SPECS
from remediator.app import serve
from remediator.cli.arguments import Subparsers, command_parser, policies_arg
from remediator.cli.context import load_settings
from remediator.errors import ConfigError, PolicyError
from remediator.logs import setup as setup_logs
from remediator.policy.loader import load_dir
from remediator.settings import Settings


def serve_parser(sub: Subparsers) -> None:
    p = command_parser(
        sub,
        "serve",
        "run the daemon (the Alertmanager webhook target)",
        "  remediator serve\n  remediator serve --policies /etc/remediator/policies --host 0.0.0.0 --port 9095\n"
        "  REMEDIATOR_SERVER__TOKEN=s3cret REMEDIATOR_DOCKER__HOST=unix:///run/docker.sock remediator serve",
    )
    policies_arg(p)
    p.add_argument("--host", help="listen address (default: REMEDIATOR_SERVER__HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default: REMEDIATOR_SERVER__PORT, 9095)")
    p.add_argument("--log-format", choices=["text", "json"], help="log as text (default) or JSON lines")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    if args.host or args.port is not None:
        server = settings.server.model_copy(
            update={k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
        )
        settings = settings.model_copy(update={"server": server})
    setup_logs(args.log_format or settings.log.format, settings.log.level)
    try:
        empty = not load_dir(settings.policies_dir, SPECS)
    except (PolicyError, ConfigError):
        empty = False  # serve refuses the set itself, with the reason
    if empty:
        logging.getLogger("remediator").warning(
            "no policy in %s: every alert is recorded as unmatched and nothing runs; add policy files and "
            "run `remediator reload`",
            settings.policies_dir,
        )
    _check_server_files(settings)
    try:
        asyncio.run(serve(settings))
    except ssl.SSLError as exc:
        raise ConfigError(f"REMEDIATOR_SERVER__TLS_CERT/TLS_KEY/TLS_CLIENT_CA: {exc}") from exc
    except socket.gaierror as exc:
        raise ConfigError(
            f"REMEDIATOR_SERVER__HOST: cannot resolve {settings.server.host!r}: {exc.strerror or exc}"
        ) from exc
    except OSError as exc:
        if "bind" not in str(exc):
            raise
        # The listen address is taken or not this machine's: a setting to change, not a crash to report.
        raise ConfigError(
            f"REMEDIATOR_SERVER__HOST/PORT: cannot listen on {settings.server.host}:{settings.server.port}: "
            f"{(exc.strerror or str(exc)).rsplit(': ', 1)[-1]}"
        ) from exc
    return 0


def _check_server_files(settings: Settings) -> None:
    """The listener's certificate files can be read (else the TLS library's error names no file)."""
    server = settings.server
    for name, path in (
        ("TLS_CERT", server.tls_cert),
        ("TLS_KEY", server.tls_key),
        ("TLS_CLIENT_CA", server.tls_client_ca),
    ):
        if path is None:
            continue
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise ConfigError(
                f"REMEDIATOR_SERVER__{name}: cannot read {path}: {exc.strerror or exc}"
            ) from exc
