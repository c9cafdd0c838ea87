"""The HTTP side of the daemon: the Alertmanager webhook, the operators' API, the approval page, metrics and
health, and the listener that serves them within bounds.

Whatever a client sends (bytes that are not UTF-8, numbers past 64 bits, a request that never ends), the answer
is a 4xx and the daemon stays reachable: connections, header and body read time are bounded (issue 12).

One module a concern, handlers at module level reading the parts from the application (``server.state``):

    state          the typed application keys; the bounded body read
    params         ids and limits from URLs; the JSON error; bad input -> 4xx, store down -> 503
    auth           the token (one lookup for daemon and CLI), bearer/basic auth, the 401; TLS
    edge           the one middleware: connection held busy, credentials, bad input -> 4xx
    webhook        POST /alerts
    api            /api/...: incidents and their reports, status, pause/resume, policy modes, approve/deny
    maintenance    /api/maintenance: declare, list and cancel maintenance windows
    approval_page  /approval/{id}: GET shows, POST decides
    health         /metrics, /healthz, /readyz
    limits         the connection gate: a connection limit and the request-head timeout
    listener       HttpServer: the application on its socket, behind the gate
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web

from remediator.domain.clock import Clock
from remediator.domain.policies import Policy
from remediator.engine.gate import Gate
from remediator.engine.gauges import StoreGauges
from remediator.engine.intake import Intake
from remediator.engine.maintenance import Maintenance
from remediator.metrics import Metrics
from remediator.server import api, approval_page, health, webhook
from remediator.server import maintenance as windows
from remediator.server.auth import APPROVAL_LINKS, AUTH, Auth, tls_context, webhook_token
from remediator.server.edge import edge
from remediator.server.listener import ClientErrorFilter, HttpServer
from remediator.server.state import (
    BODY_TIMEOUT_S,
    CLOCK,
    GATE,
    HOSTS,
    INTAKE,
    METRICS,
    POLICIES,
    READY,
    RELOAD,
    REPLICA,
    STORE,
)
from remediator.signing import SignatureChecker
from remediator.store.base import Store

__all__ = ["Auth", "ClientErrorFilter", "HttpServer", "build_app", "tls_context", "webhook_token"]


def build_app(
    store: Store,
    intake: Intake,
    gate: Gate,
    policies: Sequence[Policy],
    metrics: Metrics,
    auth: Auth,
    max_body_bytes: int,
    clock: Clock,
    ready: Callable[[], bool],
    signatures: SignatureChecker | None = None,
    link_key: str | None = None,
    *,
    body_timeout_s: float = 30.0,
    replica: str = "remediator",
    reload: Callable[[str], Awaitable[dict[str, Any]]] | None = None,
    hosts: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None,
    maintenance: Maintenance | None = None,
) -> web.Application:
    """The aiohttp application; the composition root runs it (behind an HttpServer)."""
    app = web.Application(middlewares=[edge], client_max_size=max_body_bytes)
    app[STORE] = store
    app[INTAKE] = intake
    app[GATE] = gate
    app[POLICIES] = policies
    app[METRICS] = metrics
    app[AUTH] = auth
    app[BODY_TIMEOUT_S] = body_timeout_s
    app[CLOCK] = clock
    app[READY] = ready
    app[REPLICA] = replica
    app[RELOAD] = reload
    app[HOSTS] = hosts
    app[windows.MAINTENANCE] = maintenance
    app[webhook.WEBHOOK] = webhook.WebhookParts(
        store, intake, metrics, clock, max_body_bytes, body_timeout_s, signatures
    )
    app[approval_page.LINK_KEY] = link_key
    app[health.WRITE_PROBE] = health.WriteProbe()
    app[health.GAUGES] = StoreGauges(store, gate, intake, metrics, clock)

    app.add_routes(
        [
            web.post("/alerts", webhook.alerts),
            web.get("/metrics", health.metrics),
            web.get("/healthz", health.healthz),
            web.get("/readyz", health.readyz),
            web.get("/api/incidents", api.incidents),
            web.get("/api/incidents/{id}", api.incident),
            web.get("/api/incidents/{id}/report", api.incident_report),
            web.get("/api/report", api.effectiveness_report),
            web.get("/api/status", api.status),
            web.post("/api/pause", api.pause),
            web.post("/api/resume", api.resume),
            web.get("/api/policies", api.policies),
            web.get("/api/hosts", api.hosts),
            web.post("/api/policies/{name}/{action:promote|shadow}", api.set_mode),
            web.post("/-/reload", api.reload),
            web.post("/api/maintenance", windows.add),
            web.get("/api/maintenance", windows.listing),
            web.delete("/api/maintenance/{id}", windows.cancel),
            web.post("/api/incidents/{id}/{action:approve|deny}", api.decide),
            web.route("GET", APPROVAL_LINKS + "{id}", approval_page.show),
            web.route("POST", APPROVAL_LINKS + "{id}", approval_page.decide),
        ]
    )
    return app
