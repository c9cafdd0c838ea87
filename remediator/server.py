"""HTTP routes: the Alertmanager webhook, metrics, health, and a read-only incident API; and the listener that
serves them within bounds.

The webhook answers 200 only once the notification is stored (ARCHITECTURE decision 1). Bad input gets a 4xx
with the reason; only a store that cannot persist gets 503, which makes Alertmanager retry. Whatever a client
sends (bytes that are not UTF-8, numbers past 64 bits, a request that never ends), the answer is a 4xx and the
daemon stays reachable: connections, header and body read time are bounded (issue 12).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hmac
import html
import logging
import math
import re
import ssl
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
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
http_logger = logging.getLogger("remediator.server.http")
"""aiohttp's own request handling logs here (malformed requests, handler errors), through ClientErrorFilter."""

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
        # Everything is compared as bytes: aiohttp hands over header bytes that are not UTF-8 as lone
        # surrogates, which neither a plain encode() nor compare_digest on str (ASCII only) accepts.
        token = _raw(self.token)
        if scheme == "bearer":
            return hmac.compare_digest(_raw(credentials.strip()), token)
        if scheme == "basic":
            try:
                decoded = base64.b64decode(_raw(credentials.strip()), validate=True)
            except ValueError:  # binascii.Error is one
                return False
            user, _, password = decoded.partition(b":")
            user_ok = self.basic_username is None or hmac.compare_digest(user, _raw(self.basic_username))
            return hmac.compare_digest(password, token) and user_ok
        return False


def _raw(text: str) -> bytes:
    """The bytes a header value (or a configured secret) stands for, whatever they are."""
    return text.encode("utf-8", "surrogateescape")


MAX_ID = 2**63 - 1
"""Ids are 64-bit signed integers in both stores."""
MAX_LIMIT = 1000
_INTEGER = re.compile(r"-?[0-9]+")


class BadParameter(Exception):
    """A request parameter that is malformed (400) or names nothing that can exist (404)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def parse_id(raw: str, what: str = "incident") -> int:
    """An id from a URL: ASCII digits only (``int`` would take "+1", " 1", "1_0" and other scripts' digits);
    an integer that no row can have (0, negative, past 64 bits) is 404, not a store error."""
    value = _bounded_int(raw)
    if value is None:
        raise BadParameter(400, f"{what} id must be an integer")
    if not 1 <= value <= MAX_ID:
        raise BadParameter(404, f"no {what} {raw}")
    return value


def parse_limit(raw: str | None, default: int = 100) -> int:
    """``?limit=``: 1..MAX_LIMIT. SQLite reads a negative LIMIT as "no limit", so it is refused, not passed on."""
    if raw is None:
        return default
    value = _bounded_int(raw)
    if value is None or not 1 <= value <= MAX_LIMIT:
        raise BadParameter(400, f"limit must be an integer from 1 to {MAX_LIMIT}")
    return value


def _bounded_int(raw: str) -> int | None:
    """The integer ``raw`` spells in ASCII digits, clamped to one past MAX_ID either way (so a 5,000-digit
    number costs nothing and is simply out of range); None when it is not an integer."""
    if _INTEGER.fullmatch(raw) is None:
        return None
    sign = -1 if raw.startswith("-") else 1
    digits = raw.lstrip("-").lstrip("0") or "0"
    return sign * (MAX_ID + 1 if len(digits) > 19 else min(int(digits), MAX_ID + 1))


def pending_times(pending: Mapping[str, Any] | None) -> tuple[float, float] | None:
    """``(requested_at, expires_at)`` of a pending approval; None when there is none, or when the record is not
    one we could have written (a missing field or a non-finite time never makes a link valid)."""
    if pending is None or pending.get("state") != "pending":
        return None
    try:
        requested_at = float(pending["requested_at"])
        expires_at = float(pending["expires_at"])
    except (KeyError, TypeError, ValueError):
        return None
    if not (math.isfinite(requested_at) and math.isfinite(expires_at)):
        return None
    return requested_at, expires_at


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
    *,
    body_timeout_s: float = 30.0,
    replica: str = "remediator",
) -> web.Application:
    """The aiohttp application; the composition root runs it (behind an HttpServer)."""

    @web.middleware
    async def refuse_bad_input(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Outermost: whatever a route raises for bad input or a store failure is a 4xx or a 503, never a 500.
        try:
            return await handler(request)
        except BadParameter as exc:
            return _error(exc.status, exc.reason)
        except StoreError as exc:
            logger.warning("%s %s: store unavailable: %s", request.method, request.path, exc)
            return _error(503, f"store unavailable: {exc}")

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Approval links are public: each carries its own signature, checked by its route.
        public = request.path in _PUBLIC or request.path.startswith(_APPROVAL_LINKS)
        if not public and not auth.allows(request.headers.get("Authorization", "")):
            # a misconfigured Alertmanager shows on the dashboard
            metrics.webhook_rejected.labels("401").inc()
            return web.json_response(
                {"error": "missing or wrong credentials"}, status=401, headers={"WWW-Authenticate": "Bearer"}
            )
        return await handler(request)

    async def read_body(request: web.Request) -> bytes | None:
        """The whole body, or None when it did not arrive within body_timeout_s (a client that trickles it
        would otherwise hold a connection, and a slot of the connection limit, for as long as it likes)."""
        try:
            async with asyncio.timeout(body_timeout_s):
                return await request.read()
        except TimeoutError:
            return None

    def body_too_slow() -> web.Response:
        response = _error(408, f"request body not received within {body_timeout_s:g} s", metrics)
        response.force_close()  # the rest of the body may still be on its way
        return response

    async def alerts(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > max_body_bytes:
            return _error(413, f"body over {max_body_bytes} bytes", metrics)
        if request.content_type != "application/json":
            return _error(
                415, f"content type must be application/json, not {request.content_type!r}", metrics
            )
        try:
            raw = await read_body(request)
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"body over {max_body_bytes} bytes", metrics)
        if raw is None:
            return body_too_slow()
        if signatures is not None:
            timestamp = request.headers.get(TIMESTAMP_HEADER)
            signature = request.headers.get(SIGNATURE_HEADER)
            # A signature and a timestamp are ASCII; anything else (bytes that are not UTF-8 arrive as lone
            # surrogates) cannot be authentic, and the checker's encode() would raise on it.
            if not all(value is None or value.isascii() for value in (timestamp, signature)):
                return _error(401, "bad signature", metrics)
            refused = signatures.refusal(timestamp, signature, raw, clock())
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
        except StoreError as exc:
            # The reason is the whole story (disk full, database down); a traceback per retry would only bury it.
            logger.error("cannot persist a notification (%s); answering 503 so Alertmanager retries", exc)
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

    probe: asyncio.Future[None] | None = None

    async def probe_write() -> None:
        """One tiny synced write, the same kind an accepted alert needs: a read succeeds on a full disk (or a
        read-only or failed one) while every webhook POST gets 503. Concurrent /readyz calls share one write,
        so the public endpoint costs at most one write in flight, however often it is asked."""
        nonlocal probe
        if probe is None or probe.done():
            now = clock()
            stamp = datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds")
            # One key for every replica: a key per replica would leave a row behind for each pod name ever run.
            probe = asyncio.ensure_future(store.control_set("readyz", f"{replica} {stamp}", now))
            # Every caller may have gone (a probe that timed out): the outcome is still collected.
            probe.add_done_callback(lambda done: done.cancelled() or done.exception())
        await asyncio.shield(probe)

    async def readyz(_: web.Request) -> web.Response:
        if not ready():
            return web.json_response({"status": "not ready"}, status=503)
        try:
            await probe_write()
        except StoreError as exc:
            return web.json_response({"status": "store cannot write", "error": str(exc)}, status=503)
        return web.json_response({"status": "ready", "backlog": intake.backlog})

    async def incidents(request: web.Request) -> web.Response:
        status = request.query.get("status")
        if status not in (None, "active", "escalated", "resolved"):
            return _error(400, "status must be active, escalated or resolved")
        limit = parse_limit(request.query.get("limit"))
        found = await store.list_incidents(status, limit)  # type: ignore[arg-type]
        return web.json_response({"incidents": [dataclasses.asdict(i) for i in found]})

    async def incident(request: web.Request) -> web.Response:
        incident_id = parse_id(request.match_info["id"])
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
        incident_id = parse_id(request.match_info["id"])
        approve = request.match_info["action"] == "approve"
        if not await gate.decide_approval(incident_id, approve, by=f"api from {request.remote}"):
            return _error(409, f"incident {incident_id} has no pending approval")
        return web.json_response({"incident_id": incident_id, "approved": approve})

    async def approval_link(request: web.Request) -> web.Response:
        """GET shows what would be approved, with Approve and Deny buttons; only the POST of that form decides.
        Link previews (chat unfurlers, mail scanners) fetch a link with GET, so a GET must never act."""
        try:
            incident_id = parse_id(request.match_info["id"])
        except BadParameter:
            return _page("Not found", "<p>No such incident.</p>", 404)
        pending = await gate.approval(incident_id)
        times = pending_times(pending)
        signature = request.query.get("sig", "")
        if (
            pending is None
            or times is None
            or times[1] <= clock()
            or not approval_link_valid(link_key, incident_id, times[0], signature)
        ):
            return _page("Nothing to approve", _STALE_LINK, 404)
        incident = await store.get_incident(incident_id)
        policy, target = (incident.policy, incident.target) if incident else ("?", "?")
        what = (
            f"<p>Incident {incident_id}: policy <b>{html.escape(policy)}</b> wants to run"
            f" <b>{html.escape(str(pending.get('step', '?')))}</b> on <b>{html.escape(target)}</b>.</p>"
        )
        if request.method == "GET":
            left = max(0.0, times[1] - clock())
            form = (
                f'{what}<p>Unanswered, the request is denied in {left:.0f} s.</p><form method="post">'
                '<button name="decision" value="approve">Approve</button>'
                '<button name="decision" value="deny">Deny</button></form>'
            )
            return _page("Approval needed", form)
        decision = await form_decision(request)
        if decision is None:
            return _page("Bad request", "<p>Choose Approve or Deny.</p>", 400)
        approve = decision == "approve"
        if not await gate.decide_approval(incident_id, approve, by=f"approval link from {request.remote}"):
            return _page("Nothing to approve", "<p>The request was answered meanwhile.</p>", 409)
        outcome = "Approved: remediator runs the step now (its limits still apply)." if approve else "Denied."
        return _page("Approved" if approve else "Denied", f"{what}<p>{outcome}</p>")

    async def form_decision(request: web.Request) -> str | None:
        """``approve`` or ``deny`` from the page's form, or None. Read here rather than with request.post(),
        which raises (500) on a body that is not in its charset, an unknown charset, or a broken multipart."""
        if request.content_type not in ("", "application/x-www-form-urlencoded"):
            return None
        try:
            raw = await read_body(request)
        except web.HTTPRequestEntityTooLarge:
            return None
        if raw is None:
            return None
        try:
            fields = urllib.parse.parse_qs(raw.decode("utf-8", "replace"), max_num_fields=10)
        except ValueError:
            return None
        values = fields.get("decision", [])
        return values[0] if len(values) == 1 and values[0] in ("approve", "deny") else None

    app = web.Application(middlewares=[refuse_bad_input, authenticate], client_max_size=max_body_bytes)
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


# ---------------------------------------------------------------------------------------------------------
# The listener: connections and the time to send a request are bounded.
#
# asyncio accepts every connection it can, and aiohttp waits for a request's headers as long as the client
# likes. Under the common soft limit of 1,024 open files, 1,100 idle half-open requests left no descriptor for
# /healthz, the store or Docker, and asyncio logged its accept() error in a tight loop (issue 12). So every
# connection passes a ConnectionGate: at the limit the oldest connection with no request in a handler makes
# room (an idle keep-alive or a client still "sending" headers), and a connection that has not sent a
# complete request head within header_timeout_s is closed.

FD_RESERVE = 256
"""Open files kept for everything but client connections: the store, Docker and notifier sockets, the
descriptors asyncio accepts in one burst before the gate sees them (the listen backlog)."""
BACKLOG = 128


def connection_limit(configured: int, open_files: int) -> int:
    """How many client connections may be open at once: the configured number, within the open-files limit
    minus FD_RESERVE (half the limit when that is tiny)."""
    return max(1, min(configured, max(open_files - FD_RESERVE, open_files // 2)))


class _Connection(asyncio.Protocol):
    """One client connection: aiohttp's handler for it, and what the gate needs to bound it. The transport's
    protocol is this object, so a route finds it with ``request.transport.get_protocol()``."""

    __slots__ = ("busy", "deadline", "gate", "handler", "transport")

    def __init__(self, gate: ConnectionGate, handler: asyncio.Protocol, deadline: float) -> None:
        self.gate = gate
        self.handler = handler
        self.transport: asyncio.Transport | None = None
        self.busy = False
        """A request is in a handler: never closed for the limit or the header timeout."""
        self.deadline: float | None = deadline
        """When the request head being received must be complete; None while idle between requests."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.handler.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gate.forget(self)
        self.handler.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.deadline is None and not self.busy:
            # The first bytes of the next request on a kept-alive connection: its head has the same time.
            self.deadline = self.gate.now() + self.gate.header_timeout_s
        self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self.handler.eof_received()

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()

    def close(self) -> None:
        if self.transport is not None:
            # close() first sends what was written; a client that does not even read it gets abort(), which
            # frees the descriptor at once.
            if self.transport.get_write_buffer_size():
                self.transport.abort()
            else:
                self.transport.close()


class _Refused(asyncio.Protocol):
    """A connection over the limit while every open one is busy: a 503 and closed, before reading anything."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
            b"Connection: close\r\n\r\n"
        )
        transport.close()


class ConnectionGate:
    """The protocol factory of the listener: wraps aiohttp's, counts connections, evicts and times them out."""

    def __init__(
        self,
        factory: Callable[[], asyncio.Protocol],
        limit: int,
        header_timeout_s: float,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.factory = factory
        self.limit = limit
        self.header_timeout_s = header_timeout_s
        self.now = now
        self._open: dict[_Connection, None] = {}  # oldest first
        self.evicted = 0
        self.refused = 0
        self.timed_out = 0

    @property
    def open(self) -> int:
        return len(self._open)

    def __call__(self) -> asyncio.Protocol:
        if len(self._open) >= self.limit and not self._evict_one():
            self.refused += 1
            logger.warning(
                "connection limit (%d) reached and every connection is busy: refusing one", self.limit
            )
            return _Refused()
        connection = _Connection(self, self.factory(), self.now() + self.header_timeout_s)
        self._open[connection] = None
        return connection

    def _evict_one(self) -> bool:
        for connection in self._open:
            # A connection still in its TLS handshake has no transport yet: asyncio's handshake timeout
            # (header_timeout_s too) ends it.
            if not connection.busy and connection.transport is not None:
                self.forget(connection)
                connection.close()
                self.evicted += 1
                logger.info("connection limit (%d) reached: closed the oldest idle connection", self.limit)
                return True
        return False

    def forget(self, connection: _Connection) -> None:
        self._open.pop(connection, None)

    def sweep(self) -> None:
        """Close the connections whose request head is overdue."""
        now = self.now()
        closed = 0
        for connection in list(self._open):
            if connection.busy or connection.deadline is None or connection.deadline > now:
                continue
            if connection.transport is None:
                # A TLS handshake that failed never reaches connection_made or connection_lost.
                if now > connection.deadline + self.header_timeout_s:
                    self.forget(connection)
                continue
            self.forget(connection)
            connection.close()
            closed += 1
        if closed:
            self.timed_out += closed
            logger.info(
                "closed %d connections that sent no complete request head within %g s",
                closed,
                self.header_timeout_s,
            )

    async def run(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.header_timeout_s / 4))
            self.sweep()

    def close_all(self) -> None:
        for connection in list(self._open):
            self.forget(connection)
            if connection.transport is not None:
                connection.transport.abort()


@web.middleware
async def mark_busy(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Marks the connection busy while its request is in a handler, so neither the limit nor the header timeout
    closes it. (The handler reads the body within body_timeout_s; the response is written right after it
    returns, in the same step, before anything could evict the connection.)"""
    transport = request.transport
    connection = transport.get_protocol() if transport is not None else None
    if not isinstance(connection, _Connection):
        return await handler(request)
    connection.busy = True
    connection.deadline = None
    try:
        return await handler(request)
    finally:
        connection.busy = False


class ClientErrorFilter(logging.Filter):
    """aiohttp logs every request it cannot parse (a client's garbage, a port scan) at ERROR with a
    traceback. That is the client's fault: one INFO line with the reason, no traceback. Errors in our own
    handlers (500s) stay ERROR with their traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and (exc.code or 400) < 500:
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = "malformed request from %s: %s %s"
            # One line: aiohttp's message quotes the offending bytes (escaped) on lines of their own.
            reason = " ".join(str(exc.message).split()) or type(exc).__name__
            record.args = (peer, exc.code, reason[:300])
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info = None
            record.exc_text = None
        return True


class HttpServer:
    """The aiohttp application on one TCP (or TLS) listener, behind a ConnectionGate."""

    def __init__(
        self,
        app: web.Application,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        max_connections: int,
        header_timeout_s: float,
        open_files: int,
    ) -> None:
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.header_timeout_s = header_timeout_s
        self.max_connections = connection_limit(max_connections, open_files)
        if self.max_connections < max_connections:
            logger.warning(
                "at most %d connections (not %d): the open-files limit is %d",
                self.max_connections,
                max_connections,
                open_files,
            )
        self._app = app
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.gate: ConnectionGate | None = None

    async def start(self) -> int:
        """Listen; the port actually bound (``port`` 0 picks a free one)."""
        if not any(isinstance(f, ClientErrorFilter) for f in http_logger.filters):
            http_logger.addFilter(ClientErrorFilter())
        runner = web.AppRunner(self._app, access_log=None, handle_signals=False, logger=http_logger)
        self._runner = runner
        self._app.middlewares.insert(0, mark_busy)  # before setup() freezes the application
        await runner.setup()
        assert runner.server is not None
        self.gate = gate = ConnectionGate(runner.server, self.max_connections, self.header_timeout_s)
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(
            gate,
            self.host,
            self.port,
            ssl=self.ssl_context,
            backlog=BACKLOG,
            reuse_address=True,
            ssl_handshake_timeout=self.header_timeout_s if self.ssl_context is not None else None,
        )
        self._sweeper = asyncio.create_task(gate.run(), name="http-connection-sweeper")
        sockets = self._listener.sockets
        self.port = sockets[0].getsockname()[1] if sockets else self.port
        logger.info(
            "at most %d connections; request heads within %g s",
            self.max_connections,
            self.header_timeout_s,
        )
        return self.port

    async def cleanup(self) -> None:
        """Stop listening, finish the requests in handlers (aiohttp's graceful shutdown), close the rest."""
        if self._listener is not None:
            self._listener.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        if self.gate is not None:
            self.gate.close_all()
        if self._listener is not None:
            await self._listener.wait_closed()
