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

from dataclasses import dataclass

from remediator.api_client import daemon_tls, daemon_url, request_json
from remediator.errors import RemediatorError
from remediator.settings import Settings

TIMEOUT_S = 3.0
"""Docker's default HEALTHCHECK timeout is 30 s; a ready daemon answers /readyz in milliseconds."""


@dataclass(frozen=True)
class Health:
    ok: bool
    line: str


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
        target = (url.rstrip("/") if url else daemon_url(settings, host, port)) + "/readyz"
        context = daemon_tls(settings, verify=False) if target.startswith("https://") else None
        answer = request_json("GET", target, timeout_s=timeout_s, tls=context)
    except RemediatorError as exc:  # ApiError is one: what answered, or that nothing did
        return Health(False, f"unhealthy: {exc}")
    backlog = answer.get("backlog") if isinstance(answer, dict) else None
    return Health(
        True, f"ok: {target} ready" + (f", intake backlog {backlog}" if backlog is not None else "")
    )
