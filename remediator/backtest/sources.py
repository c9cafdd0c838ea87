"""Where a backtest's history comes from, as the deliveries the daemon would have received and when: webhook
bodies from a JSON-lines file, or the store's own inbox (Prometheus's ALERTS have their own module,
``prometheus``)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from remediator.backtest.times import parse_time
from remediator.domain.alerts import Notification
from remediator.errors import RemediatorError
from remediator.store.base import Store

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivery:
    """One notification and the Unix time the daemon would have received it."""

    at: float
    notification: Notification


def received_at(notification: Notification) -> float:
    """When a webhook body with no time of its own was sent: its latest change, i.e. the latest ``startsAt``
    of its firing alerts and ``endsAt`` of its resolved ones."""
    times = [
        (a.ends_at or a.starts_at).timestamp() if a.status == "resolved" else a.starts_at.timestamp()
        for a in notification.alerts
    ]
    return max(times)


def read_jsonl(path: Path, max_body_bytes: int) -> list[Delivery]:
    """Webhook bodies, one JSON object a line: a body, or ``{"at": UNIX_OR_ISO, "body": BODY}`` with the time it
    was received. Blank lines and lines starting with ``#`` are skipped."""
    deliveries: list[Delivery] = []
    with path.open(encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            if len(text) > max_body_bytes:
                raise RemediatorError(f"{path}:{number}: over {max_body_bytes} bytes")
            try:
                raw = json.loads(text)
                at: float | None = None
                if isinstance(raw, dict) and "body" in raw and "alerts" not in raw:
                    at = _time_of(raw.get("at"))
                    raw = raw["body"]
                notification = Notification.model_validate(raw)
            except (ValueError, ValidationError) as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise RemediatorError(
                    f"{path}:{number}: not an Alertmanager webhook v4 body: {reason}"
                ) from exc
            deliveries.append(Delivery(received_at(notification) if at is None else at, notification))
    return sorted(deliveries, key=lambda d: d.at)


def _time_of(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        return parse_time(value)
    raise ValueError(f"'at' is neither a Unix time nor an ISO time: {value!r}")


async def read_inbox(store: Store, since: float, until: float) -> list[Delivery]:
    """What this daemon received from ``since`` to ``until``, at the time it received each (read only). A row
    whose body no longer validates is skipped, as intake sets it aside."""
    deliveries = []
    for at, body in await store.inbox_received(since, until):
        try:
            deliveries.append(Delivery(at, Notification.model_validate_json(body)))
        except ValidationError:
            logger.warning("an inbox row received at %s no longer validates; skipped", at)
    return deliveries
