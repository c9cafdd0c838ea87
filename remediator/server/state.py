"""What the routes share, one typed key each (aiohttp's ``web.AppKey``): build_app puts the parts in the
application and the module-level handlers take them out, so no handler is a closure over build_app's arguments.
Also the one body read every route that takes a body uses, bounded in time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web

from remediator.domain.clock import Clock
from remediator.domain.policies import Policy
from remediator.engine.gate import Gate
from remediator.engine.intake import Intake
from remediator.metrics import Metrics
from remediator.store.base import Store

STORE = web.AppKey("store", Store)
INTAKE = web.AppKey("intake", Intake)
GATE = web.AppKey("gate", Gate)
POLICIES = web.AppKey[Sequence[Policy]]("policies")
METRICS = web.AppKey("metrics", Metrics)
CLOCK = web.AppKey[Clock]("clock")
READY = web.AppKey[Callable[[], bool]]("ready")
"""Whether the daemon has started (and not begun to stop): /readyz answers 503 otherwise."""
REPLICA = web.AppKey("replica", str)
BODY_TIMEOUT_S = web.AppKey("body_timeout_s", float)
RELOAD = web.AppKey[Callable[[str], Awaitable[dict[str, Any]]] | None]("reload")
"""Reloads the policies (``by`` whom) and returns what is in force; raises PolicyError or ConfigError."""
HOSTS = web.AppKey[Callable[[], Awaitable[list[dict[str, Any]]]] | None]("hosts")
"""Each Docker host with its reachability, engine version, last error, breaker and latency (``/api/hosts``)."""


def read_body(request: web.Request) -> Awaitable[bytes | None]:
    """The whole body, or None when it did not arrive within the body timeout (a client that trickles it
    would otherwise hold a connection, and a slot of the connection limit, for as long as it likes).
    aiohttp raises HTTPRequestEntityTooLarge past the application's client_max_size.

    Not a coroutine itself: when the whole body came with the head (a webhook's usually does), the caller
    awaits aiohttp's read directly, with no timer and no extra coroutine on the hot path."""
    if request.content.is_eof():
        return request.read()
    return _read_within(request, request.app[BODY_TIMEOUT_S])


async def _read_within(request: web.Request, timeout_s: float) -> bytes | None:
    try:
        async with asyncio.timeout(timeout_s):
            return await request.read()
    except TimeoutError:
        return None
