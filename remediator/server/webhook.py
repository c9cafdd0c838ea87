"""POST /alerts, the Alertmanager webhook: the daemon's one way in, and its hot path.

It answers 200 only once the notification is stored (ARCHITECTURE decision 1). Bad input gets a 4xx with the
reason; only a store that cannot persist gets 503, which makes Alertmanager retry.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web
from pydantic import ValidationError

from remediator.domain.alerts import Notification
from remediator.errors import StoreError
from remediator.server.params import error
from remediator.server.state import BODY_TIMEOUT_S, CLOCK, INTAKE, MAX_BODY_BYTES, METRICS, STORE, read_body
from remediator.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, SignatureChecker

logger = logging.getLogger(__name__)

SIGNATURES = web.AppKey[SignatureChecker | None]("signatures")
"""The HMAC checker when signed webhooks are configured; None accepts unsigned ones."""


_ACCEPTED = '{{"status": "accepted", "alerts": {}, "inbox_id": {}}}'


async def alerts(request: web.Request) -> web.Response:
    # The hot path: one coroutine, and the application read once (each lookup is a Python call in aiohttp).
    started = time.perf_counter()
    app = request.app
    metrics = app[METRICS]
    try:
        max_body_bytes = app[MAX_BODY_BYTES]
        if request.content_length is not None and request.content_length > max_body_bytes:
            return error(413, f"body over {max_body_bytes} bytes", metrics)
        if request.content_type != "application/json":
            return error(415, f"content type must be application/json, not {request.content_type!r}", metrics)
        try:
            raw = await read_body(request)
        except web.HTTPRequestEntityTooLarge:
            return error(413, f"body over {max_body_bytes} bytes", metrics)
        if raw is None:
            response = error(408, f"request body not received within {app[BODY_TIMEOUT_S]:g} s", metrics)
            response.force_close()  # the rest of the body may still be on its way
            return response
        signatures = app[SIGNATURES]
        refused = None if signatures is None else _signature_refusal(request, signatures, raw, app[CLOCK]())
        if refused is not None:
            return error(401, refused, metrics)
        try:
            # pydantic parses and validates the bytes in one pass (no intermediate dict)
            notification = Notification.model_validate_json(raw)
        except ValidationError as exc:
            return error(400, _invalid(exc), metrics)
        try:
            inbox_id = await app[STORE].inbox_put(raw.decode("utf-8", "replace"), app[CLOCK]())
        except StoreError as exc:
            # The reason is the whole story (disk full, database down); a traceback per retry would bury it.
            logger.error("cannot persist a notification (%s); answering 503 so Alertmanager retries", exc)
            return error(503, "cannot persist the notification now; retry", metrics)
        app[INTAKE].submit(inbox_id, notification)
        # The same JSON web.json_response would write, without a pass of the json encoder per request.
        accepted = _ACCEPTED.format(len(notification.alerts), inbox_id)
        return web.Response(text=accepted, content_type="application/json")
    finally:
        metrics.webhook_duration.observe(time.perf_counter() - started)


def _signature_refusal(
    request: web.Request, signatures: SignatureChecker, raw: bytes, now: float
) -> str | None:
    """Why a signed webhook is refused; None when it passes."""
    timestamp = request.headers.get(TIMESTAMP_HEADER)
    signature = request.headers.get(SIGNATURE_HEADER)
    # A signature and a timestamp are ASCII; anything else (bytes that are not UTF-8 arrive as lone
    # surrogates) cannot be authentic, and the checker's encode() would raise on it.
    if not all(value is None or value.isascii() for value in (timestamp, signature)):
        return "bad signature"
    return signatures.refusal(timestamp, signature, raw, now)


def _invalid(exc: ValidationError) -> str:
    """The reason a body is not a notification: not JSON at all, or the first few fields that are wrong."""
    errors = exc.errors()
    if errors and errors[0]["type"] == "json_invalid":
        return f"body is not JSON: {errors[0]['msg']}"
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in errors[:5])
    return f"not an Alertmanager webhook v4 payload: {problems}"
