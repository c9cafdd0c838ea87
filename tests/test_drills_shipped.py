"""Drills of shipped policies on real parts: the policy file from policies/ in a daemon, its rule from
deploy/prometheus/ in a real Prometheus (`for:` cut to 0s, and what else is cut says so), a real
Alertmanager, a private Docker daemon.

What is not real is named STAND-IN where it is served: busybox has no web application, no postgres_exporter,
no queue broker, no certbot, nginx or blackbox exporter, so the test serves their metrics (or a shell script
in the container plays the program) and drills remediator's behaviour around them.

- high-error-rate: its healthy floor evaluated in a real Prometheus in every state a database can be in
  (none monitored, up, down, its exporter down); a web container whose stand-in application reports 5xx until
  it is restarted: restarted and resolved while the database is up, held and paged while it is down.
- database-down: `remediator drill` stops the database container; the SHIPPED policy restarts it and its
  `pg_up` verification sees it back.
- high-queue-depth: a queue metric that stays high until the Compose service has 3 replicas; the shipped
  policy scales sms/sms-workers from 1 to 3 and the alert resolves.
- ssl-cert-renew and ssl-cert-reload: a served certificate 5 days from expiry; the certbot stand-in renews,
  then the nginx stand-in passes `nginx -t` and reloads, and the stand-in TLS probe sees the 90-day one.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from drill_rig import FAST, chain, policy_dir, serve, settled, shipped_rule
from helpers import REPO, eventually
from realparts import Alertmanager, DockerDaemon, Prometheus, free_port, require

from remediator.actions.probes import PrometheusProbe
from remediator.app import load_policies
from remediator.drill import run_drill
from remediator.settings import Settings

pytestmark = pytest.mark.realparts


def steps(incident: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(s["kind"], s["name"], s["status"]) for s in incident["steps"]]


# ---------------------------------------------------------------------------------------------------------
# high-error-rate's healthy floor, in a real Prometheus: the `databases` job comes and goes through file_sd,
# and a STAND-IN postgres_exporter answers pg_up 1, pg_up 0, or fails its scrape (the exporter is down).


async def test_the_high_error_rate_floor_holds_only_while_a_monitored_database_is_down(
    tmp_path: Path, prometheus_factory: Callable[..., Prometheus]
) -> None:
    [policy] = load_policies(Settings(policies_dir=policy_dir(tmp_path, "high-error-rate")))
    assert policy.healthy_floor is not None
    floor = policy.healthy_floor.prometheus
    state = {"answer": "pg_up 1\n", "status": 200}

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=str(state["answer"]), status=int(state["status"]))

    exporter, port = await serve(metrics)
    targets = tmp_path / "databases.json"
    targets.write_text("[]")  # a site that monitors no database
    config = {
        "global": FAST,
        "scrape_configs": [
            {
                "job_name": "databases",
                "file_sd_configs": [{"files": [str(targets)], "refresh_interval": "1s"}],
            }
        ],
    }
    prometheus = prometheus_factory(yaml.safe_dump(config))
    probe = PrometheusProbe(prometheus.url)
    seen: list[tuple[str, bool | None, str]] = []

    async def floor_is(expected: bool) -> None:
        async def check() -> bool:
            result = await probe.check(floor)
            seen.append((str(state["answer"]).strip(), result.healthy, result.detail))
            return result.healthy is expected

        await eventually(check, timeout=15, interval=0.5)

    try:
        await floor_is(True)  # no `databases` target at all: never held
        targets.write_text(json.dumps([{"targets": [f"127.0.0.1:{port}"]}]))
        await eventually(lambda: len(prometheus_query(prometheus, 'up{job="databases"} == 1')) == 1, 15, 0.5)
        await floor_is(True)  # pg_up 1
        state["answer"] = "pg_up 0\n"
        await floor_is(False)  # pg_up 0: the `or` must not turn the 0 into a 1
        state["answer"] = "pg_up 1\n"
        await floor_is(True)
        state["status"] = 500  # the exporter fails: pg_up goes stale, up is 0
        await floor_is(False)
        await asyncio.sleep(3)  # and it stays held (vector(1) never fills the gap)
        result = await probe.check(floor)
        assert result.healthy is False and "0 or NaN" in result.detail, result
    finally:
        print("\n".join(map(str, seen[-6:])))
        await exporter.cleanup()


def prometheus_query(prometheus: Prometheus, query: str) -> list[dict[str, Any]]:
    import urllib.parse
    import urllib.request

    url = f"{prometheus.url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as response:
        result: list[dict[str, Any]] = json.loads(response.read())["data"]["result"]
        return result


# ---------------------------------------------------------------------------------------------------------
# high-error-rate: the container `web` runs a STAND-IN web application (a busybox shell loop): it counts 100
# requests a second in http_requests_total, 20 of them code 500 on its first start, none once it has been
# restarted (a marker file survives the restart), served by busybox httpd. The shipped HighErrorRate rule's
# 2m rate window is cut to 5s, so that it resolves seconds after the restart rather than minutes.

STAND_IN_WEB_APP = """
mkdir -p /www
if [ -e /started-once ]; then bad=0; else bad=1; touch /started-once; fi
(n=0; e=0
 while :; do
   n=$((n + 100)); [ $bad = 1 ] && e=$((e + 20))
   printf 'http_requests_total{code="200"} %d\\nhttp_requests_total{code="500"} %d\\n' $((n - e)) $e > /www/m
   mv /www/m /www/metrics; sleep 1
 done) &
exec /bin/busybox httpd -f -p 127.0.0.1:PORT -h /www
"""


async def _high_error_rate(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    docker_daemon: DockerDaemon,
    alertmanager_factory: Callable[..., Alertmanager],
    prometheus_factory: Callable[..., Prometheus],
    *,
    pg_up: int,
) -> tuple[dict[str, Any], float, str]:
    web_port = free_port()
    script = STAND_IN_WEB_APP.replace("PORT", str(web_port))
    await asyncio.to_thread(
        docker_daemon.run_container, "web", command=["/bin/sh", "-c", script], network_mode="host"
    )
    first_start = docker_daemon.started_at("web")

    async def pg_exporter(_: web.Request) -> web.Response:  # a STAND-IN postgres_exporter
        return web.Response(text=f"pg_up {pg_up}\n")

    exporter, pg_port = await serve(pg_exporter)

    def shorter_hold(policy: dict[str, Any]) -> None:
        assert policy["healthy_floor"]["hold_s"] == 120
        policy["healthy_floor"]["hold_s"] = 3

    rule = shipped_rule("HighErrorRate")
    assert rule["expr"].count("[2m]") == 2
    rule["expr"] = rule["expr"].replace("[2m]", "[5s]")
    app, _, api, _ = await chain(
        tmp_path,
        monkeypatch,
        docker_daemon,
        alertmanager_factory,
        prometheus_factory,
        policies=policy_dir(tmp_path, "high-error-rate", shorter_hold),
        rules=[rule],
        scrape=[
            {
                "job_name": "web",
                "static_configs": [{"targets": [f"127.0.0.1:{web_port}"], "labels": {"container": "web"}}],
            },
            {"job_name": "databases", "static_configs": [{"targets": [f"127.0.0.1:{pg_port}"]}]},
        ],
    )
    try:
        incident, took = await settled(api)
        print(f"pg_up {pg_up}: {incident.get('status')} after {took:.1f}s; {incident.get('reason')}")
        return incident, took, first_start
    finally:
        await app.stop()
        await exporter.cleanup()


async def test_high_error_rate_drill_restarts_the_web_container_and_the_alert_resolves(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    docker_daemon: DockerDaemon,
    alertmanager_factory: Callable[..., Alertmanager],
    prometheus_factory: Callable[..., Prometheus],
) -> None:
    incident, _, first_start = await _high_error_rate(
        tmp_path, monkeypatch, docker_daemon, alertmanager_factory, prometheus_factory, pg_up=1
    )
    assert incident["status"] == "resolved", incident
    assert steps(incident) == [("diagnose", "container.logs", "ok"), ("act", "container.restart", "ok")]
    assert docker_daemon.started_at("web") != first_start


async def test_high_error_rate_drill_never_restarts_the_web_tier_while_its_database_is_down(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    docker_daemon: DockerDaemon,
    alertmanager_factory: Callable[..., Alertmanager],
    prometheus_factory: Callable[..., Prometheus],
) -> None:
    incident, _, first_start = await _high_error_rate(
        tmp_path, monkeypatch, docker_daemon, alertmanager_factory, prometheus_factory, pg_up=0
    )
    assert incident["status"] == "escalated", incident
    assert "healthy floor does not hold" in incident["reason"], incident["reason"]
    assert all(kind != "act" for kind, _, _ in steps(incident)), steps(incident)
    assert docker_daemon.started_at("web") == first_start  # never restarted: left for a person


# ---------------------------------------------------------------------------------------------------------
# database-down, the SHIPPED policy (tests/test_drill.py drills a policy of its own): `sms-db` is a busybox
# container whose httpd answers the STAND-IN postgres_exporter's `pg_up 1` while it runs (a database with its
# exporter beside it); `remediator drill` stops it, the shipped DatabaseDown rule fires on `up == 0`, the
# policy restarts it, and its `pg_up{job="databases"}` verification sees the database back.


async def test_database_down_drill_with_the_shipped_policy_restarts_and_verifies_with_pg_up(
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    docker_daemon: DockerDaemon,
    alertmanager_factory: Callable[..., Alertmanager],
    prometheus_factory: Callable[..., Prometheus],
) -> None:
    port = free_port()
    script = (
        "/bin/busybox mkdir -p /www && echo 'pg_up 1' > /www/metrics && "
        f"exec /bin/busybox httpd -f -p 127.0.0.1:{port} -h /www"
    )
    await asyncio.to_thread(
        docker_daemon.run_container, "sms-db", command=["/bin/sh", "-c", script], network_mode="host"
    )
    policies = policy_dir(tmp_path, "database-down")
    assert (policies / "database-down.yaml").read_bytes() == (
        REPO / "policies/database-down.yaml"
    ).read_bytes()
    app, settings, api, _ = await chain(
        tmp_path,
        monkeypatch,
        docker_daemon,
        alertmanager_factory,
        prometheus_factory,
        policies=policies,
        rules=[shipped_rule("DatabaseDown")],
        scrape=[
            {
                "job_name": "databases",
                "static_configs": [{"targets": [f"127.0.0.1:{port}"], "labels": {"container": "sms-db"}}],
            }
        ],
    )
    try:
        await asyncio.sleep(2.5)  # a first scrape of the healthy database
        report = await run_drill(settings, app.policies[0], "sms-db", api, timeout_s=60)
        print(report.render())
        incident = await asyncio.to_thread(api.get, f"/api/incidents/{report.incident_id}")
    finally:
        await app.stop()
    assert report.injected == "stop_container"
    assert report.outcome == "resolved" and report.passed, report.render()
    assert report.detected_s is not None and report.acted_s is not None and report.recovered_s is not None
    assert steps(incident) == [("diagnose", "container.logs", "ok"), ("act", "container.restart", "ok")]
    # The shipped verification asked the real Prometheus for pg_up (no sample while the database was down);
    # recovery counts on whichever comes first, every sample 1 or Alertmanager's "resolved".
    assert "check does not hold yet: prometheus: the query returned no samples" in caplog.text
    [verified] = [e for e in incident["timeline"] if e["kind"] == "verified"]
    evidence = verified["detail"]["evidence"]
    assert evidence == "alert resolved" or "all non-zero" in evidence, evidence
    assert docker_daemon.client.containers.get("sms-db").status == "running"


# ---------------------------------------------------------------------------------------------------------
# high-queue-depth: the Compose project `sms` (the shipped policy's project) made by docker-compose on the
# private dockerd, its service sms-workers at 1 replica. A STAND-IN queue exporter served by the test reports
# queue_depth{service="sms-workers",queue="sms"} as 3000 minus 1000 per running replica: the backlog the
# workers cannot keep up with until there are 3 of them. The shipped rule (`for` 0s) fires, the shipped policy
# adds two replicas, the depth falls to 0 and the alert resolves.

QUEUE_COMPOSE = """
version: "2.4"
services:
  sms-workers:
    image: {image}
    command: ["/bin/busybox", "sleep", "100000"]
    init: true
    network_mode: none
"""


def _workers(docker_daemon: DockerDaemon, *, running: bool = True) -> list[Any]:
    labels = ["com.docker.compose.project=sms", "com.docker.compose.service=sms-workers"]
    return list(docker_daemon.client.containers.list(all=not running, filters={"label": labels}))


@pytest.fixture
def sms_project(docker_daemon: DockerDaemon, tmp_path: Path) -> Iterator[None]:
    directory = tmp_path / "compose"
    directory.mkdir()
    (directory / "docker-compose.yml").write_text(QUEUE_COMPOSE.format(image=docker_daemon.image))
    for leftover in _workers(docker_daemon, running=False):
        leftover.remove(force=True)
    env = {**os.environ, "DOCKER_HOST": docker_daemon.host, "COMPOSE_INTERACTIVE_NO_CLI": "1"}
    done = subprocess.run(
        [require("docker-compose"), "-p", "sms", "up", "-d", "sms-workers"],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    try:
        yield
    finally:
        for container in _workers(docker_daemon, running=False):
            container.remove(force=True)


async def test_high_queue_depth_drill_scales_the_workers_and_the_queue_drains(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    docker_daemon: DockerDaemon,
    alertmanager_factory: Callable[..., Alertmanager],
    prometheus_factory: Callable[..., Prometheus],
    sms_project: None,
) -> None:
    assert len(_workers(docker_daemon)) == 1

    async def queue_exporter(_: web.Request) -> web.Response:  # a STAND-IN for the broker's exporter
        replicas = len(await asyncio.to_thread(_workers, docker_daemon))
        depth = max(0, 3000 - 1000 * replicas)
        return web.Response(text=f'queue_depth{{service="sms-workers",queue="sms"}} {depth}\n')

    exporter, port = await serve(queue_exporter)
    policies = policy_dir(tmp_path, "high-queue-depth")
    app, _, api, _ = await chain(
        tmp_path,
        monkeypatch,
        docker_daemon,
        alertmanager_factory,
        prometheus_factory,
        policies=policies,
        rules=[shipped_rule("HighQueueDepth")],
        scrape=[{"job_name": "workers", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}],
    )
    try:
        incident, took = await settled(api)
        print(f"{incident.get('status')} after {took:.1f}s")
    finally:
        await app.stop()
        await exporter.cleanup()
    assert incident["status"] == "resolved", incident
    assert steps(incident) == [("diagnose", "compose.status", "ok"), ("act", "compose.scale", "ok")]
    assert incident["steps"][1]["detail"].startswith("scaled sms/sms-workers from 1 to 3 replicas")
    assert len(_workers(docker_daemon)) == 3


# ---------------------------------------------------------------------------------------------------------
# ssl-cert-renew, then ssl-cert-reload: the two shipped policies on their two shipped rules (SSLCertExpiringSoon
# `for` 0s, SSLCertServedStale's 30 minutes more cut to 5 s: the order of the two is kept). The certificates are
# real (openssl: one that expires in 5 days, the "renewed" one in 90); the programs are STAND-INS (busybox has
# neither certbot nor nginx, and no TLS server):
#   certbot     a container sharing the volume /etc/letsencrypt; /bin/certbot is a script: `certbot renew`
#               copies the renewed certificate it holds (the ACME answer it stands in for) into
#               live/site/fullchain.pem; `certbot certificates` lists the file.
#   sms-proxy   a container sharing that volume; /bin/nginx is a script: `nginx -t` passes when the certificate
#               is readable, `nginx -s reload` copies it to /srv/served.pem, which is what it "serves" (busybox
#               httpd publishes /srv over HTTP so that the stand-in prober can read it).
#   blackbox    a stand-in exporter served by this test: it fetches the served certificate and reports its
#               notAfter (read by openssl) as probe_ssl_earliest_cert_expiry, under job blackbox-tls.

STAND_IN_CERTBOT = """#!/bin/sh
# A stand-in for certbot in a busybox test container. It is not certbot and talks to no ACME server.
live=/etc/letsencrypt/live/site/fullchain.pem
case "$1" in
  certificates)
    echo "Certificate Name: site (stand-in)"
    echo "    Certificate Path: $live"
    ls -l "$live" ;;
  renew)
    cp /acme/renewed.pem "$live" && date > /renewed
    echo "Congratulations, all renewals succeeded: $live (success) (stand-in)" ;;
  *) echo "(stand-in) unexpected: $*" >&2; exit 2 ;;
esac
"""

STAND_IN_TLS_NGINX = """#!/bin/sh
# A stand-in for nginx in a busybox test container. It is not nginx and serves no TLS.
case "$1" in
  -t) test -r /etc/letsencrypt/live/site/fullchain.pem || exit 1
      echo 'nginx: configuration file /etc/nginx/nginx.conf test is successful (stand-in)' ;;
  -s) cp /etc/letsencrypt/live/site/fullchain.pem /srv/served.pem && date > /reloaded ;;
  *) exit 2 ;;
esac
"""


def _certificate(directory: Path, name: str, days: int) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            *(
                require("openssl"),
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ),
            *("-nodes", "-days", str(days), "-subj", "/CN=sms.example.com"),
            *("-keyout", f"{name}.key", "-out", f"{name}.pem"),
        ],
        cwd=directory,
        check=True,
        capture_output=True,
        timeout=30,
    )
    return (directory / f"{name}.pem").read_text()


def _not_after(pem: bytes, directory: Path) -> float:
    import ssl

    path = directory / "served.pem"
    path.write_bytes(pem)
    done = subprocess.run(
        [require("openssl"), "x509", "-noout", "-enddate", "-in", str(path)],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return float(ssl.cert_time_to_seconds(done.stdout.strip().removeprefix("notAfter=")))


def _started(docker_daemon: DockerDaemon, name: str, script: str, **kwargs: Any) -> None:
    docker_daemon.run_container(name, command=["/bin/sh", "-c", script], **kwargs)
    for _ in range(100):  # the files are in place once the shell reached its last command
        top = docker_daemon.client.containers.get(name).top()
        if any("sleep" in " ".join(p) or "httpd" in " ".join(p) for p in top["Processes"]):
            return
        time.sleep(0.1)
    raise AssertionError(f"{name} did not start")


def _file(docker_daemon: DockerDaemon, container: str, path: str) -> bytes:
    result = docker_daemon.client.containers.get(container).exec_run(["/bin/busybox", "cat", path])
    assert result.exit_code == 0, result.output
    return bytes(result.output)


async def test_ssl_drill_certbot_renews_then_nginx_reloads_and_the_probe_sees_the_new_certificate(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    docker_daemon: DockerDaemon,
    alertmanager_factory: Callable[..., Alertmanager],
    prometheus_factory: Callable[..., Prometheus],
) -> None:
    old = await asyncio.to_thread(_certificate, tmp_path / "certs", "old", 5)
    renewed = await asyncio.to_thread(_certificate, tmp_path / "certs", "renewed", 90)
    volume = docker_daemon.client.volumes.create("remediator-test-letsencrypt")
    shared = {volume.name: {"bind": "/etc/letsencrypt", "mode": "rw"}}
    served_port = free_port()
    certbot = (
        "mkdir -p /etc/letsencrypt/live/site /acme\n"
        f"cat > /etc/letsencrypt/live/site/fullchain.pem <<'EOF'\n{old}EOF\n"
        f"cat > /acme/renewed.pem <<'EOF'\n{renewed}EOF\n"
        f"cat > /bin/certbot <<'EOF'\n{STAND_IN_CERTBOT}EOF\n"
        "chmod +x /bin/certbot\nexec /bin/busybox sleep 100000\n"
    )
    proxy = (
        "mkdir -p /srv && cp /etc/letsencrypt/live/site/fullchain.pem /srv/served.pem\n"
        f"cat > /bin/nginx <<'EOF'\n{STAND_IN_TLS_NGINX}EOF\n"
        f"chmod +x /bin/nginx\nexec /bin/busybox httpd -f -p 127.0.0.1:{served_port} -h /srv\n"
    )
    try:
        await asyncio.to_thread(_started, docker_daemon, "certbot", certbot, volumes=shared)
        await asyncio.to_thread(
            _started, docker_daemon, "sms-proxy", proxy, volumes=shared, network_mode="host"
        )
        await _ssl_chain(
            tmp_path, monkeypatch, docker_daemon, alertmanager_factory, prometheus_factory, served_port
        )
        assert _file(docker_daemon, "sms-proxy", "/srv/served.pem").decode() == renewed
    finally:
        for name in ("certbot", "sms-proxy"):
            docker_daemon.client.containers.get(name).remove(force=True)
        volume.remove(force=True)


async def _ssl_chain(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    docker_daemon: DockerDaemon,
    alertmanager_factory: Callable[..., Alertmanager],
    prometheus_factory: Callable[..., Prometheus],
    served_port: int,
) -> None:
    import aiohttp

    scratch = tmp_path / "probe"
    scratch.mkdir()

    async def blackbox(_: web.Request) -> web.Response:  # a STAND-IN for blackbox_exporter's TLS probe
        async with (
            aiohttp.ClientSession(trust_env=False) as http,
            http.get(f"http://127.0.0.1:{served_port}/served.pem") as response,
        ):
            pem = await response.read()
        expiry = await asyncio.to_thread(_not_after, pem, scratch)
        return web.Response(text=f"probe_success 1\nprobe_ssl_earliest_cert_expiry {expiry:.0f}\n")

    exporter, port = await serve(blackbox)
    expiring, stale = shipped_rule("SSLCertExpiringSoon"), shipped_rule("SSLCertServedStale")
    stale["for"] = "5s"  # 45m as shipped: 30 minutes after SSLCertExpiringSoon's 15
    policies = policy_dir(tmp_path, "ssl-cert-renew")
    policy_dir(tmp_path, "ssl-cert-reload")
    app, _, api, _ = await chain(
        tmp_path,
        monkeypatch,
        docker_daemon,
        alertmanager_factory,
        prometheus_factory,
        policies=policies,
        rules=[expiring, stale],
        scrape=[
            {
                "job_name": "blackbox-tls",
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{port}"],
                        "labels": {"container": "sms-proxy", "certbot": "certbot"},
                    }
                ],
            }
        ],
    )
    try:
        started = time.monotonic()
        incidents: dict[str, dict[str, Any]] = {}
        while time.monotonic() - started < 60:
            listed = (await asyncio.to_thread(api.get, "/api/incidents?limit=10"))["incidents"]
            incidents = {}
            for row in listed:
                incident = await asyncio.to_thread(api.get, f"/api/incidents/{row['id']}")
                incidents[incident["policy"]] = incident
            if len(incidents) == 2 and all(
                i["status"] in ("resolved", "escalated") for i in incidents.values()
            ):
                break
            await asyncio.sleep(0.5)
        print({name: (i["status"], steps(i)) for name, i in incidents.items()}, time.monotonic() - started)
    finally:
        await app.stop()
        await exporter.cleanup()
    renew, reload = incidents["ssl-cert-renew"], incidents["ssl-cert-reload"]
    assert (renew["target"], renew["status"]) == ("certbot", "resolved"), renew
    assert steps(renew) == [("diagnose", "container.check", "ok"), ("act", "container.exec", "ok")]
    assert "Certificate Path: /etc/letsencrypt/live/site/fullchain.pem" in renew["steps"][0]["detail"]
    assert "all renewals succeeded" in renew["steps"][1]["detail"]
    assert (reload["target"], reload["status"]) == ("sms-proxy", "resolved"), reload
    assert steps(reload) == [
        ("diagnose", "container.logs", "ok"),
        ("diagnose", "container.check", "ok"),
        ("act", "container.exec", "ok"),
    ]
    assert "test is successful (stand-in)" in reload["steps"][1]["detail"]
    [verified] = [e for e in reload["timeline"] if e["kind"] == "verified"]
    assert verified["detail"]["evidence"] == "alert resolved", verified  # the probe of this site rose
    # Renew first, reload after: the order the two rules' `for` gives.
    assert renew["steps"][1]["finished_at"] < reload["steps"][2]["started_at"]
