"""The operators' API under /api/ (token required): incidents and their timelines, the daemon's status, the
kill switch (pause, resume), policy modes (promote, shadow) and answers to approval requests. The command line
(``remediator status|pause|policies|approve ...``) is its client.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web

from remediator.domain.report import build_report, markdown
from remediator.domain.story import incident_timeline
from remediator.engine.control import Mode
from remediator.errors import ConfigError, PolicyError
from remediator.escalation.routing import priority_of
from remediator.server.params import error, parse_id, parse_limit
from remediator.server.state import CLOCK, GATE, HOSTS, INTAKE, POLICIES, RELOAD, STORE


async def incidents(request: web.Request) -> web.Response:
    status = request.query.get("status")
    if status not in (None, "active", "escalated", "maintenance", "resolved"):
        return error(400, "status must be active, escalated, maintenance or resolved")
    limit = parse_limit(request.query.get("limit"))
    found = await request.app[STORE].list_incidents(status, limit)  # type: ignore[arg-type]
    return web.json_response({"incidents": [dataclasses.asdict(i) for i in found]})


async def incident(request: web.Request) -> web.Response:
    store = request.app[STORE]
    incident_id = parse_id(request.match_info["id"])
    found = await store.get_incident(incident_id)
    if found is None:
        return error(404, f"no incident {incident_id}")
    body: dict[str, Any] = dataclasses.asdict(found)
    steps = await store.steps(incident_id)
    body["steps"] = [dataclasses.asdict(s) for s in steps]
    body["timeline"] = incident_timeline(steps, await store.audit_trail(incident_id))
    return web.json_response(body)


async def incident_report(request: web.Request) -> web.Response:
    """GET /api/incidents/{id}/report[?format=json|markdown]: the post-incident report (domain/report.py), the
    runbooks' template filled from the store; Markdown by default."""
    shape = request.query.get("format", "markdown")
    if shape not in ("json", "markdown"):
        return error(400, "format must be json or markdown")
    store = request.app[STORE]
    incident_id = parse_id(request.match_info["id"])
    found = await store.get_incident(incident_id)
    if found is None:
        return error(404, f"no incident {incident_id}")
    routing = request.app[INTAKE].escalator.routing  # the routing escalations use: one priority for both
    policy = next((p for p in request.app[POLICIES] if p.name == found.policy), None)
    report = build_report(
        found,
        policy,
        await store.steps(incident_id),
        await store.audit_trail(incident_id),
        await store.outbox_entries(incident_id),
        request.app[CLOCK](),
        priority=priority_of(found.labels, routing),
    )
    if shape == "json":
        return web.json_response(report)
    return web.Response(text=markdown(report), content_type="text/markdown", charset="utf-8")


async def status(request: web.Request) -> web.Response:
    gate = request.app[GATE]
    return web.json_response(
        {
            "paused": await gate.control.paused(),
            "dry_run": gate.settings.dry_run,
            "open_incidents": len(await request.app[STORE].open_incidents()),
            "backlog": request.app[INTAKE].backlog,
            "breakers": {name: b.status for name, b in sorted(gate.breakers.items())},
        }
    )


async def hosts(request: web.Request) -> web.Response:
    """The Docker hosts: reachable or not, engine version, last error, breaker state, last call's latency."""
    report = request.app[HOSTS]
    return web.json_response({"hosts": await report() if report is not None else []})


async def pause(request: web.Request) -> web.Response:
    await request.app[GATE].control.set_paused(True, by=f"api from {request.remote}")
    return web.json_response({"paused": True})


async def resume(request: web.Request) -> web.Response:
    await request.app[GATE].control.set_paused(False, by=f"api from {request.remote}")
    return web.json_response({"paused": False})


async def policies(request: web.Request) -> web.Response:
    gate = request.app[GATE]
    listed = [
        {
            "name": p.name,
            "mode": await gate.control.mode(p),
            "file_mode": p.mode,
            "dry_run": p.dry_run,
            "source": p.source,
            "match": [str(m) for m in p.match],
            "steps": [f"{s.kind} {s.name}" for s in p.steps],
        }
        for p in request.app[POLICIES]
    ]
    return web.json_response({"policies": listed})


async def set_mode(request: web.Request) -> web.Response:
    """POST /api/policies/{name}/promote or /shadow: the mode in force, whatever the policy file says."""
    name = request.match_info["name"]
    if name not in {p.name for p in request.app[POLICIES]}:
        return error(404, f"no policy {name!r}")
    mode: Mode = "enforce" if request.match_info["action"] == "promote" else "shadow"
    await request.app[GATE].control.set_mode(name, mode, by=f"api from {request.remote}")
    return web.json_response({"policy": name, "mode": mode})


async def decide(request: web.Request) -> web.Response:
    """POST /api/incidents/{id}/approve or /deny: the answer to a pending approval request."""
    incident_id = parse_id(request.match_info["id"])
    approve = request.match_info["action"] == "approve"
    if not await request.app[GATE].approvals.decide(incident_id, approve, by=f"api from {request.remote}"):
        return error(409, f"incident {incident_id} has no pending approval")
    return web.json_response({"incident_id": incident_id, "approved": approve})


async def reload(request: web.Request) -> web.Response:
    """POST /-/reload (as Prometheus and Alertmanager have it): load the policy files again. A broken set is
    refused with the reason ``remediator check`` gives, and the policies in force stay."""
    reloading = request.app[RELOAD]
    if reloading is None:
        return error(404, "this daemon cannot reload")
    try:
        loaded = await reloading(f"api from {request.remote}")
    except (PolicyError, ConfigError) as exc:
        return error(400, f"reload refused, the policies in force stay: {exc}")
    return web.json_response(loaded)
