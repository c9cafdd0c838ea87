"""The operators' API under /api/ (token required): incidents and their timelines, the daemon's status, the
kill switch (pause, resume), policy modes (promote, shadow) and answers to approval requests. The command line
(``remediator status|pause|policies|approve ...``) is its client.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web

from remediator.domain.effectiveness import IncidentOutcome, effectiveness, overall
from remediator.domain.report import build_report, markdown
from remediator.domain.story import incident_timeline, iso
from remediator.engine.control import Mode
from remediator.errors import ConfigError, PolicyError
from remediator.escalation.routing import priority_of
from remediator.server.params import error, parse_id, parse_limit
from remediator.server.state import CLOCK, GATE, HOSTS, INTAKE, POLICIES, RELOAD, STORE
from remediator.store.effectiveness import PAGE


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
    escalator = request.app[INTAKE].escalator
    policy = next((p for p in request.app[POLICIES] if p.name == found.policy), None)
    report = build_report(
        found,
        policy,
        await store.steps(incident_id),
        await store.audit_trail(incident_id),
        await store.outbox_entries(incident_id),
        request.app[CLOCK](),
        priority=priority_of(found.labels, escalator.routing),  # as escalation reads it
        annotators=escalator.annotator_names(),
    )
    if shape == "json":
        return web.json_response(report)
    return web.Response(text=markdown(report), content_type="text/markdown", charset="utf-8")


REPORT_DEFAULT_S = 7 * 86_400.0
REPORT_MAX_S = 400 * 86_400.0
"""``GET /api/report``'s period: a week by default, at most 400 days (retention keeps 90 by default)."""


async def effectiveness_report(request: web.Request) -> web.Response:
    """GET /api/report[?since=SECONDS]: how well each policy worked over the last SECONDS (a week), read from the
    store (domain/effectiveness.py): the same answer from any replica, after any restart."""
    raw = request.query.get("since")
    try:
        since_s = REPORT_DEFAULT_S if raw is None else float(raw)
    except ValueError:
        since_s = float("nan")
    if not 0 < since_s <= REPORT_MAX_S:  # also refuses nan
        return error(400, f"since must be a number of seconds, more than 0 and at most {REPORT_MAX_S:.0f}")
    store = request.app[STORE]
    now = request.app[CLOCK]()
    cutoff = now - since_s
    outcomes: list[IncidentOutcome] = []
    before: int | None = None
    while True:
        page = await store.incident_outcomes(before, PAGE)
        inside = [o for o in page if o.opened_at >= cutoff]
        outcomes.extend(inside)
        # Newest first, and ids grow with the opening time: a page with none inside the period is the last.
        if len(page) < PAGE or not inside:
            break
        before = page[-1].id
    routing = request.app[INTAKE].escalator.routing

    def priority(labels: dict[str, str]) -> str:
        return priority_of(labels, routing)

    loaded = [p.name for p in request.app[POLICIES]]
    return web.json_response(
        {
            "since": iso(cutoff),
            "until": iso(now),
            "period_s": since_s,
            "policies": effectiveness(outcomes, priority, loaded),
            "all": overall(outcomes, priority),
        }
    )


async def status(request: web.Request) -> web.Response:
    gate = request.app[GATE]
    store = request.app[STORE]
    now = request.app[CLOCK]()
    return web.json_response(
        {
            "paused": await gate.control.paused(),
            "dry_run": gate.settings.dry_run,
            "open_incidents": len(await store.open_incidents()),
            "backlog": request.app[INTAKE].backlog,
            "breakers": {name: b.status for name, b in sorted(gate.breakers.items())},
            "maintenance_windows_in_force": sum(
                w.in_force(now) for w in await store.maintenance_windows(now)
            ),
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
