"""A drill that holds a transaction idle on a real PostgreSQL, and the pool-exhausted remediation ending it.

Nothing here exports PostgreSQL metrics to Prometheus, so the test posts the alert a pool monitor would send
(PostgresPoolExhausted) once the drill's session is idle in transaction; the injection, the termination and the
drill's timings are all real.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from helpers import TOKEN, alert, eventually, notification, post_alerts, settings_env
from realparts import Postgres

from remediator.api_client import ApiClient
from remediator.app import App
from remediator.drill import run_drill
from remediator.settings import Settings

POLICY = """\
name: pool-exhausted
match: [alertname = PostgresPoolExhausted]
target: {kind: postgres, from_label: db, allow: ["orders-db"]}
steps:
  - act: postgres.terminate_idle
    with: {idle_s: 1, applications: [remediator-drill]}
    verify: {resolved_within_s: 30}
  - escalate: log
drill: {detect_within_s: 20, recover_within_s: 40}
"""


async def idle_drill_sessions(dsn: str) -> list[Any]:
    db = await asyncpg.connect(dsn)
    try:
        return list(
            await db.fetch(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'remediator-drill'"
                " AND state = 'idle in transaction'"
            )
        )
    finally:
        await db.close()


async def post(app: App, body: dict[str, Any]) -> None:
    assert await post_alerts(app.port, [body]) == [200]


async def test_an_idle_transaction_drill_is_injected_remediated_and_timed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres: Postgres
) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "pool.yaml").write_text(POLICY)
    targets = {"orders-db": {"dsn": postgres.dsn}}
    env = settings_env(
        tmp_path,
        REMEDIATOR_POLICIES_DIR=str(policies),
        REMEDIATOR_POSTGRES__TARGETS=json.dumps(targets),
        REMEDIATOR_DOCKER__HOST="unix:///nonexistent.sock",
    )
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    app = App(settings)
    await app.start()
    try:
        labels = {"db": "orders-db", "fingerprint": "pool"}

        async def monitor() -> None:
            # stands in for postgres_exporter + a Prometheus rule: fire while a drill session is stuck, resolve after
            await eventually(lambda: idle_drill_sessions(postgres.dsn), timeout=20)
            await asyncio.sleep(1.2)  # older than idle_s
            await post(app, notification(alert("PostgresPoolExhausted", **labels)))
            await eventually(lambda: _none(postgres.dsn), timeout=20)
            await post(app, notification(alert("PostgresPoolExhausted", status="resolved", **labels)))

        watcher = asyncio.create_task(monitor())
        report = await run_drill(
            settings,
            app.policies[0],
            "orders-db",
            ApiClient(f"http://127.0.0.1:{app.port}", TOKEN),
            timeout_s=40,
        )
        await watcher
        print(report.render())
        assert report.injected == "idle_transaction"
        assert report.outcome == "resolved" and report.passed, report.render()
        (step,) = await app.store.steps(report.incident_id or 0)
        assert step.status == "ok" and "terminated 1" in step.detail
    finally:
        await app.stop()


async def _none(dsn: str) -> bool:
    return await idle_drill_sessions(dsn) == []
