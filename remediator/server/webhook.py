"""POST /alerts, the Alertmanager webhook: the daemon's one way in, and its hot path.

It answers 200 only once the notification is stored (ARCHITECTURE decision 1). Bad input gets a 4xx with the
reason; only a store that cannot persist gets 503, which makes Alertmanager retry.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from aiohttp import web
from pydantic import ValidationError

from remediator.domain.alerts import Notification
from remediator.domain.clock import Clock
from remediator.engine.intake import Intake
from remediator.errors import StoreError
from remediator.metrics import Metrics
from remediator.server.params import error
from remediator.server.state import read_body
from remediator.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, SignatureChecker
from remediator.store.base import Store

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WebhookParts:
    """What POST /alerts uses, taken from the application in one lookup (each is a Python call in aiohttp,
    on the hot path)."""

    store: Store
    intake: Intake
    metrics: Metrics
    clock: Clock
    max_body_bytes: int
    body_timeout_s: float
    signatures: SignatureChecker | None
    """The HMAC checker when signed webhooks are configured; None accepts unsigned ones."""


WEBHOOK = web.AppKey("webhook", WebhookParts)


_ACCEPTED = '{{"status": "accepted", "alerts": {}, "inbox_id": {}}}'
_JSON = {"Content-Type": "application/json; charset=utf-8"}


async def alerts(request: web.Request) -> web.Response:
    # The hot path: one coroutine (no helper coroutines), the parts read once.
    started = time.perf_counter()
    parts = request.app[WEBHOOK]
    metrics = parts.metrics
    try:
        if request.content_length is not None and request.content_length > parts.max_body_bytes:
            return error(413, f"body over {parts.max_body_bytes} bytes", metrics)
        if request.content_type != "application/json":
            return error(415, f"content type must be application/json, not {request.content_type!r}", metrics)
        try:
            raw = await read_body(request)
        except web.HTTPRequestEntityTooLarge:
            return error(413, f"body over {parts.max_body_bytes} bytes", metrics)
        if raw is None:
            response = error(408, f"request body not received within {parts.body_timeout_s:g} s", metrics)
            response.force_close()  # the rest of the body may still be on its way
            return response
        if parts.signatures is not None:
            refused = _signature_refusal(request, parts.signatures, raw, parts.clock())
            if refused is not None:
                return error(401, refused, metrics)
        try:
            # pydantic parses and validates the bytes in one pass (no intermediate dict)
            notification = Notification.model_validate_json(raw)
        except ValidationError as exc:
            return error(400, _invalid(exc), metrics)
        try:
            inbox_id = await parts.store.inbox_put(raw.decode("utf-8", "replace"), parts.clock())
        except StoreError as exc:
            # The reason is the whole story (disk full, database down); a traceback per retry would bury it.
            logger.error("cannot persist a notification (%s); answering 503 so Alertmanager retries", exc)
            return error(503, "cannot persist the notification now; retry", metrics)
        parts.intake.submit(inbox_id, notification)
        # What web.json_response would write, without the json encoder and the content-type parsing.
        accepted = _ACCEPTED.format(len(notification.alerts), inbox_id).encode()
        return web.Response(body=accepted, headers=_JSON)
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
