"""Safety under load, on real parts: an alert storm restarts exactly what the limits allow, every notification
is accounted for, and a Docker daemon that dies opens the breaker while the webhook keeps answering."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from helpers import TOKEN, FakeClock, alert, eventually, notification
from realparts import CaptureServer, DockerDaemon

from remediator.app import App
from remediator.engine.runner import RetryPolicy

POLICY = """\
name: storm
match: [alertname = StormAlert]
target: {kind: container, from_label: container, allow: ["storm-[0-9]+"]}
steps:
  - act: container.restart
    with: {timeout_s: 2}
    verify: {resolved_within_s: 600}
  - escalate: oncall
limits:
  cooldown_s: 0
  max_actions: {count: 5, window_s: 3600}
  flapping: {count: 100, window_s: 3600}
"""

TARGETS = [f"storm-{n}" for n in range(10)]


@pytest.fixture
def daemon(
    start_app: Callable[..., Any], docker_daemon: DockerDaemon, capture_server: CaptureServer
) -> Callable[..., Any]:
    def start(clock: FakeClock | None = None, **env: str) -> Any:
        return start_app(
            policies={"storm.yaml": POLICY},
            clock=clock or FakeClock(),
            retry=RetryPolicy(tries=2, initial_s=0.05, max_s=0.1),
            REMEDIATOR_DOCKER__HOST=docker_daemon.host,
            REMEDIATOR_ESCALATION__TARGETS=json.dumps({"oncall": {"url": f"{capture_server.url}/hook"}}),
            **env,
        )

    return start


async def post_all(app: App, bodies: list[dict[str, Any]], concurrency: int = 32) -> list[int]:
    url = f"http://127.0.0.1:{app.port}/alerts"
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    statuses: list[int] = []
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(json.dumps(body).encode())

    async def worker(http: aiohttp.ClientSession) -> None:
        while not queue.empty():
            data = queue.get_nowait()
            async with http.post(url, data=data, headers=headers) as response:
                statuses.append(response.status)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    return statuses


async def started(docker_daemon: DockerDaemon) -> dict[str, str]:
    return await asyncio.to_thread(lambda: {t: docker_daemon.started_at(t) for t in TARGETS})


async def test_a_storm_restarts_exactly_what_the_limits_allow(
    daemon: Callable[..., Any], docker_daemon: DockerDaemon, capture_server: CaptureServer
) -> None:
    for target in TARGETS:
        await asyncio.to_thread(docker_daemon.run_container, target)
    before = await started(docker_daemon)
    # Budget 6 over 10 targets: exactly 6 restarts; the other 4 incidents are refused and escalated.
    app = await daemon(REMEDIATOR_GUARDS__BUDGET_COUNT="6")

    # 2,000 distinct firing alerts over 10 targets, each notified 5 times (Alertmanager's re-sends).
    alerts = [alert("StormAlert", fingerprint=f"fp{i:04d}", container=TARGETS[i % 10]) for i in range(2000)]
    bodies = [notification(a) for _ in range(5) for a in alerts]
    statuses = await post_all(app, bodies)
    assert statuses == [200] * 10_000
    assert app.intake is not None
    await app.intake.join()
    await capture_server.wait_for(4, timeout=30)
    await eventually(lambda: app.runner.running == 6)  # the 6 restarted incidents now wait for resolution

    after = await started(docker_daemon)
    restarted = [t for t in TARGETS if after[t] != before[t]]
    assert len(restarted) == 6

    trail = await app.store.audit_trail(limit=100_000)
    kinds = [a.kind for a in trail]
    # every one of the 10,000 alert notifications is accounted for, each exactly once
    assert kinds.count("opened") == 10
    assert kinds.count("attached") == 1990
    assert kinds.count("duplicate") == 8000
    refused = [a.detail for a in trail if a.kind == "refused"]
    assert len(refused) == 4 and {r["reason"] for r in refused} == {"budget"}
    escalated = {r.json["target"] for r in capture_server.requests}
    assert escalated == set(TARGETS) - set(restarted)
    assert app.metrics.actions.labels("storm", "act", "container.restart", "ok", "default")._value.get() == 6
    assert app.metrics.refusals.labels("storm", "budget")._value.get() == 4
    assert app.metrics.alerts_received.labels("StormAlert", "firing")._value.get() == 10_000


async def test_docker_down_opens_the_breaker_escalates_and_the_webhook_keeps_answering(
    daemon: Callable[..., Any], docker_daemon: DockerDaemon, capture_server: CaptureServer
) -> None:
    for target in TARGETS[:4]:
        await asyncio.to_thread(docker_daemon.run_container, target)
    clock = FakeClock()
    app = await daemon(
        clock, REMEDIATOR_GUARDS__BREAKER__FAILURES="2", REMEDIATOR_GUARDS__BREAKER__OPEN_S="30"
    )
    await asyncio.to_thread(docker_daemon.stop_daemon)
    try:
        for n, target in enumerate(TARGETS[:3]):
            assert await post_all(
                app, [notification(alert("StormAlert", fingerprint=f"b{n}", container=target))]
            ) == [200]
            await capture_server.wait_for(n + 1, timeout=30)
        reasons = [r.json["reason"] for r in capture_server.requests]
        assert "failed (temporary)" in reasons[0] and "docker unreachable" in reasons[0]
        assert "failed (temporary)" in reasons[1]
        assert "refused (breaker_open)" in reasons[2] and "backend:docker:default" in reasons[2]
        assert app.gate.circuits.get("backend:docker:default").status == "open"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{app.port}/metrics") as r:
                assert (
                    'remediator_breaker_state{breaker="backend:docker:default",host="default"} 2.0'
                    in await r.text()
                )
            async with http.get(f"http://127.0.0.1:{app.port}/readyz") as r:
                assert r.status == 200
    finally:
        await asyncio.to_thread(docker_daemon.start_daemon)

    before = await asyncio.to_thread(docker_daemon.started_at, TARGETS[3])
    clock.advance(31)  # past open_s: the next action is the half-open probe
    assert await post_all(
        app, [notification(alert("StormAlert", fingerprint="b3", container=TARGETS[3]))]
    ) == [200]
    await eventually(lambda: app.gate.circuits.get("backend:docker:default").status == "closed", timeout=30)
    assert await asyncio.to_thread(docker_daemon.started_at, TARGETS[3]) != before
    assert len(capture_server.requests) == 3
