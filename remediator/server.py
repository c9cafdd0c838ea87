"""HTTP routes: the Alertmanager webhook, metrics, health, and a read-only incident API.

The webhook answers 200 only once the notification is stored (ARCHITECTURE decision 1). Bad input gets a 4xx
with the reason; only a store that cannot persist gets 503, which makes Alertmanager retry.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hmac
import html
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from remediator.domain.alerts import Notification
from remediator.domain.clock import Clock
from remediator.domain.policies import Policy
from remediator.engine.escalate import incident_timeline
from remediator.engine.gate import Gate
from remediator.engine.intake import Intake
from remediator.errors import StoreError
from remediator.metrics import Metrics
from remediator.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, SignatureChecker, approval_link_valid
from remediator.store.base import Store

logger = logging.getLogger("remediator.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_PUBLIC = frozenset({"/metrics", "/healthz", "/readyz"})
_APPROVAL_LINKS = "/approval/"
_PAGE = """<!doctype html><html><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width"><title>remediator: {title}</title>
<style>body{{font-family:sans-serif;max-width:40em;margin:2em auto;padding:0 1em}}
button{{font-size:1.1em;padding:.5em 1.5em;margin-right:1em}}</style></head>
<body><h1>{title}</h1>{body}</body></html>"""
_STALE_LINK = "<p>This approval link is not valid (any more): answered, expired, or not a link we made.</p>"


def _page(title: str, body: str, status: int = 200) -> web.Response:
    """A small HTML page for a person who clicked a link in an escalation; every value in it is escaped."""
    # The page's URL is a capability: never cached, never sent on as a Referer, never framed.
    headers = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}
    return web.Response(
        headers=headers,
        text=_PAGE.format(title=html.escape(title), body=body),
        status=status,
        content_type="text/html",
    )


@dataclasses.dataclass(frozen=True)
class Auth:
    """Who may call: a bearer token (or basic auth with the token as password), unless auth is disabled."""

    token: str | None
    basic_username: str | None = None
    disabled: bool = False

    def allows(self, header: str) -> bool:
        if self.disabled:
            return True
        if not self.token:
            return False
        scheme, _, credentials = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer":
            return hmac.compare_digest(credentials.strip().encode(), self.token.encode())
        if scheme == "basic":
            try:
                user, _, password = (
                    base64.b64decode(credentials.strip(), validate=True).decode().partition(":")
                )
            except (binascii.Error, UnicodeDecodeError):
                return False
            user_ok = self.basic_username is None or hmac.compare_digest(
                user.encode(), self.basic_username.encode()
            )
            return hmac.compare_digest(password.encode(), self.token.encode()) and user_ok
        return False


def _error(status: int, reason: str, metrics: Metrics | None = None) -> web.Response:
    if metrics is not None:
        metrics.webhook_rejected.labels(str(status)).inc()
    return web.json_response({"error": reason}, status=status)


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
) -> web.Application:
    """The aiohttp application; the composition root runs it."""

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Approval links are public: each carries its own signature, checked by its route.
        public = request.path in _PUBLIC or request.path.startswith(_APPROVAL_LINKS)
        if not public and not auth.allows(request.headers.get("Authorization", "")):
            metrics.webhook_rejected.labels(
                "401"
            ).inc()  # a misconfigured Alertmanager shows on the dashboard
            return web.json_response(
                {"error": "missing or wrong credentials"}, status=401, headers={"WWW-Authenticate": "Bearer"}
            )
        return await handler(request)

    async def alerts(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > max_body_bytes:
            return _error(413, f"body over {max_body_bytes} bytes", metrics)
        if request.content_type != "application/json":
            return _error(
                415, f"content type must be application/json, not {request.content_type!r}", metrics
            )
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"body over {max_body_bytes} bytes", metrics)
        if signatures is not None:
            refused = signatures.refusal(
                request.headers.get(TIMESTAMP_HEADER), request.headers.get(SIGNATURE_HEADER), raw, clock()
            )
            if refused is not None:
                return _error(401, refused, metrics)
        try:
            # pydantic parses and validates the bytes in one pass (no intermediate dict): the hot path
            notification = Notification.model_validate_json(raw)
        except ValidationError as exc:
            errors = exc.errors()
            if errors and errors[0]["type"] == "json_invalid":
                return _error(400, f"body is not JSON: {errors[0]['msg']}", metrics)
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in errors[:5]
            )
            return _error(400, f"not an Alertmanager webhook v4 payload: {problems}", metrics)
        try:
            inbox_id = await store.inbox_put(raw.decode("utf-8", "replace"), clock())
        except StoreError:
            logger.exception("cannot persist a notification; answering 503 so Alertmanager retries")
            return _error(503, "cannot persist the notification now; retry", metrics)
        intake.submit(inbox_id, notification)
        return web.json_response(
            {"status": "accepted", "alerts": len(notification.alerts), "inbox_id": inbox_id}
        )

    async def metrics_route(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(metrics.registry))
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return response

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        if not ready():
            return web.json_response({"status": "not ready"}, status=503)
        try:
            await store.list_incidents(limit=1)
        except StoreError as exc:
            return web.json_response({"status": "store unavailable", "error": str(exc)}, status=503)
        return web.json_response({"status": "ready", "backlog": intake.backlog})

    async def incidents(request: web.Request) -> web.Response:
        status = request.query.get("status")
        if status not in (None, "active", "escalated", "resolved"):
            return _error(400, "status must be active, escalated or resolved")
        try:
            limit = min(int(request.query.get("limit", "100")), 1000)
        except ValueError:
            return _error(400, "limit must be an integer")
        found = await store.list_incidents(status, limit)  # type: ignore[arg-type]
        return web.json_response({"incidents": [dataclasses.asdict(i) for i in found]})

    async def incident(request: web.Request) -> web.Response:
        try:
            incident_id = int(request.match_info["id"])
        except ValueError:
            return _error(400, "incident id must be an integer")
        found = await store.get_incident(incident_id)
        if found is None:
            return _error(404, f"no incident {incident_id}")
        body: dict[str, Any] = dataclasses.asdict(found)
        steps = await store.steps(incident_id)
        body["steps"] = [dataclasses.asdict(s) for s in steps]
        body["timeline"] = incident_timeline(steps, await store.audit_trail(incident_id))
        return web.json_response(body)

    async def status(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "paused": await gate.paused(),
                "dry_run": gate.settings.dry_run,
                "open_incidents": len(await store.open_incidents()),
                "backlog": intake.backlog,
                "breakers": {name: b.status for name, b in sorted(gate.breakers.items())},
            }
        )

    async def pause(request: web.Request) -> web.Response:
        await gate.set_paused(True, by=f"api from {request.remote}")
        return web.json_response({"paused": True})

    async def resume(request: web.Request) -> web.Response:
        await gate.set_paused(False, by=f"api from {request.remote}")
        return web.json_response({"paused": False})

    async def policies_route(_: web.Request) -> web.Response:
        listed = [
            {
                "name": p.name,
                "mode": await gate.mode(p),
                "file_mode": p.mode,
                "dry_run": p.dry_run,
                "source": p.source,
                "match": [str(m) for m in p.match],
                "steps": [f"{s.kind} {s.name}" for s in p.steps],
            }
            for p in policies
        ]
        return web.json_response({"policies": listed})

    async def set_mode(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in {p.name for p in policies}:
            return _error(404, f"no policy {name!r}")
        mode = "enforce" if request.match_info["action"] == "promote" else "shadow"
        await gate.set_mode(name, mode, by=f"api from {request.remote}")
        return web.json_response({"policy": name, "mode": mode})

    async def decide(request: web.Request) -> web.Response:
        try:
            incident_id = int(request.match_info["id"])
        except ValueError:
            return _error(400, "incident id must be an integer")
        approve = request.match_info["action"] == "approve"
        if not await gate.decide_approval(incident_id, approve, by=f"api from {request.remote}"):
            return _error(409, f"incident {incident_id} has no pending approval")
        return web.json_response({"incident_id": incident_id, "approved": approve})

    async def approval_link(request: web.Request) -> web.Response:
        """GET shows what would be approved, with Approve and Deny buttons; only the POST of that form decides.
        Link previews (chat unfurlers, mail scanners) fetch a link with GET, so a GET must never act."""
        try:
            incident_id = int(request.match_info["id"])
        except ValueError:
            return _page("Not found", "<p>No such incident.</p>", 404)
        pending = await gate.approval(incident_id)
        signature = request.query.get("sig", "")
        if (
            pending is None
            or pending["state"] != "pending"
            or float(pending["expires_at"]) <= clock()
            or not approval_link_valid(link_key, incident_id, float(pending["requested_at"]), signature)
        ):
            return _page("Nothing to approve", _STALE_LINK, 404)
        incident = await store.get_incident(incident_id)
        policy, target = (incident.policy, incident.target) if incident else ("?", "?")
        what = (
            f"<p>Incident {incident_id}: policy <b>{html.escape(policy)}</b> wants to run"
            f" <b>{html.escape(str(pending['step']))}</b> on <b>{html.escape(target)}</b>.</p>"
        )
        if request.method == "GET":
            left = max(0.0, float(pending["expires_at"]) - clock())
            form = (
                f'{what}<p>Unanswered, the request is denied in {left:.0f} s.</p><form method="post">'
                '<button name="decision" value="approve">Approve</button>'
                '<button name="decision" value="deny">Deny</button></form>'
            )
            return _page("Approval needed", form)
        decision = (await request.post()).get("decision")
        if decision not in ("approve", "deny"):
            return _page("Bad request", "<p>Choose Approve or Deny.</p>", 400)
        approve = decision == "approve"
        if not await gate.decide_approval(incident_id, approve, by=f"approval link from {request.remote}"):
            return _page("Nothing to approve", "<p>The request was answered meanwhile.</p>", 409)
        outcome = "Approved: remediator runs the step now (its limits still apply)." if approve else "Denied."
        return _page("Approved" if approve else "Denied", f"{what}<p>{outcome}</p>")

    app = web.Application(middlewares=[authenticate], client_max_size=max_body_bytes)
    app.router.add_post("/alerts", alerts)
    app.router.add_get("/metrics", metrics_route)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/incidents", incidents)
    app.router.add_get("/api/incidents/{id}", incident)
    app.router.add_get("/api/status", status)
    app.router.add_post("/api/pause", pause)
    app.router.add_post("/api/resume", resume)
    app.router.add_get("/api/policies", policies_route)
    app.router.add_post("/api/policies/{name}/{action:promote|shadow}", set_mode)
    app.router.add_post("/api/incidents/{id}/{action:approve|deny}", decide)
    app.router.add_route("GET", _APPROVAL_LINKS + "{id}", approval_link)
    app.router.add_route("POST", _APPROVAL_LINKS + "{id}", approval_link)
    return app
