"""Reading a request's parameters, and answering the bad ones.

Whatever a client puts in a URL or a query (digits of other scripts, numbers past 64 bits, a negative limit),
the answer is a 4xx with the reason, never a store error or a 500; and a store that cannot answer is a 503.
Every route shares these rules, so they live in one place with the middleware that applies them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable

from aiohttp import web

from remediator.errors import StoreError
from remediator.metrics import Metrics

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

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


def error(status: int, reason: str, metrics: Metrics | None = None) -> web.Response:
    """The JSON answer to a request refused: ``{"error": reason}``; counted as a rejected webhook call when
    ``metrics`` is given."""
    if metrics is not None:
        metrics.webhook_rejected.labels(str(status)).inc()
    return web.json_response({"error": reason}, status=status)


def bad_input_answer(request: web.Request, exc: BadParameter | StoreError) -> web.Response:
    """What a route that raised for bad input (4xx) or a store failure (503) answers, never a 500."""
    if isinstance(exc, BadParameter):
        return error(exc.status, exc.reason)
    logger.warning("%s %s: store unavailable: %s", request.method, request.path, exc)
    return error(503, f"store unavailable: {exc}")
