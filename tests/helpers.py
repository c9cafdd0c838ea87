"""Shared test helpers: settings for an in-process daemon, and payloads shaped like Alertmanager's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TOKEN = "test-token-0123456789"


def settings_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """REMEDIATOR_* variables for a daemon on a free port with its state under ``tmp_path``."""
    return {
        "REMEDIATOR_STATE_DIR": str(tmp_path / "state"),
        "REMEDIATOR_POLICIES_DIR": str(REPO / "policies"),
        "REMEDIATOR_SERVER__PORT": "0",
        "REMEDIATOR_SERVER__TOKEN": TOKEN,
        **extra,
    }


def alert(
    alertname: str = "DatabaseDown",
    status: str = "firing",
    fingerprint: str = "f1",
    starts_at: str = "2026-11-23T10:00:00Z",
    **labels: str,
) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": alertname, "severity": "critical", **labels},
        "annotations": {
            "summary": f"{alertname} fired",
            "runbook_url": f"https://runbooks.example.com/{alertname}",
        },
        "startsAt": starts_at,
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else datetime.now(UTC).isoformat(),
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": fingerprint,
    }


def notification(*alerts: dict[str, Any]) -> dict[str, Any]:
    status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    return {
        "version": "4",
        "groupKey": '{}:{alertname="DatabaseDown"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "rem",
        "groupLabels": {"alertname": alerts[0]["labels"]["alertname"]},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
    }


async def eventually(check: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Poll ``check`` (sync or async) until it returns a truthy value; fail with its last value."""
    deadline = time.monotonic() + timeout
    value: Any = None
    while time.monotonic() < deadline:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")


class FakeClock:
    """An injected clock that moves only when a test says so."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def post_alerts(port: int, bodies: list[dict[str, Any]], token: str = TOKEN) -> list[int]:
    """POST each notification to the daemon's webhook on 127.0.0.1:``port`` (50 at a time, as a burst from a
    few Alertmanagers would); the status of each, in order."""
    import aiohttp  # here: the helpers above serve tests that need no HTTP client

    headers = {"Authorization": f"Bearer {token}"}
    url = f"http://127.0.0.1:{port}/alerts"
    async with aiohttp.ClientSession() as http:

        async def one(body: dict[str, Any]) -> int:
            async with http.post(url, json=body, headers=headers) as r:
                await r.read()
                return r.status

        statuses: list[int] = []
        for start in range(0, len(bodies), 50):
            statuses.extend(await asyncio.gather(*(one(b) for b in bodies[start : start + 50])))
        return statuses


def fill(directory: Path) -> Path:
    """Write a file in ``directory`` until its filesystem has not one byte left (ENOSPC); the file, to delete."""
    import errno
    import os

    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 16, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return filler
