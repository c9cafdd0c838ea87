"""Effectiveness per policy (issue 17 item 3): ``GET /api/report`` and ``remediator report`` count, per policy,
incidents, actions, recoveries by step, escalations, refusals by reason, the success rate, time to recovery and
pages avoided, from the store: a real daemon restarting real containers on a real dockerd, on SQLite and on
PostgreSQL; the same numbers from a new daemon on the same store, and the period honoured."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from helpers import REPO, TOKEN, alert, eventually, notification, post_alerts
from realparts import DockerDaemon

from remediator.app import App

POLICIES = {
    "a.yaml": """\
name: report-db
match: [alertname = DatabaseDown]
target: {kind: container, from_label: container, allow: ["report-db", "report-db2"]}
limits: {cooldown_s: 300}
steps:
  - act: container.restart
    verify: {resolved_within_s: 60}
  - escalate: log
""",
    "b.yaml": """\
name: report-shadow
mode: shadow
match: [alertname = ShadowDown]
target: {kind: container, from_label: container, allow: ["report-db"]}
steps:
  - act: container.restart
    verify: {resolved_within_s: 60}
  - escalate: log
""",
    "c.yaml": """\
name: report-slow
match: [alertname = SlowDown]
target: {kind: container, from_label: container, allow: ["report-db3"]}
steps:
  - act: container.restart
    verify: {resolved_within_s: 0.5}
  - escalate: log
""",
    "d.yaml": """\
name: report-idle
match: [alertname = NeverFires]
target: {kind: container, from_label: container, allow: ["x"]}
steps:
  - escalate: log
""",
}


def _env(store_url: str, docker_daemon: DockerDaemon) -> dict[str, str]:
    store = (
        {"REMEDIATOR_STORE__PATH": store_url.removeprefix("sqlite:")}
        if store_url.startswith("sqlite:")
        else {"REMEDIATOR_STORE__URL": store_url}
    )
    return {
        **store,
        "REMEDIATOR_DOCKER__HOST": docker_daemon.host,
        "REMEDIATOR_PROMETHEUS__URL": "",
        "REMEDIATOR_SERVER__SHUTDOWN_GRACE_S": "0",
    }


async def _api(app: App, path: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{app.port}{path}", headers={"Authorization": f"Bearer {TOKEN}"}) as r,
    ):
        return r.status, await r.json()


async def _send(app: App, *alerts: dict[str, Any]) -> None:
    assert await post_alerts(app.port, [notification(a) for a in alerts]) == [200] * len(alerts)


async def _incident(app: App, incident_id: int, *statuses: str) -> bool:
    found = await app.store.get_incident(incident_id)
    return found is not None and found.status in statuses


async def _acted(app: App, incident_id: int) -> bool:
    return any(s.kind == "act" and s.status == "ok" for s in await app.store.steps(incident_id))


def _metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name}{{{wanted}}}")


async def test_per_policy_numbers_come_from_the_store(
    start_app: Callable[..., Any], docker_daemon: DockerDaemon, store_url: str
) -> None:
    for name in ("report-db", "report-db2", "report-db3"):
        await asyncio.to_thread(docker_daemon.run_container, name)
    env = _env(store_url, docker_daemon)
    app: App = await start_app(policies=POLICIES, **env)

    # 1: report-db restarted and recovered at P1 (critical): a page avoided.
    first = alert(container="report-db", fingerprint="a1", starts_at="2026-11-30T10:00:00Z")
    await _send(app, first)
    await eventually(lambda: _acted(app, 1), timeout=30)
    await _send(app, {**first, "status": "resolved"})
    await eventually(lambda: _incident(app, 1, "resolved"), timeout=30)
    # 2: report-db2 recovered at P3 (warning): nobody would have been paged, so no page avoided.
    second = alert(container="report-db2", fingerprint="a2", severity="warning")
    await _send(app, second)
    await eventually(lambda: _acted(app, 2), timeout=30)
    await _send(app, {**second, "status": "resolved"})
    await eventually(lambda: _incident(app, 2, "resolved"), timeout=30)
    # 3: a target outside the allow list: escalated, nothing acted. 4: report-db again, a new episode within the
    # cooldown: refused (cooldown) and escalated.
    await _send(app, alert(container="other", fingerprint="a3"))
    await eventually(lambda: _incident(app, 3, "escalated"), timeout=30)
    await _send(app, alert(container="report-db", fingerprint="a1", starts_at="2026-11-30T11:00:00Z"))
    await eventually(lambda: _incident(app, 4, "escalated"), timeout=30)
    await asyncio.sleep(1.2)
    between = time.time()
    # 5: shadow mode: would have restarted, acted on nothing. 6: restarted, did not recover within 0.5 s.
    await _send(app, alert("ShadowDown", container="report-db", fingerprint="b1"))
    await eventually(lambda: _incident(app, 5, "waiting"), timeout=30)
    await _send(app, alert("SlowDown", container="report-db3", fingerprint="c1"))
    await eventually(lambda: _incident(app, 6, "escalated"), timeout=30)

    status, answer = await _api(app, "/api/report")
    assert status == 200, answer
    by_policy = {p["policy"]: p for p in answer["policies"]}
    assert list(by_policy) == ["report-db", "report-idle", "report-shadow", "report-slow"]  # loaded ones too
    db = by_policy["report-db"]
    assert {k: v for k, v in db.items() if not k.startswith("time_to_recovery")} == {
        "policy": "report-db",
        "incidents": 4,
        "acted": 2,
        "recovered": 2,
        "recovered_by_step": {"container.restart": 2},
        "escalated": 2,
        "refused": 2,
        "refusals": {"cooldown": 1, "target_refused": 1},
        "shadow": 0,
        "resolved_without_action": 0,
        "success_rate": 1.0,
        "pages_avoided": 1,
    }
    # Time to recovery: from opening to the verification that saw it, read here from the audit trail.
    ttr = []
    for incident_id in (1, 2):
        incident = await app.store.get_incident(incident_id)
        assert incident is not None
        (verified,) = [a for a in await app.store.audit_trail(incident_id) if a.kind == "verified"]
        ttr.append(verified.at - incident.opened_at)
    assert db["time_to_recovery_p50_s"] == pytest.approx(
        min(ttr), abs=0.002
    )  # nearest rank of two: the lower
    assert db["time_to_recovery_p90_s"] == pytest.approx(max(ttr), abs=0.002)
    assert by_policy["report-shadow"] == {
        "policy": "report-shadow",
        "incidents": 1,
        "acted": 0,
        "recovered": 0,
        "recovered_by_step": {},
        "escalated": 0,
        "refused": 0,
        "refusals": {"shadow": 1},
        "shadow": 1,
        "resolved_without_action": 0,
        "success_rate": None,
        "time_to_recovery_p50_s": None,
        "time_to_recovery_p90_s": None,
        "pages_avoided": 0,
    }
    slow = by_policy["report-slow"]
    assert (slow["incidents"], slow["acted"], slow["recovered"], slow["escalated"]) == (1, 1, 0, 1)
    assert slow["success_rate"] == 0.0 and slow["pages_avoided"] == 0
    assert by_policy["report-idle"]["incidents"] == 0 and by_policy["report-idle"]["success_rate"] is None
    everything = answer["all"]
    assert (everything["incidents"], everything["acted"], everything["recovered"]) == (6, 3, 2)
    assert everything["success_rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert everything["refusals"] == {"cooldown": 1, "shadow": 1, "target_refused": 1}

    # The same recoveries as metrics of this process.
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{app.port}/metrics") as r:
        metrics = await r.text()
    assert _metric(metrics, "remediator_recoveries_total", policy="report-db", step="container.restart") == 2
    assert _metric(metrics, "remediator_pages_avoided_total", policy="report-db") == 1

    # The period: only what opened within it.
    recent = time.time() - between + 0.5
    status, answer = await _api(app, f"/api/report?since={recent:.3f}")
    assert status == 200
    counted = {p["policy"]: p["incidents"] for p in answer["policies"]}
    assert counted == {"report-db": 0, "report-idle": 0, "report-shadow": 1, "report-slow": 1}
    for bad in ("0", "-5", "abc", "nan", "1e12"):
        status, refused = await _api(app, f"/api/report?since={bad}")
        assert status == 400 and "since must be" in refused["error"], (bad, refused)

    # A new daemon on the same store (a restart, or another replica) reports the same numbers.
    everything_before = everything
    await app.stop()
    again: App = await start_app(policies=POLICIES, **env)
    _, answer = await _api(again, "/api/report?since=86400")
    assert answer["all"] == everything_before

    # The command line: a table by default, the API's JSON with -o json.
    done = await asyncio.to_thread(_cli, again, "report", "--since", "1d")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("incidents opened from ") and lines[1].split()[:4] == [
        "POLICY",
        "INCIDENTS",
        "ACTED",
        "RECOVERED",
    ]
    row = next(line for line in lines if line.startswith("report-db "))
    assert row.split()[:5] == ["report-db", "4", "2", "2", "100%"]
    assert "container.restart 2" in row and "cooldown 1" in row
    assert next(line for line in lines if line.startswith("all ")).split()[:5] == [
        "all",
        "6",
        "3",
        "2",
        "67%",
    ]
    done = await asyncio.to_thread(_cli, again, "report", "--since", "1d", "-o", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["all"] == everything_before
    done = await asyncio.to_thread(_cli, again, "report", "--since", "soon")
    assert done.returncode == 2 and "is not a period" in done.stderr


def _cli(app: App, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "remediator",
            *args,
            "--url",
            f"http://127.0.0.1:{app.port}",
            "--token",
            TOKEN,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
