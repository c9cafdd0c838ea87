"""The baseline server of the ingest and storm benchmarks: the least an aiohttp webhook can do.

It reads the body, parses the JSON and answers 200 with a small JSON body, like remediator's webhook minus
authentication, validation, the durable inbox and intake. Usage: python bench/bare_handler.py PORT
"""

from __future__ import annotations

import json
import sys

from aiohttp import web


async def alerts(request: web.Request) -> web.Response:
    body = json.loads(await request.read())
    return web.json_response({"status": "accepted", "alerts": len(body.get("alerts", []))})


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def main() -> None:
    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_post("/alerts", alerts)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
