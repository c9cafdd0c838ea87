"""Checks against a real Prometheus: a healthy floor holds back a restart while too few replicas are up, and
a Prometheus that is down is never read as healthy or recovered."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest_asyncio
import yaml
from aiohttp import web
from helpers import alert, eventually, notification, post_alerts
from realparts import DockerDaemon, Prometheus, free_port

from remediator.app import App

POLICY = """\
name: web-floor
match: [alertname = WebErrors]
target: {kind: container, from_label: container, allow: ["floor-web"]}
healthy_floor:
  prometheus: {query: 'count(up{job="web"} == 1) >= bool 2'}
  hold_s: 1
  interval_s: 0.2
steps:
  - act: container.restart
    with: {timeout_s: 2}
    verify:
      within_s: 3
      interval_s: 0.2
      prometheus: {query: 'up{job="web"} == 1'}
  - escalate: oncall
limits: {cooldown_s: 0, flapping: {count: 100, window_s: 3600}}
"""


class Replicas:
    """Three scrape targets on loopback; each serves metrics (up) or not (down)."""

    def __init__(self) -> None:
        self.ports = [free_port() for _ in range(3)]
        self.runners: dict[int, web.AppRunner] = {}

    async def up(self, port: int) -> None:
        async def metrics(_: web.Request) -> web.Response:
            return web.Response(text="ok 1\n")

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        self.runners[port] = runner

    async def close(self) -> None:
        for runner in self.runners.values():
            await runner.cleanup()


@pytest_asyncio.fixture
async def rig(
    start_app: Callable[..., Any],
    docker_daemon: DockerDaemon,
    prometheus_factory: Callable[..., Prometheus],
    capture_server: Any,
) -> AsyncIterator[tuple[App, Replicas, Prometheus, Any]]:
    replicas = Replicas()
    await replicas.up(replicas.ports[0])  # 1 of 3 up: below the floor of 2
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "500ms", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "web", "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in replicas.ports]}]}
        ],
    }
    prometheus = prometheus_factory(yaml.safe_dump(config))
    await asyncio.to_thread(docker_daemon.run_container, "floor-web")
    app = await start_app(
        policies={"floor.yaml": POLICY},
        REMEDIATOR_DOCKER__HOST=docker_daemon.host,
        REMEDIATOR_PROMETHEUS__URL=prometheus.url,
        REMEDIATOR_ESCALATION__TARGETS=json.dumps({"oncall": {"url": f"{capture_server.url}/hook"}}),
    )
    try:
        yield app, replicas, prometheus, capture_server
    finally:
        await app.stop()
        await replicas.close()


async def post(app: App, body: dict[str, Any]) -> None:
    assert await post_alerts(app.port, [body]) == [200]


async def query(prometheus: Prometheus, promql: str) -> list[Any]:
    url = f"{prometheus.url}/api/v1/query"
    async with aiohttp.ClientSession() as http, http.get(url, params={"query": promql}) as r:
        return list((await r.json())["data"]["result"])


async def test_the_floor_blocks_a_restart_while_too_few_replicas_are_up(
    rig: tuple[App, Replicas, Prometheus, Any], docker_daemon: DockerDaemon
) -> None:
    app, replicas, prometheus, capture = rig
    await eventually(lambda: query(prometheus, 'up{job="web"} == 0'), timeout=15)  # scraped: 1 up, 2 down
    before = await asyncio.to_thread(docker_daemon.started_at, "floor-web")

    await post(app, notification(alert("WebErrors", fingerprint="a", container="floor-web")))
    (request,) = await capture.wait_for(1, timeout=20)
    assert "refused (healthy_floor): healthy floor does not hold" in request.json["reason"]
    assert await asyncio.to_thread(docker_daemon.started_at, "floor-web") == before

    # a second replica comes up: the floor holds, and the next incident acts
    await replicas.up(replicas.ports[1])
    await eventually(lambda: query(prometheus, 'count(up{job="web"} == 1) >= 2'), timeout=15)
    await post(
        app, notification(alert("WebErrors", fingerprint="a", container="floor-web", status="resolved"))
    )
    await post(app, notification(alert("WebErrors", fingerprint="b", container="floor-web")))
    await eventually(lambda: _restarted(docker_daemon, before), timeout=20)
    assert app.metrics.refusals.labels("web-floor", "healthy_floor")._value.get() == 1


async def test_a_stopped_prometheus_is_never_read_as_recovered(
    rig: tuple[App, Replicas, Prometheus, Any], docker_daemon: DockerDaemon
) -> None:
    app, replicas, prometheus, capture = rig
    await replicas.up(replicas.ports[1])
    await eventually(lambda: query(prometheus, 'count(up{job="web"} == 1) >= 2'), timeout=15)
    before = await asyncio.to_thread(docker_daemon.started_at, "floor-web")
    await post(app, notification(alert("WebErrors", fingerprint="c", container="floor-web")))
    await eventually(lambda: _restarted(docker_daemon, before), timeout=20)
    prometheus.close()  # while verification polls: the checks now have no data at all

    (request,) = await capture.wait_for(1, timeout=20)
    assert "did not recover within 3s" in request.json["reason"]
    trail = await app.store.audit_trail(1)
    (verdict,) = [a.detail for a in trail if a.kind in ("verified", "not_recovered")]
    assert (
        "unreachable" in verdict["evidence"]
        or "no data" in verdict["evidence"]
        or "error" in verdict["evidence"]
    )
    assert not any(a.kind == "verified" for a in trail)


async def _restarted(docker_daemon: DockerDaemon, before: str) -> bool:
    return await asyncio.to_thread(docker_daemon.started_at, "floor-web") != before
