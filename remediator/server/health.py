"""The public endpoints for the platform around the daemon: /metrics for Prometheus, /healthz (the process
answers) and /readyz (it has started and its store takes writes). They need no token.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from remediator.engine.gauges import StoreGauges
from remediator.errors import StoreError
from remediator.server.state import CLOCK, INTAKE, METRICS, READY, REPLICA, STORE


class WriteProbe:
    """One tiny synced write, the same kind an accepted alert needs: a read succeeds on a full disk (or a
    read-only or failed one) while every webhook POST gets 503. Concurrent /readyz calls share one write,
    so the public endpoint costs at most one write in flight, however often it is asked."""

    def __init__(self) -> None:
        self._write: asyncio.Future[None] | None = None

    async def __call__(self, app: web.Application) -> None:
        if self._write is None or self._write.done():
            now = app[CLOCK]()
            stamp = datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds")
            # One key for every replica: a key per replica would leave a row behind for each pod name ever run.
            write = asyncio.ensure_future(app[STORE].control_set("readyz", f"{app[REPLICA]} {stamp}", now))
            # Every caller may have gone (a probe that timed out): the outcome is still collected.
            write.add_done_callback(lambda done: done.cancelled() or done.exception())
            self._write = write
        await asyncio.shield(self._write)


WRITE_PROBE = web.AppKey("write_probe", WriteProbe)
GAUGES = web.AppKey("gauges", StoreGauges)
"""Read from the store before each scrape (shared and bounded: engine/gauges.py)."""


async def metrics(request: web.Request) -> web.Response:
    await request.app[GAUGES].refresh()
    response = web.Response(body=generate_latest(request.app[METRICS].registry))
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    app = request.app
    if not app[READY]():
        return web.json_response({"status": "not ready"}, status=503)
    try:
        await app[WRITE_PROBE](app)
    except StoreError as exc:
        return web.json_response({"status": "store cannot write", "error": str(exc)}, status=503)
    return web.json_response({"status": "ready", "backlog": app[INTAKE].backlog})
