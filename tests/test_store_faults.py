"""Faults of the store that must lose nothing and answer no 5xx (issue 12 items 3, 5 and 8; issue 19 item 5):
a full disk longer than any retry budget, a value PostgreSQL cannot hold, dropped PostgreSQL connections,
and breakers that must not pile up per target."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers import FakeClock, alert, eventually, fill, notification, post_alerts

from remediator.domain.alerts import Notification
from remediator.engine import intake as intake_module
from remediator.engine.gate import Gate
from remediator.metrics import Metrics
from remediator.settings import GuardSettings
from remediator.store.sqlite import SqliteStore


async def post(app: Any, body: dict[str, Any]) -> int:
    (status,) = await post_alerts(app.port, [body])
    return status


async def test_acknowledged_alerts_are_processed_once_the_disk_has_room_again(
    start_app: Any, small_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Backoff shortened: the old intake gave up after 6 tries (about 25 s; here well under a second).
    monkeypatch.setattr(intake_module, "_RETRY_INITIAL_S", 0.05)
    monkeypatch.setattr(intake_module, "_RETRY_MAX_S", 0.2)
    app = await start_app(REMEDIATOR_STATE_DIR=str(small_disk / "state"))
    bodies = [notification(alert("NoPolicyForThis", fingerprint=f"d{n}")) for n in range(5)]
    # Acknowledged (stored, as the webhook does before its 200), and handed to intake once the disk is full.
    ids = [await app.store.inbox_put(json.dumps(b), app.clock()) for b in bodies]
    filler = await asyncio.to_thread(fill, small_disk)
    for inbox_id, body in zip(ids, bodies, strict=True):
        app.intake.submit(inbox_id, Notification.model_validate(body))
    await asyncio.sleep(3)  # far past the old retry budget
    assert len(await app.store.inbox_pending()) == 5  # not processed: the disk is full
    filler.unlink()
    await eventually(lambda: _none_pending(app), timeout=30)  # no restart needed
    notes = [a for a in await app.store.audit_trail() if a.kind == "unmatched"]
    assert len(notes) == 5


async def _none_pending(app: Any) -> bool:
    return await app.store.inbox_pending() == []


async def test_a_nul_character_neither_stalls_nor_loses_alerts_on_postgres(
    fresh_pg_url: str, start_app: Any
) -> None:
    app = await start_app(REMEDIATOR_STORE__URL=fresh_pg_url)
    hostile = alert(fingerprint="n1", container="db\u0000x", instance="i\u0000")  # refused target
    hostile["annotations"]["summary"] = "nul \u0000 in an annotation"
    assert await post(app, notification(hostile)) == 200
    assert await post(app, notification(alert(fingerprint="n2", container="zz\u0000"))) == 200
    assert await post(app, notification(alert("NoPolicyForThis", fingerprint="n3"))) == 200
    # Recorded at once, not after 30 s of retries (and not left for the next start).
    await eventually(lambda: _none_pending(app), timeout=10)
    targets = sorted(i.target for i in await app.store.list_incidents())
    assert targets == ["db\ufffdx", "zz\ufffd"]
    (shown,) = [i for i in await app.store.list_incidents() if i.target == "db\ufffdx"]
    assert shown.status == "escalated" and shown.labels["instance"] == "i\u0000"  # JSON keeps it exactly


async def test_dropped_postgres_connections_answer_503_never_500(
    postgres: Any, fresh_pg_url: str, start_app: Any
) -> None:
    app = await start_app(REMEDIATOR_STORE__URL=fresh_pg_url)
    database = fresh_pg_url.rsplit("/", 1)[1]
    statuses: list[int] = []
    for n in range(6):
        subprocess.run(
            [
                "psql",
                postgres.dsn,
                "-qc",
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'",
            ],
            check=True,
            capture_output=True,
        )
        statuses.append(await post(app, notification(alert("NoPolicyForThis", fingerprint=f"p{n}"))))
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{app.port}/readyz") as r:
            statuses.append(r.status)
    assert set(statuses) <= {200, 503}, statuses
    await eventually(
        lambda: post(app, notification(alert("NoPolicyForThis", fingerprint="after"))), timeout=10
    )


async def test_breakers_of_healthy_targets_are_not_kept(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite3")
    await store.open()
    try:
        clock = FakeClock()
        metrics = Metrics()
        gate = Gate(store, GuardSettings(), metrics, clock)
        for n in range(1500):
            await gate.circuits.record({f"container:t{n}": False})  # one failure each: below the threshold
            await gate.circuits.record({f"container:t{n}": True})  # and it recovered
        await gate.circuits.record({"container:sick": False})
        series = [
            s for m in metrics.registry.collect() if m.name == "remediator_breaker_state" for s in m.samples
        ]
        assert [s.labels["breaker"] for s in series] == ["container:sick"]
        assert list(await store.breakers_load()) == ["container:sick"] and list(gate.breakers) == [
            "container:sick"
        ]
        clock.advance(gate.circuits.config.window_s + 1)  # its failure left the window: idle, forgotten
        await gate.circuits.load(["container:sick"])
        assert gate.breakers == {} and await store.breakers_load() == {}
    finally:
        await store.close()
