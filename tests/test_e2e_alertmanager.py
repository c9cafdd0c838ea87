"""The spine on real parts: a real Alertmanager posts, remediator restarts a container on a private Docker
daemon, verifies, and escalates to a capture server when the restart does not bring recovery."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers import TOKEN, eventually
from realparts import Alertmanager, CaptureServer, DockerDaemon

from remediator.app import App

POLICY = """\
name: database-down
match:
  - alertname = DatabaseDown
  - severity =~ "critical|page"
target:
  kind: container
  from_label: container
  allow: ["sms-db", "db-[a-z]+"]
steps:
  - diagnose: container.logs
    with: {tail: 5}
  - act: container.restart
    with: {timeout_s: 5}
    verify: {resolved_within_s: VERIFY}
  - escalate: oncall
"""

ANNOTATIONS = {"summary": "PostgreSQL is down", "runbook_url": "https://runbooks.example.com/DatabaseDown"}


def labels(container: str) -> dict[str, str]:
    return {"alertname": "DatabaseDown", "severity": "critical", "container": container}


@pytest.fixture
def daemon(
    start_app: Callable[..., Any], docker_daemon: DockerDaemon, capture_server: CaptureServer
) -> Callable[[float], Any]:
    """A factory: start remediator in-process with a verify window of N seconds."""

    def start(verify_s: float) -> Any:
        return start_app(
            policies={"db.yaml": POLICY.replace("VERIFY", str(verify_s))},
            REMEDIATOR_DOCKER__HOST=docker_daemon.host,
            REMEDIATOR_ESCALATION__TARGETS=json.dumps({"oncall": {"url": f"{capture_server.url}/hook"}}),
        )

    return start


async def started_at(docker_daemon: DockerDaemon, name: str) -> str:
    return await asyncio.to_thread(docker_daemon.started_at, name)


async def metrics_text(app: App) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{app.port}/metrics") as r:
        return await r.text()


async def test_alertmanager_to_restart_to_resolution(
    daemon: Callable[[float], Any],
    docker_daemon: DockerDaemon,
    alertmanager_factory: Callable[..., Alertmanager],
    capture_server: CaptureServer,
) -> None:
    await asyncio.to_thread(docker_daemon.run_container, "sms-db")
    before = await started_at(docker_daemon, "sms-db")
    app = await daemon(60)
    # repeat_interval 1s: Alertmanager re-sends the firing group every second, as it does in production
    # on every repeat_interval and after a failed delivery.
    am = alertmanager_factory(f"http://127.0.0.1:{app.port}/alerts", TOKEN, repeat_interval="1s")
    await asyncio.to_thread(am.fire, labels("sms-db"), ANNOTATIONS)

    await eventually(
        lambda: asyncio.to_thread(lambda: docker_daemon.started_at("sms-db") != before), timeout=30
    )
    after_restart = await started_at(docker_daemon, "sms-db")

    # Re-sends keep arriving; none of them restarts again.
    await eventually(lambda: _count(app, "duplicate", 2), timeout=20)
    assert await started_at(docker_daemon, "sms-db") == after_restart

    await asyncio.to_thread(am.resolve, labels("sms-db"), ANNOTATIONS)
    incident = await eventually(lambda: _resolved(app), timeout=20)
    assert incident.target == "sms-db" and incident.policy == "database-down"
    await eventually(lambda: _count(app, "verified", 1, incident.id))  # written as the ladder wakes up

    trail = [a.kind for a in await app.store.audit_trail(incident.id)]
    assert trail[0] == "opened" and "duplicate" in trail and "resolved" in trail and "verified" in trail
    steps = await app.store.steps(incident.id)
    assert [(s.name, s.status) for s in steps] == [("container.logs", "ok"), ("container.restart", "ok")]
    assert "restarted sms-db" in steps[1].detail
    assert capture_server.requests == []  # recovered: nobody was paged

    text = await metrics_text(app)
    assert (
        'remediator_actions_total{action="container.restart",host="default",kind="act",outcome="ok",policy="database-down"} 1.0'
        in text
    )
    assert 'remediator_alerts_received_total{alertname="DatabaseDown",status="resolved"} 1.0' in text
    firing = _sample(text, 'remediator_alerts_received_total{alertname="DatabaseDown",status="firing"}')
    assert firing >= 3
    assert _sample(text, 'remediator_action_duration_seconds_count{action="container.restart"}') == 1
    assert "remediator_incidents_open 0.0" in text


async def test_no_recovery_escalates_with_the_whole_story(
    daemon: Callable[[float], Any],
    docker_daemon: DockerDaemon,
    alertmanager_factory: Callable[..., Alertmanager],
    capture_server: CaptureServer,
) -> None:
    await asyncio.to_thread(docker_daemon.run_container, "db-orders")
    before = await started_at(docker_daemon, "db-orders")
    app = await daemon(1.5)
    capture_server.fail_first(2)  # the on-call webhook is down at first: retried until delivered
    am = alertmanager_factory(f"http://127.0.0.1:{app.port}/alerts", TOKEN)
    await asyncio.to_thread(am.fire, labels("db-orders"), ANNOTATIONS)

    requests = await capture_server.wait_for(3, timeout=30)
    assert [r.status for r in requests] == [503, 503, 200]
    assert await started_at(docker_daemon, "db-orders") != before
    request = requests[-1]
    assert request.method == "POST" and request.path == "/hook"
    assert request.headers["Content-Type"] == "application/json"
    body = request.json
    assert {r.json["incident_id"] for r in requests} == {body["incident_id"]}
    assert len({r.headers["Idempotency-Key"] for r in requests}) == 1
    assert body["policy"] == "database-down" and body["target"] == "db-orders"
    assert body["severity"] == "critical" and body["status"] == "escalated"
    assert body["runbook_url"] == "https://runbooks.example.com/DatabaseDown"
    assert "did not recover within 1.5s" in body["reason"]
    assert [(s["name"], s["status"]) for s in body["steps"]] == [
        ("container.logs", "ok"),
        ("container.restart", "ok"),
    ]
    assert (
        body["evidence"][0]["name"] == "container.logs" and "state=running" in body["evidence"][0]["detail"]
    )
    assert body["labels"]["container"] == "db-orders"

    incident = await app.store.get_incident(body["incident_id"])
    assert incident is not None and incident.status == "escalated"
    await eventually(lambda: _count(app, "escalation_delivered", 1, body["incident_id"]))
    text = await metrics_text(app)
    assert (
        'remediator_escalations_total{notifier="oncall",policy="database-down",result="delivered"} 1.0'
        in text
    )


async def test_bad_requests_and_refused_targets_never_reach_docker(
    daemon: Callable[[float], Any],
    docker_daemon: DockerDaemon,
    alertmanager_factory: Callable[..., Alertmanager],
    capture_server: CaptureServer,
) -> None:
    await asyncio.to_thread(docker_daemon.run_container, "sms-db")
    before = await started_at(docker_daemon, "sms-db")
    app = await daemon(60)
    url = f"http://127.0.0.1:{app.port}/alerts"
    good = json.loads((Path(__file__).parent / "fixtures" / "alertmanager_v4_firing.json").read_text())
    async with aiohttp.ClientSession() as http:
        for headers, body, status in [
            ({"Authorization": "Bearer wrong"}, json.dumps(good), 401),
            ({}, json.dumps(good), 401),
            ({"Authorization": f"Bearer {TOKEN}"}, '{"version": "4", "alerts": [', 400),
            ({"Authorization": f"Bearer {TOKEN}"}, json.dumps({**good, "pad": "x" * 1_100_000}), 413),
        ]:
            async with http.post(
                url, data=body, headers={"Content-Type": "application/json", **headers}
            ) as r:
                assert r.status == status

    # Through the real Alertmanager, a label that tries to smuggle a command:
    am = alertmanager_factory(url, TOKEN)
    await asyncio.to_thread(am.fire, labels("sms-db; rm -rf /"), ANNOTATIONS)
    (request,) = await capture_server.wait_for(1, timeout=20)
    assert "outside the allow list" in request.json["reason"]
    assert request.json["target"] == "sms-db; rm -rf /"
    assert request.json["steps"] == []

    assert await started_at(docker_daemon, "sms-db") == before
    text = await metrics_text(app)
    assert "remediator_actions_total{" not in text
    assert 'remediator_decisions_total{decision="target_refused"} 1.0' in text


async def _count(app: App, kind: str, n: int, incident_id: int | None = None) -> bool:
    trail = await app.store.audit_trail(incident_id)
    return sum(1 for a in trail if a.kind == kind) >= n


async def _resolved(app: App) -> Any:
    found = await app.store.list_incidents("resolved")
    return found[0] if found else None


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")
