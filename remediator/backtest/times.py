"""How a backtest reads and writes times, shared by its sources, its replay and its summary: the command
line's times and durations in, ISO UTC times and clock hours out."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_time(value: str) -> float:
    """A Unix time, or an ISO 8601 time (UTC when it names no zone)."""
    try:
        return float(value)
    except ValueError:
        pass
    when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def parse_duration(value: str) -> float:
    """``90s``, ``15m``, ``6h``, ``7d``, ``2w`` in seconds."""
    found = _DURATION.fullmatch(value.strip())
    if found is None:
        raise ValueError(f"not a duration (like 90s, 15m, 6h, 7d, 2w): {value!r}")
    return float(found.group(1)) * _UNIT_S[found.group(2)]


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def hour(ts: float) -> str:
    return datetime.fromtimestamp(ts - ts % 3600, UTC).strftime("%Y-%m-%dT%H:00Z")
