"""The one middleware every request passes through: it holds the connection busy (``limits``), refuses a caller
without credentials (``auth``), and turns bad input and a store that cannot answer into a 4xx or a 503, never a
500 (``params``).

One coroutine rather than three middlewares: each middleware is a coroutine that is resumed at every await of
every request, and POST /alerts is the daemon's hot path (bench/README.md, "Ingest"). Each check is a plain
function in the module of its concern; this composes them, outermost first.
"""

from __future__ import annotations

from aiohttp import web

from remediator.errors import StoreError
from remediator.server import auth, limits
from remediator.server.params import BadParameter, Handler, bad_input_answer


@web.middleware
async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
    connection = limits.hold(request)
    try:
        refused = auth.refusal(request)
        if refused is not None:
            return refused
        return await handler(request)
    except (BadParameter, StoreError) as exc:
        return bad_input_answer(request, exc)
    finally:
        limits.release(connection)
