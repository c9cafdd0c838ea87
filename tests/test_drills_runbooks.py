"""Drills of the runbook policies on real parts: the shipped policy in a daemon, a real Alertmanager, a real
Docker daemon.

proxy-down: the test image is busybox only, so the container named sms-proxy holds a STAND-IN for nginx: a
shell script at /bin/nginx that answers `nginx -t` with exit 1 when /etc/nginx-broken exists (and 0
otherwise), and on `nginx -s reload` starts busybox httpd on the port the policy's HTTP check reads. It is not
nginx; what is drilled is remediator's behaviour around it: a config check that fails stops the ladder before
any reload or restart and pages with the check's output, and one that passes lets the reload run and the HTTP
verification see the proxy back.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from aiohttp import web
from drill_rig import chain, policy_dir, serve, settled, shipped_rule
from helpers import REPO, TOKEN, settings_env
from realparts import Alertmanager, DockerDaemon, Postgres, Prometheus, free_port

from remediator.api_client import ApiClient
from remediator.app import App
from remediator.drill import DrillReport, run_drill
from remediator.settings import Settings

MiB = 1 << 20

STAND_IN_NGINX = """#!/bin/sh
# A stand-in for nginx in a busybox test container. It is not nginx.
case "$1" in
  -t)
    if [ -e /etc/nginx-broken ]; then
      echo 'nginx: [emerg] unknown directive "servr" in /etc/nginx/nginx.conf:3 (stand-in)' >&2
      echo 'nginx: configuration file /etc/nginx/nginx.conf test failed (stand-in)' >&2
      exit 1
    fi
    echo 'nginx: configuration file /etc/nginx/nginx.conf test is successful (stand-in)'
    exit 0 ;;
  -s)
    mkdir -p /www && echo ok > /www/index.html
    /bin/busybox httpd -p 127.0.0.1:PORT -h /www
    date > /reloaded
    exit 0 ;;
esac
exit 2
"""


def _proxy(daemon: DockerDaemon, port: int, *, broken: bool) -> None:
    """sms-proxy: a running busybox container with the stand-in nginx, its HTTP side down."""
    script = (
        f"cat > /bin/nginx <<'EOF'\n{STAND_IN_NGINX.replace('PORT', str(port))}EOF\n"
        "chmod +x /bin/nginx\n"
        + ("touch /etc/nginx-broken\n" if broken else "")
        + "exec /bin/busybox sleep 100000\n"
    )
    daemon.run_container("sms-proxy", command=["/bin/sh", "-c", script], network_mode="host")
    for _ in range(50):  # the script is in place once the shell reached its sleep
        top = daemon.client.containers.get("sms-proxy").top()
        if any("sleep" in " ".join(p) for p in top["Processes"]):
            return
        time.sleep(0.1)
    raise AssertionError("sms-proxy did not start")


def _policy_dir(tmp_path: Path, port: int) -> Path:
    """policies/proxy-down.yaml as shipped, its HTTP check pointed at the stand-in's port."""
    text = (REPO / "policies" / "proxy-down.yaml").read_text()
    assert text.count("http://127.0.0.1:8080/") == 2
    directory = tmp_path / "policies"
    directory.mkdir()
    (directory / "proxy-down.yaml").write_text(text.replace("127.0.0.1:8080", f"127.0.0.1:{port}"))
    return directory


async def _drill(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    docker_daemon: DockerDaemon,
    alertmanager_factory: Callable[..., Alertmanager],
    *,
    broken: bool,
    until: tuple[str, ...],
) -> tuple[dict[str, Any], dict[str, float]]:
    """Fire ProxyDown at the stand-in and follow the incident until its status is one of ``until``; the
    incident and the timings (detected, acted, settled) from the alert."""
    port = free_port()
    await asyncio.to_thread(_proxy, docker_daemon, port, broken=broken)
    env = settings_env(
        tmp_path,
        REMEDIATOR_POLICIES_DIR=str(_policy_dir(tmp_path, port)),
        REMEDIATOR_DOCKER__HOST=docker_daemon.host,
    )
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    app = App(Settings())
    await app.start()
    try:
        am = alertmanager_factory(f"http://127.0.0.1:{app.port}/alerts", TOKEN)
        api = ApiClient(f"http://127.0.0.1:{app.port}", TOKEN)
        labels = {"alertname": "ProxyDown", "severity": "critical", "container": "sms-proxy"}
        started = time.monotonic()
        am.fire(labels)
        timings: dict[str, float] = {}
        incident: dict[str, Any] = {}
        while time.monotonic() - started < 60:
            listed = (await asyncio.to_thread(api.get, "/api/incidents?limit=10"))["incidents"]
            if listed:
                timings.setdefault("detected", time.monotonic() - started)
                incident = await asyncio.to_thread(api.get, f"/api/incidents/{listed[0]['id']}")
                if any(s["kind"] == "act" and s["finished_at"] for s in incident["steps"]):
                    timings.setdefault("acted", time.monotonic() - started)
                if incident["status"] in until:
                    timings["settled"] = time.monotonic() - started
                    break
            await asyncio.sleep(0.25)
        if incident.get("status") == "waiting":
            am.resolve(labels)  # the proxy answers again: the probe's alert would resolve now
            while time.monotonic() - started < 90 and incident["status"] != "resolved":
                await asyncio.sleep(0.25)
                incident = await asyncio.to_thread(api.get, f"/api/incidents/{incident['id']}")
            timings["resolved"] = time.monotonic() - started
        print(incident["status"], {k: round(v, 1) for k, v in timings.items()})
        return incident, timings
    finally:
        await app.stop()


def _reloaded(daemon: DockerDaemon) -> bool:
    result = daemon.client.containers.get("sms-proxy").exec_run(["/bin/busybox", "test", "-e", "/reloaded"])
    return bool(result.exit_code == 0)


async def test_proxy_down_with_a_broken_config_stops_before_any_reload_and_pages_with_the_check_output(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    docker_daemon: DockerDaemon,
    alertmanager_factory: Callable[..., Alertmanager],
) -> None:
    incident, timings = await _drill(
        tmp_path, monkeypatch, docker_daemon, alertmanager_factory, broken=True, until=("escalated",)
    )
    started_at = docker_daemon.started_at("sms-proxy")
    assert incident["status"] == "escalated", incident
    assert [(s["kind"], s["name"], s["status"]) for s in incident["steps"]] == [
        ("diagnose", "container.logs", "ok"),
        ("diagnose", "container.check", "failed"),
    ]
    assert "must pass" in incident["reason"] and 'unknown directive "servr"' in incident["reason"], incident
    assert "acted" not in timings
    assert not _reloaded(docker_daemon)
    assert docker_daemon.started_at("sms-proxy") == started_at  # never restarted


async def test_proxy_down_with_a_good_config_reloads_and_the_http_check_sees_it_back(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    docker_daemon: DockerDaemon,
    alertmanager_factory: Callable[..., Alertmanager],
) -> None:
    incident, timings = await _drill(
        tmp_path,
        monkeypatch,
        docker_daemon,
        alertmanager_factory,
        broken=False,
        until=("waiting", "resolved", "escalated"),
    )
    assert incident["status"] == "resolved", incident
    steps = [(s["kind"], s["name"], s["status"]) for s in incident["steps"]]
    assert steps == [
        ("diagnose", "container.logs", "ok"),
        ("diagnose", "container.check", "ok"),
        ("act", "container.exec", "ok"),
    ], steps
    assert "test is successful (stand-in)" in incident["steps"][1]["detail"]
    verified = [e for e in incident["timeline"] if e["kind"] == "verified"]
    assert verified and "http: " in verified[0]["detail"]["evidence"], incident["timeline"]
    assert _reloaded(docker_daemon)
    assert 0 < timings["detected"] <= timings["acted"] <= timings["settled"] <= timings["resolved"] < 90


# ---------------------------------------------------------------------------------------------------------
# service-down: `remediator drill` stops the application container; a real Prometheus sees it down through
# the shipped ServiceDown rule. The database's health comes from a STAND-IN for postgres_exporter served by
# this test (`pg_up 1` or `pg_up 0`, job "databases"): with the database up the restart runs and the drill
# recovers; with it down the healthy floor holds the restart and the incident is escalated without acting
# (the dependency is acted on by database-down, not the symptom).


async def _service_down_drill(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    docker_daemon: DockerDaemon,
    alertmanager_factory: Callable[..., Alertmanager],
    prometheus_factory: Callable[..., Prometheus],
    *,
    pg_up: int,
) -> DrillReport:
    web_port = free_port()
    script = (
        "/bin/busybox mkdir -p /www && echo 'ok 1' > /www/metrics && "
        f"exec /bin/busybox httpd -f -p 127.0.0.1:{web_port} -h /www"
    )
    await asyncio.to_thread(
        docker_daemon.run_container, "backend", command=["/bin/sh", "-c", script], network_mode="host"
    )

    async def pg_exporter(_: web.Request) -> web.Response:
        return web.Response(text=f"pg_up {pg_up}\n")  # a STAND-IN for postgres_exporter

    exporter, pg_port = await serve(pg_exporter)

    def shorter(policy: dict[str, Any]) -> None:
        policy["healthy_floor"]["hold_s"] = 3  # 120 as shipped
        policy["drill"] = {"detect_within_s": 30, "recover_within_s": 60}

    app, settings, api, _ = await chain(
        tmp_path,
        monkeypatch,
        docker_daemon,
        alertmanager_factory,
        prometheus_factory,
        policies=policy_dir(tmp_path, "service-down", shorter),
        rules=[shipped_rule("ServiceDown")],  # for: 2m as shipped
        scrape=[
            {
                "job_name": "services",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{web_port}"], "labels": {"container": "backend"}}
                ],
            },
            {"job_name": "databases", "static_configs": [{"targets": [f"127.0.0.1:{pg_port}"]}]},
        ],
    )
    try:
        await asyncio.sleep(2.5)  # a first scrape of the healthy targets
        report = await run_drill(settings, app.policies[0], "backend", api, timeout_s=60)
        print(report.render())
        return report
    finally:
        await app.stop()
        await exporter.cleanup()


async def test_service_down_drill_restarts_the_application_when_its_database_is_up(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    docker_daemon: DockerDaemon,
    alertmanager_factory: Callable[..., Alertmanager],
    prometheus_factory: Callable[..., Prometheus],
) -> None:
    report = await _service_down_drill(
        tmp_path, monkeypatch, docker_daemon, alertmanager_factory, prometheus_factory, pg_up=1
    )
    assert report.injected == "stop_container"
    assert report.outcome == "resolved" and report.passed, report.render()
    assert report.detected_s is not None and report.acted_s is not None and report.recovered_s is not None
    assert docker_daemon.client.containers.get("backend").status == "running"


async def test_service_down_drill_never_restarts_the_application_while_its_database_is_down(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    docker_daemon: DockerDaemon,
    alertmanager_factory: Callable[..., Alertmanager],
    prometheus_factory: Callable[..., Prometheus],
) -> None:
    report = await _service_down_drill(
        tmp_path, monkeypatch, docker_daemon, alertmanager_factory, prometheus_factory, pg_up=0
    )
    assert report.outcome.startswith("escalated") and "healthy floor does not hold" in report.outcome, (
        report.render()
    )
    assert report.acted_s is None and not report.passed
    assert docker_daemon.client.containers.get("backend").status == "exited"  # left for a person


# ---------------------------------------------------------------------------------------------------------
# slow-queries: a real PostgreSQL runs a query for a minute as the application's role (and one as a superuser);
# a STAND-IN for postgres_exporter served by this test reads pg_stat_activity from that server and reports
# pg_stat_activity_max_tx_duration; a real Prometheus evaluates the shipped rule (its 300 s threshold and the
# policy's running_s cut to 2 s); the shipped policy cancels the application's query (the session stays
# connected: a cancel, not the runbook's terminate) and leaves the superuser's alone.

LONGEST_ACTIVE = (
    "SELECT coalesce(max(extract(epoch FROM now() - xact_start)), 0) FROM pg_stat_activity"
    " WHERE state = 'active' AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
)


async def test_slow_queries_drill_cancels_the_applications_long_query_and_the_incident_resolves(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    postgres: Postgres,
    alertmanager_factory: Callable[..., Alertmanager],
    prometheus_factory: Callable[..., Prometheus],
) -> None:
    admin = await asyncpg.connect(postgres.dsn)
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = 'app'"):
            await admin.execute("CREATE ROLE app LOGIN")
    finally:
        await admin.close()

    async def metrics(_: web.Request) -> web.Response:
        conn = await asyncpg.connect(postgres.dsn)
        try:
            longest = await conn.fetchval(LONGEST_ACTIVE)
        finally:
            await conn.close()
        return web.Response(
            text=f'pg_stat_activity_max_tx_duration{{datname="postgres",state="active"}} {float(longest)}\n'
        )

    exporter, exporter_port = await serve(metrics)

    policy = yaml.safe_load((REPO / "policies" / "slow-queries.yaml").read_text())
    [act] = [s for s in policy["steps"] if s.get("act") == "postgres.cancel_long_queries"]
    act["with"]["running_s"] = 2  # 300 as shipped
    directory = tmp_path / "policies"
    directory.mkdir()
    (directory / "slow-queries.yaml").write_text(yaml.safe_dump(policy))
    rules = yaml.safe_load((REPO / "deploy" / "prometheus" / "rules" / "runbooks.yml").read_text())
    [rule] = [r for g in rules["groups"] for r in g["rules"] if r["alert"] == "PostgresSlowQueries"]
    assert rule["expr"].rstrip().endswith("> 300")
    rule["expr"], rule["for"] = rule["expr"].rstrip().removesuffix("> 300") + "> 2", "0s"

    port = free_port()
    am = alertmanager_factory(f"http://127.0.0.1:{port}/alerts", TOKEN, group_by=["alertname", "db"])
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "800ms", "evaluation_interval": "1s"},
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [am.url.removeprefix("http://")]}]}]},
        "scrape_configs": [
            {
                "job_name": "databases",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{exporter_port}"], "labels": {"db": "orders-db"}}
                ],
            }
        ],
    }
    prometheus = prometheus_factory(
        yaml.safe_dump(config),
        rule_files=[("rules.yml", yaml.safe_dump({"groups": [{"name": "g", "rules": [rule]}]}))],
    )
    env = settings_env(
        tmp_path,
        REMEDIATOR_POLICIES_DIR=str(directory),
        REMEDIATOR_POSTGRES__TARGETS=json.dumps({"orders-db": {"dsn": postgres.dsn}}),
        REMEDIATOR_DOCKER__HOST="unix:///nonexistent.sock",
        REMEDIATOR_PROMETHEUS__URL=prometheus.url,
        REMEDIATOR_SERVER__PORT=str(port),
    )
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    app = App(Settings())
    await app.start()
    app_conn = await asyncpg.connect(postgres.dsn.replace("postgres@", "app@", 1))
    super_conn = await asyncpg.connect(postgres.dsn)
    try:
        started = time.monotonic()
        slow = asyncio.create_task(app_conn.fetchval("SELECT pg_sleep(60)"))
        superuser = asyncio.create_task(super_conn.fetchval("SELECT pg_sleep(8)"))
        with pytest.raises(asyncpg.exceptions.QueryCanceledError):
            await asyncio.wait_for(slow, 45)
        cancelled = time.monotonic() - started
        assert await app_conn.fetchval("SELECT 1") == 1  # cancelled, not terminated: the session stays
        assert await asyncio.wait_for(superuser, 20) is None  # a superuser's query is never touched
        api = ApiClient(f"http://127.0.0.1:{port}", TOKEN)
        incident: dict[str, Any] = {}
        while time.monotonic() - started < 60:
            [incident] = (await asyncio.to_thread(api.get, "/api/incidents?limit=10"))["incidents"]
            if incident["status"] in ("resolved", "escalated"):
                break
            await asyncio.sleep(0.25)
        incident = await asyncio.to_thread(api.get, f"/api/incidents/{incident['id']}")
        print(
            f"cancelled after {cancelled:.1f}s; {incident['status']} after {time.monotonic() - started:.1f}s"
        )
        assert incident["status"] == "resolved", incident
        steps = [(s["name"], s["status"]) for s in incident["steps"]]
        assert steps == [("postgres.activity", "ok"), ("postgres.cancel_long_queries", "ok")], steps
        assert "pg_sleep(60)" in incident["steps"][0]["detail"]  # the query's text is the evidence
    finally:
        await app_conn.close()
        await super_conn.close()
        await app.stop()
        await exporter.cleanup()


# ---------------------------------------------------------------------------------------------------------
# The whole chain for one shipped policy and its shipped rule (`for:` cut to 0s), on the session's dockerd.


# backup-stale: sira-backend holds a STAND-IN for /app/scripts/backup_db.sh (busybox: it "backs up" nothing)
# which, as the policy requires of the real script, publishes backup_last_success_timestamp_seconds on
# success; here through busybox httpd in the container, scraped by a real Prometheus. The last success starts
# two days old; the shipped rule fires, the policy runs the script once, the metric is fresh, the alert
# resolves.

STAND_IN_BACKUP = """#!/bin/sh
# A stand-in for a backup script in a busybox test container: it backs up nothing.
echo "backup_last_success_timestamp_seconds $(date +%s)" > /www/metrics
echo "backup written (stand-in)"
"""


async def test_backup_stale_drill_reruns_the_backup_script_once_and_the_alert_resolves(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    docker_daemon: DockerDaemon,
    alertmanager_factory: Callable[..., Alertmanager],
    prometheus_factory: Callable[..., Prometheus],
) -> None:
    port = free_port()
    two_days_ago = int(time.time()) - 2 * 86400
    script = (
        f"mkdir -p /app/scripts /www && cat > /app/scripts/backup_db.sh <<'EOF'\n{STAND_IN_BACKUP}EOF\n"
        "chmod +x /app/scripts/backup_db.sh\n"
        f"echo 'backup_last_success_timestamp_seconds {two_days_ago}' > /www/metrics\n"
        f"exec /bin/busybox httpd -f -p 127.0.0.1:{port} -h /www\n"
    )
    await asyncio.to_thread(
        docker_daemon.run_container, "sira-backend", command=["/bin/sh", "-c", script], network_mode="host"
    )
    targets = [
        {
            "job_name": "backups",
            "static_configs": [{"targets": [f"127.0.0.1:{port}"], "labels": {"container": "sira-backend"}}],
        }
    ]
    app, _, api, _ = await chain(
        tmp_path,
        monkeypatch,
        docker_daemon,
        alertmanager_factory,
        prometheus_factory,
        policies=policy_dir(tmp_path, "backup-stale"),
        rules=[shipped_rule("BackupTooOld")],
        scrape=targets,
    )
    try:
        incident, took = await settled(api)
        print(f"{incident.get('status')} after {took:.1f}s")
        assert incident["status"] == "resolved", incident
        [step] = incident["steps"]
        assert (step["name"], step["status"]) == ("container.exec", "ok")
        assert "backup written (stand-in)" in step["detail"]
    finally:
        await app.stop()


# container-memory-high: a STAND-IN for cAdvisor served by this test reports the `backend` container at 95% of
# its memory limit until the container is restarted (its StartedAt changes), and at 10% after: the leak a
# restart clears. A real Prometheus evaluates the shipped rule; the policy restarts the container once.


async def test_container_memory_high_drill_restarts_the_leaking_container_and_the_alert_resolves(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    docker_daemon: DockerDaemon,
    alertmanager_factory: Callable[..., Alertmanager],
    prometheus_factory: Callable[..., Prometheus],
) -> None:
    await asyncio.to_thread(docker_daemon.run_container, "backend")
    leaking_since = docker_daemon.started_at("backend")

    async def metrics(_: web.Request) -> web.Response:
        started = await asyncio.to_thread(docker_daemon.started_at, "backend")
        used = 95 if started == leaking_since else 10
        series = 'name="backend",id="/docker/backend",image="remediator-test/busybox"'
        text = (
            f"container_memory_working_set_bytes{{{series}}} {used * MiB}\n"
            f"container_spec_memory_limit_bytes{{{series}}} {100 * MiB}\n"
        )
        return web.Response(text=text)

    runner, port = await serve(metrics)
    targets = [{"job_name": "cadvisor", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}]
    app, _, api, _ = await chain(
        tmp_path,
        monkeypatch,
        docker_daemon,
        alertmanager_factory,
        prometheus_factory,
        policies=policy_dir(tmp_path, "container-memory-high"),
        rules=[shipped_rule("ContainerMemoryHigh")],
        scrape=targets,
    )
    try:
        incident, took = await settled(api)
        print(f"{incident.get('status')} after {took:.1f}s")
        assert incident["status"] == "resolved", incident
        steps = [(s["name"], s["status"]) for s in incident["steps"]]
        assert steps == [("container.logs", "ok"), ("container.restart", "ok")], steps
        assert docker_daemon.started_at("backend") != leaking_since
    finally:
        await app.stop()
        await runner.cleanup()


# ---------------------------------------------------------------------------------------------------------
# The diagnosis-only policies: the alert goes through a real Alertmanager, the evidence is gathered on a real
# PostgreSQL / Docker, and a person gets it at once; nothing acts. redis-memory-high's container holds a
# STAND-IN for redis-cli (busybox has no Redis) that prints an `INFO memory` section.

STAND_IN_REDIS_CLI = """#!/bin/sh
# A stand-in for redis-cli in a busybox test container: it is not Redis.
[ "$1 $2" = "INFO memory" ] || { echo "(stand-in) unexpected: $*" >&2; exit 1; }
printf '# Memory\\nused_memory:1932735283\\nused_memory_human:1.80G\\nmaxmemory:2147483648\\nmaxmemory_policy:noeviction\\n'
"""


async def test_corruption_and_redis_memory_page_at_once_with_the_evidence_and_act_on_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    docker_daemon: DockerDaemon,
    postgres: Postgres,
    alertmanager_factory: Callable[..., Alertmanager],
    capture_server: Any,
) -> None:
    script = (
        f"cat > /bin/redis-cli <<'EOF'\n{STAND_IN_REDIS_CLI}EOF\n"
        "chmod +x /bin/redis-cli\nexec /bin/busybox sleep 100000\n"
    )
    await asyncio.to_thread(docker_daemon.run_container, "redis", command=["/bin/sh", "-c", script])
    directory = tmp_path / "policies"
    directory.mkdir()
    for name in ("database-corruption", "redis-memory-high"):
        (directory / f"{name}.yaml").write_text((REPO / "policies" / f"{name}.yaml").read_text())
    env = settings_env(
        tmp_path,
        REMEDIATOR_POLICIES_DIR=str(directory),
        REMEDIATOR_DOCKER__HOST=docker_daemon.host,
        REMEDIATOR_POSTGRES__TARGETS=json.dumps({"orders-db": {"dsn": postgres.dsn}}),
        REMEDIATOR_ESCALATION__TARGETS=json.dumps({"oncall": {"url": f"{capture_server.url}/hook"}}),
    )
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    app = App(Settings())
    await app.start()
    try:
        am = alertmanager_factory(f"http://127.0.0.1:{app.port}/alerts", TOKEN, group_by=["alertname"])
        am.fire({"alertname": "PostgresChecksumFailure", "severity": "critical", "db": "orders-db"})
        am.fire({"alertname": "RedisMemoryHigh", "severity": "warning", "container": "redis"})
        captured = await capture_server.wait_for(2, timeout=30)
        sent = {r.json["policy"]: r.json for r in captured}
        assert set(sent) == {"database-corruption", "redis-memory-high"}
        corruption, redis = sent["database-corruption"], sent["redis-memory-high"]
        assert (corruption["priority"], corruption["status"]) == ("P1", "escalated")
        assert [s["kind"] for s in corruption["steps"]] == ["diagnose"]
        assert corruption["evidence"][0]["name"] == "postgres.activity"
        assert "client connections" in corruption["evidence"][0]["detail"], corruption["evidence"]
        assert [s["kind"] for s in redis["steps"]] == ["diagnose"] and redis["status"] == "escalated"
        assert "maxmemory_policy:noeviction" in redis["evidence"][0]["detail"], redis["evidence"]
    finally:
        await app.stop()
