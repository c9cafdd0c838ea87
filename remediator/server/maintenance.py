"""/api/maintenance (token required): declare, list and cancel maintenance windows (``remediator maintenance``
is its client; engine/maintenance.py applies them).

    POST   /api/maintenance       {"target", "for_s", "reason", "host"?, "policy"?, "start"?, "by"?} -> 201
    GET    /api/maintenance[?all=1]                                                                   -> 200
    DELETE /api/maintenance/{id}[?by=NAME]                                                            -> 200
"""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import datetime
from typing import Any

from aiohttp import web

from remediator.domain.maintenance import ANY, MaintenanceWindow, utc
from remediator.engine.maintenance import Maintenance, MaintenanceRefused
from remediator.server.params import error, parse_id
from remediator.server.state import CLOCK, read_body

MAINTENANCE = web.AppKey[Maintenance | None]("maintenance")


def shown(window: MaintenanceWindow, now: float) -> dict[str, Any]:
    """A window as the API shows it: its fields, its state now, and its times in UTC for people."""
    return {
        **dataclasses.asdict(window),
        "state": window.state(now),
        "starts_utc": utc(window.starts_at),
        "ends_utc": utc(window.ends_at),
    }


def _start(raw: object) -> float | None:
    """``start``: a Unix time, or an ISO 8601 time with its offset (``2026-12-01T22:00:00Z``)."""
    if raw is None:
        return None
    if isinstance(raw, bool):
        raise ValueError("start must be a Unix time or an ISO 8601 time with its offset")
    if isinstance(raw, int | float):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            raise ValueError(f"start {raw!r} is not an ISO 8601 time") from None
        if parsed.tzinfo is None:
            raise ValueError(f"start {raw!r} has no offset: write it in UTC with Z, or with +HH:MM")
        value = parsed.timestamp()
    else:
        raise ValueError("start must be a Unix time or an ISO 8601 time with its offset")
    if not math.isfinite(value):
        raise ValueError("start must be a finite time")
    return value


def _text(body: dict[str, Any], key: str, default: str | None = None) -> str:
    value = body.get(key, default)
    if value is None:
        raise ValueError(f"{key} is required")
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string")
    return value


async def add(request: web.Request) -> web.Response:
    maintenance = request.app[MAINTENANCE]
    if maintenance is None:
        return error(404, "this daemon has no maintenance windows")
    raw = await read_body(request)
    if raw is None:
        return error(408, "the request body did not arrive in time")
    try:
        body = json.loads(raw)
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object")
        duration = body.get("for_s")
        if isinstance(duration, bool) or not isinstance(duration, int | float) or not math.isfinite(duration):
            raise ValueError("for_s (the window's length in seconds) must be a number")
        declared = await maintenance.add(
            target=_text(body, "target"),
            duration_s=float(duration),
            reason=_text(body, "reason"),
            by=_text(body, "by", f"api from {request.remote}"),
            host=_text(body, "host", ANY),
            policy=_text(body, "policy", ANY),
            start=_start(body.get("start")),
        )
    except (ValueError, MaintenanceRefused) as exc:  # json.JSONDecodeError is a ValueError
        return error(400, str(exc))
    now = request.app[CLOCK]()
    return web.json_response(
        {"window": shown(declared.window, now), "warnings": list(declared.warnings)}, status=201
    )


async def listing(request: web.Request) -> web.Response:
    maintenance = request.app[MAINTENANCE]
    if maintenance is None:
        return web.json_response({"windows": []})
    include_ended = request.query.get("all", "") not in ("", "0", "false")
    now = request.app[CLOCK]()
    windows = await maintenance.windows(include_ended)
    return web.json_response({"windows": [shown(w, now) for w in windows]})


async def cancel(request: web.Request) -> web.Response:
    maintenance = request.app[MAINTENANCE]
    window_id = parse_id(request.match_info["id"], "maintenance window")
    if maintenance is None:
        return error(404, f"no maintenance window {window_id}")
    by = request.query.get("by") or f"api from {request.remote}"
    window = await maintenance.cancel(window_id, by[:200])
    if window is None:
        return error(404, f"no maintenance window {window_id}")
    now = request.app[CLOCK]()
    if window.cancelled_at is None:
        return error(409, f"maintenance window {window_id} already ended at {utc(window.ends_at)}")
    return web.json_response({"window": shown(window, now)})
