"""Proof that the test infrastructure itself works: each real part starts, answers and stops.

When one of these fails, the failures elsewhere are about the machine, not about remediator.
"""

from __future__ import annotations

import asyncpg
import docker
import docker.errors
import pytest
from realparts import AlertmanagerFactory, CaptureServer, DockerDaemon, Postgres, PrometheusFactory

pytestmark = pytest.mark.realparts


def test_restart_changes_started_at(docker_daemon: DockerDaemon) -> None:
    container = docker_daemon.run_container("realparts-restart", labels={"remediator.test": "yes"})
    try:
        before = docker_daemon.started_at("realparts-restart")
        container.restart(timeout=5)
        container.reload()
        assert container.status == "running"
        assert container.labels["remediator.test"] == "yes"
        assert docker_daemon.started_at("realparts-restart") != before
    finally:
        container.remove(force=True)


def test_daemon_stops_and_starts_with_its_containers(docker_daemon: DockerDaemon) -> None:
    docker_daemon.run_container("realparts-survivor")
    docker_daemon.stop_daemon()
    try:
        assert not docker_daemon.ping()
        with pytest.raises(docker.errors.DockerException):
            docker.DockerClient(base_url=docker_daemon.host, timeout=2)
    finally:
        docker_daemon.start_daemon()
    survivor = docker_daemon.client.containers.get("realparts-survivor")
    # Without a restart policy dockerd stops containers on shutdown and does not start them again.
    assert survivor.status == "exited"
    survivor.start()
    survivor.reload()
    assert survivor.status == "running"
    survivor.remove(force=True)


async def test_postgres_answers(postgres: Postgres) -> None:
    conn = await asyncpg.connect(postgres.dsn, timeout=10)
    try:
        assert await conn.fetchval("select 1") == 1
    finally:
        await conn.close()


async def test_alertmanager_posts_firing_then_resolved(
    alertmanager_factory: AlertmanagerFactory, capture_server: CaptureServer
) -> None:
    am = alertmanager_factory(f"{capture_server.url}/alerts", "s3cret-token")
    labels = {"alertname": "RealpartsProbe", "container": "web", "severity": "warning"}
    am.fire(labels, {"summary": "probe"})

    [firing] = await capture_server.wait_for(1)
    assert (firing.method, firing.path) == ("POST", "/alerts")
    assert firing.headers["Authorization"] == "Bearer s3cret-token"
    assert firing.json["version"] == "4"
    assert firing.json["status"] == "firing"
    assert [a["labels"] for a in firing.json["alerts"]] == [labels]

    am.resolve(labels)
    resolved = (await capture_server.wait_for(2))[1]
    assert resolved.json["status"] == "resolved"
    assert resolved.json["alerts"][0]["status"] == "resolved"
    assert resolved.json["groupKey"] == firing.json["groupKey"]


async def test_alertmanager_retries_after_failures(
    alertmanager_factory: AlertmanagerFactory, capture_server: CaptureServer
) -> None:
    capture_server.fail_first(1, status=503)
    am = alertmanager_factory(f"{capture_server.url}/alerts", "t")
    am.fire({"alertname": "RealpartsRetry", "container": "web"})
    first, second = await capture_server.wait_for(2)
    assert (first.status, second.status) == (503, 200)
    assert first.json == second.json


async def test_prometheus_starts(prometheus_factory: PrometheusFactory) -> None:
    rules = "groups:\n  - name: probe\n    rules:\n      - alert: Always\n        expr: vector(1)\n"
    prom = prometheus_factory("global: {evaluation_interval: 1s}\n", rule_files=[("probe.yml", rules)])
    assert prom.url.startswith("http://127.0.0.1:")
