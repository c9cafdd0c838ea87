"""``remediator healthcheck``: is the daemon on this machine (or in this container) ready? For a container's
HEALTHCHECK, a systemd watchdog or a person.

It reads the same settings as ``serve`` (REMEDIATOR_SERVER__HOST, __PORT, __TLS_*), so a daemon moved to
another port or to HTTPS is probed where it listens, and asks its ``/readyz`` (public: no token is sent). The
answer is one line and an exit status: 0 ready, 1 anything else, including settings it cannot read (a
container's HEALTHCHECK reserves 2).

Over HTTPS the certificate is not checked: the probe asks a local process whether it is ready and sends no
secret, and the certificate is made for the name clients use, rarely for 127.0.0.1. With mutual TLS the probe
presents the daemon's own certificate, so the client CA must have signed it too (or give ``--url`` to a
listener that needs none).
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass

from remediator.api_client import request_json
from remediator.errors import RemediatorError
from remediator.settings import Settings

TIMEOUT_S = 3.0
"""Docker's default HEALTHCHECK timeout is 30 s; a ready daemon answers /readyz in milliseconds."""

WILDCARDS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}  # noqa: S104 (read, not bound)
"""A listener on every address is probed on the loopback."""


@dataclass(frozen=True)
class Health:
    ok: bool
    line: str


def probe_url(settings: Settings, host: str | None = None, port: int | None = None) -> str:
    """Where the daemon ``settings`` describe answers /readyz: its listen address (a wildcard becomes the
    loopback), http or https as it serves."""
    server = settings.server
    host = WILDCARDS.get(host if host is not None else server.host, host or server.host)
    port = port if port is not None else server.port
    if port == 0:
        raise RemediatorError(
            "REMEDIATOR_SERVER__PORT is 0 (the daemon picks a free port at start): give --port or --url"
        )
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None and literal.version == 6:
        host = f"[{host}]"
    scheme = "https" if server.tls_cert is not None else "http"
    return f"{scheme}://{host}:{port}/readyz"


def tls_context(settings: Settings) -> ssl.SSLContext:
    """HTTPS without checking the certificate (see the module's docstring); with mutual TLS, the daemon's own
    certificate as the client's."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    server = settings.server
    if server.tls_client_ca is not None and server.tls_cert is not None:
        try:
            context.load_cert_chain(server.tls_cert, server.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise RemediatorError(f"cannot load {server.tls_cert} as the client certificate: {exc}") from exc
    return context


def check(
    settings: Settings,
    url: str | None = None,
    host: str | None = None,
    port: int | None = None,
    timeout_s: float = TIMEOUT_S,
) -> Health:
    """Ask the daemon at ``url`` (default: where ``settings`` listen, or ``host``/``port``) whether it is
    ready."""
    try:
        target = url.rstrip("/") + "/readyz" if url else probe_url(settings, host, port)
        context = tls_context(settings) if target.startswith("https://") else None
        answer = request_json("GET", target, timeout_s=timeout_s, tls=context)
    except RemediatorError as exc:  # ApiError is one: what answered, or that nothing did
        return Health(False, f"unhealthy: {exc}")
    backlog = answer.get("backlog") if isinstance(answer, dict) else None
    return Health(
        True, f"ok: {target} ready" + (f", intake backlog {backlog}" if backlog is not None else "")
    )
