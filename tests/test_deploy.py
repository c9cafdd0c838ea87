"""What ships in deploy/ and the Dockerfile, checked with the real tools that will read it.

- Prometheus: `promtool check config` and `check rules`, and the rules' own unit tests (`promtool test rules`);
  the alerts those tests expect are then run through the shipped policies, so a label the rules forget or a
  severity the policies refuse fails here, not in production.
- Alertmanager: `amtool check-config`, and `amtool config routes test` for who gets which alert.
- remediator's /metrics after real work (a restart on the private Docker daemon, an unmatched alert, a refused
  target, a bad request) passes `promtool check metrics`, and every metric the Grafana dashboard queries is one
  it exposes; the dashboard's queries parse as PromQL (`promtool check rules` on them as recording rules).
- The socket proxy's allow list (compose.yaml) is enforced by a proxy in front of the private Docker daemon
  while remediator restarts a container through it: what remediator needs gets through, nothing else.
- The compose and Swarm files pass `docker-compose config` and `docker stack config`; the Dockerfile has the
  shape the README promises, and its HEALTHCHECK command really probes a running daemon.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from helpers import REPO, TOKEN, alert, notification
from realparts import LOOPBACK, DockerDaemon, Prometheus, free_port, require

from remediator.app import App, load_policies
from remediator.policy.matching import match_alert
from remediator.settings import Settings

DEPLOY = REPO / "deploy"
RULES = DEPLOY / "prometheus" / "rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "rules.test.yml"
ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "remediator.json"
COMPOSE = DEPLOY / "compose.yaml"
SWARM = DEPLOY / "swarm-stack.yaml"

# The alerts remediator has policies for, and the shipped policy that must take each of them.
REMEDIATED = {
    "DatabaseDown": "database-down",
    "HighErrorRate": "high-error-rate",
    "HighQueueDepth": "high-queue-depth",
}


def shipped_alertnames() -> dict[str, str]:
    """Every alertname a shipped policy pins (``alertname = X``), with its policy file's name."""
    found: dict[str, str] = {}
    for path in sorted((REPO / "policies").glob("*.yaml")):
        for matcher in load_yaml(path)["match"]:
            label, _, value = (part.strip() for part in str(matcher).partition("="))
            if label == "alertname" and not value.startswith("~"):
                found[value.strip("\"'")] = path.stem
    return found


def run(argv: list[str], *, stdin: str | None = None, env: dict[str, str] | None = None) -> str:
    """Run a tool; fail the test with its output when it exits non-zero. Returns its standard output."""
    done = subprocess.run(
        argv,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )
    if done.returncode != 0:
        pytest.fail(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}{done.stderr}", pytrace=False)
    return done.stdout


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


# ---------------------------------------------------------------------------------------------------------
# Prometheus


def test_prometheus_configs_and_rules_pass_promtool() -> None:
    promtool = require("promtool")
    assert "SUCCESS: 9 rules found" in run([promtool, "check", "rules", str(RULES)])
    for config in ("prometheus.yml", "prometheus-swarm.yml"):
        run([promtool, "check", "config", str(DEPLOY / "prometheus" / config)])
    assert "SUCCESS" in run([promtool, "test", "rules", str(RULE_TESTS)])


def test_rules_about_remediator_watch_label_values_it_emits() -> None:
    """A rule on a result no code emits never fires (RemediatorEscalationFailing watched "failed", which
    remediator never counted): every value the rules match must be one the metric's help promises."""
    from remediator.metrics import Metrics

    helps = {m.name: m.documentation for m in Metrics().registry.collect()}
    for expr in (r["expr"] for g in load_yaml(RULES)["groups"] for r in g["rules"]):
        for metric, value in re.findall(r'(remediator_\w+?)(?:_total)?\{[^}]*result="(\w+)"', expr):
            assert value in helps[metric], (expr, value, helps[metric])


def test_rules_fire_the_alerts_remediator_acts_on_with_the_labels_its_policies_need() -> None:
    rules = {r["alert"]: r for g in load_yaml(RULES)["groups"] for r in g["rules"] if "alert" in r}
    assert set(REMEDIATED) <= set(rules)
    expected: dict[str, list[dict[str, str]]] = {}
    for case in load_yaml(RULE_TESTS)["tests"]:
        for check in case.get("alert_rule_test", []):
            for exp in check["exp_alerts"]:
                expected.setdefault(check["alertname"], []).append(exp["exp_labels"])
    assert set(REMEDIATED) <= set(expected), "every remediated alert needs a firing case in rules.test.yml"

    policies = load_policies(Settings(policies_dir=REPO / "policies"))
    for alertname, policy_name in REMEDIATED.items():
        for labels in expected[alertname]:
            match = match_alert(policies, labels)
            assert match is not None, f"no shipped policy takes {labels}"
            assert match.policy.name == policy_name
            assert not match.refused, match.refused
            assert match.target == labels[match.policy.target.from_label]


# ---------------------------------------------------------------------------------------------------------
# Alertmanager


def test_alertmanager_config_routes_the_remediated_alerts_to_remediator_with_the_token() -> None:
    amtool = require("amtool")
    run([amtool, "check-config", str(ALERTMANAGER)])

    def receiver(*labels: str) -> str:
        return run([amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels]).strip()

    shipped = shipped_alertnames()
    assert set(REMEDIATED) <= set(shipped) and len(shipped) >= 12
    # Every alert a shipped policy takes goes to remediator (one routed there without a policy would only be
    # recorded: nobody paged), and the swarm stack mounts every shipped policy.
    for alertname in shipped:
        assert receiver(f"alertname={alertname}", "container=sms-db", "severity=critical") == "remediator"
    mounted = {c["target"].rsplit("/", 1)[-1] for c in load_yaml(SWARM)["services"]["remediator"]["configs"]}
    assert mounted == {f"{name}.yaml" for name in set(shipped.values())} | {
        p.name for p in (REPO / "policies").glob("*.yaml")
    }
    for alertname in (
        "RemediatorDown",
        "RemediatorEscalationFailing",
        "RemediatorEscalationStuck",
        "SomethingElse",
    ):
        assert receiver(f"alertname={alertname}", "severity=page") == "people"

    config = load_yaml(ALERTMANAGER)
    (hook,) = next(r for r in config["receivers"] if r["name"] == "remediator")["webhook_configs"]
    assert hook["url"] == "http://remediator:9095/alerts"
    assert hook["send_resolved"] is True
    auth = hook["http_config"]["authorization"]
    # The token file is the secret both stacks give Alertmanager under its default path.
    assert auth["credentials_file"] == "/run/secrets/remediator_token"
    for stack in (COMPOSE, SWARM):
        assert "remediator_token" in load_yaml(stack)["services"]["alertmanager"]["secrets"]


# ---------------------------------------------------------------------------------------------------------
# A daemon doing real work behind the socket proxy's allow list; its /metrics feeds the checks below.


Allow = dict[str, list[str]]  # HTTP method -> anchored Go regexps, as socket-proxy's -allowGET=... flags


def allowlist(args: list[str]) -> Allow:
    allow: Allow = {}
    for arg in args:
        found = re.fullmatch(r"-allow([A-Z]+)=(.*)", arg)
        if found:
            allow.setdefault(found.group(1), []).append(found.group(2))
    return allow


def proxy_allowlist(stack: Path) -> Allow:
    """The docker-proxy service's allow list."""
    return allowlist(load_yaml(stack)["services"]["docker-proxy"]["command"])


def scaling_allowlist() -> Allow:
    """The docker-proxy allow list with compose.yaml's documented compose.scale extension appended."""
    compose = load_yaml(COMPOSE)
    return allowlist(compose["services"]["docker-proxy"]["command"] + compose["x-allow-compose-scale"])


def swarm_allowlist() -> Allow:
    """The Swarm stack's docker-proxy allow list with its documented swarm actions extension appended."""
    swarm = load_yaml(SWARM)
    return allowlist(swarm["services"]["docker-proxy"]["command"] + swarm["x-allow-swarm-actions"])


def allowed(allow: Allow, method: str, path: str) -> bool:
    # socket-proxy anchors each pattern (^...$) and matches the URL path, without the query string.
    return any(re.fullmatch(pattern, path) for pattern in allow.get(method, []))


@dataclasses.dataclass
class Run:
    metrics: str
    calls: list[tuple[str, str, int]]  # (method, path, status) the proxy saw during the restart
    steps: list[tuple[str, str]]
    healthcheck_up: subprocess.CompletedProcess[str]
    healthcheck_down: subprocess.CompletedProcess[str]
    scale_refused: str  # compose.scale behind the default allow list: the error
    scale_calls: list[tuple[str, str, int]]  # ... and behind the extended one: what the proxy saw
    scale_results: list[str]
    # Every dashboard query as a real Prometheus answered it, scraping the daemon as two replicas would
    # (two jobs on the one process: the shared store's gauges then arrive twice, as with two replicas).
    dashboard_answers: dict[str, dict[str, Any]]
    open_incidents: float


async def _allowlist_proxy(socket_path: Path, allow: Allow, calls: list[tuple[str, str, int]]) -> Any:
    """An aiohttp server on loopback forwarding allowed Docker API calls to the daemon's unix socket and
    answering 403 to the rest, as socket-proxy does."""
    session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(socket_path)))

    async def forward(request: web.Request) -> web.Response:
        if not allowed(allow, request.method, request.path):
            calls.append((request.method, request.path, 403))
            return web.Response(status=403, text="forbidden by the allow list")
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "accept")}
        async with session.request(
            request.method, f"http://docker{request.path_qs}", data=body or None, headers=headers
        ) as upstream:
            data = await upstream.read()
            calls.append((request.method, request.path, upstream.status))
            keep = ("content-type", "api-version", "ostype", "docker-experimental", "server")
            out = {k: v for k, v in upstream.headers.items() if k.lower() in keep}
            return web.Response(status=upstream.status, body=data, headers=out)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, session, port


def _healthcheck_argv() -> list[str]:
    """The command of the Dockerfile's HEALTHCHECK (exec form)."""
    (healthcheck,) = [i for i in dockerfile_instructions() if i[0] == "HEALTHCHECK"]
    argv: list[str] = json.loads(healthcheck[1].split("CMD", 1)[1].strip())
    return argv


async def _scenario(docker_daemon: DockerDaemon, state: Path) -> Run:
    calls: list[tuple[str, str, int]] = []
    allow = proxy_allowlist(COMPOSE)
    runner, session, proxy_port = await _allowlist_proxy(docker_daemon.socket_path, allow, calls)
    settings = Settings(
        policies_dir=REPO / "policies",
        state_dir=state,
        server={"port": 0, "token": TOKEN},
        docker={"host": f"tcp://{LOOPBACK}:{proxy_port}", "timeout_s": 30},
        # database-down verifies with a Prometheus query: nothing answers here, so it never counts as
        # recovered by the probe, and the "resolved" the scenario sends closes the incident.
        prometheus={"url": f"http://{LOOPBACK}:{free_port()}"},
    )
    app = App(settings)
    await app.start()
    try:
        url = f"http://{LOOPBACK}:{app.port}"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession() as http:

            async def post(body: Any, status: int = 200) -> None:
                async with http.post(f"{url}/alerts", json=body, headers=auth) as r:
                    assert r.status == status, await r.text()

            down = alert("DatabaseDown", fingerprint="deploy-db", container="sms-db")
            await post(notification(down))
            assert app.intake is not None
            await app.intake.join()
            steps: list[tuple[str, str]] = []
            for _ in range(300):
                incidents = await app.store.list_incidents("active")
                if incidents:
                    steps = [(s.name, s.status) for s in await app.store.steps(incidents[0].id)]
                if ("container.restart", "ok") in steps or any(s == "failed" for _, s in steps):
                    break
                await asyncio.sleep(0.05)
            await post(notification({**down, "status": "resolved"}))
            await post(notification(alert("NobodyCares", fingerprint="deploy-unmatched")))
            await post(
                notification(alert("DatabaseDown", fingerprint="deploy-bad", container="db; rm -rf /"))
            )
            await post({"version": "4", "alerts": []}, status=400)
            await app.intake.join()
            async with http.get(f"{url}/metrics") as r:
                metrics = await r.text()
            answers = await _dashboard_answers(http, app.port)

        command = _healthcheck_argv()
        assert command[0] == "remediator"

        def healthcheck(port: int) -> subprocess.CompletedProcess[str]:
            # The settings serve reads, as the image's ENV gives them (a wildcard is probed on the loopback).
            env = {**os.environ, "REMEDIATOR_SERVER__HOST": "0.0.0.0", "REMEDIATOR_SERVER__PORT": str(port)}
            return subprocess.run(
                [sys.executable, "-m", "remediator", *command[1:]],
                env=env,
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            )

        up = await asyncio.to_thread(healthcheck, app.port)

        # compose.scale: refused by the default allow list; through it with the documented extension.
        labels = {
            "com.docker.compose.project": "deploytest",
            "com.docker.compose.service": "web",
            "com.docker.compose.container-number": "1",
        }
        await asyncio.to_thread(docker_daemon.run_container, "deploytest_web_1", labels=labels)
        scale = app.actions["compose.scale"]
        grow = scale.params_model.model_validate({"project": "deploytest", "by": 1, "max": 3})
        shrink = scale.params_model.model_validate({"project": "deploytest", "by": -1, "max": 3})
        restart_calls = list(calls)
        try:
            await scale.run("web", grow)
            refused = ""
        except Exception as exc:
            refused = f"{type(exc).__name__}: {exc}"
        allow.clear()
        allow.update(scaling_allowlist())
        calls.clear()
        scaled = [await scale.run("web", grow), await scale.run("web", shrink)]
        scale_calls = list(calls)
    finally:
        await app.stop()
        await session.close()
        await runner.cleanup()
    down_check = await asyncio.to_thread(healthcheck, app.port)
    open_now = app.metrics.registry.get_sample_value("remediator_incidents_open") or 0.0
    return Run(metrics, restart_calls, steps, up, down_check, refused, scale_calls, scaled, answers, open_now)


# The dashboard's variables and Grafana's intervals, as Grafana fills them in ("All" is .*).
DASHBOARD_VALUES = {
    "$instance": ".*",
    "$policy": ".*",
    "$host": ".*",
    "$__rate_interval": "30s",
    "$__range": "1m",
}


def dashboard_expr(expr: str) -> str:
    for name, value in DASHBOARD_VALUES.items():
        expr = expr.replace(name, value)
    return expr


async def _dashboard_answers(http: aiohttp.ClientSession, port: int) -> dict[str, dict[str, Any]]:
    """Each dashboard query's answer from a Prometheus that scraped the daemon a few times, every second."""
    config = "global: {scrape_interval: 1s, evaluation_interval: 1s}\nscrape_configs:\n" + "".join(
        f"  - job_name: remediator-{replica}\n"
        f"    static_configs: [{{targets: ['{LOOPBACK}:{port}'], labels: {{instance: 'replica-{replica}'}}}}]\n"
        for replica in ("a", "b")
    )
    prometheus = await asyncio.to_thread(Prometheus, config)
    try:

        async def query(expr: str) -> dict[str, Any]:
            async with http.get(f"{prometheus.url}/api/v1/query", params={"query": expr}) as r:
                answer: dict[str, Any] = await r.json()
                return answer

        # Until each replica was scraped at least three times, so that rate() has samples.
        for _ in range(200):
            found = (await query("min(count_over_time(remediator_build_info[1m]))"))["data"]["result"]
            if found and float(found[0]["value"][1]) >= 3:
                break
            await asyncio.sleep(0.1)
        return {expr: await query(dashboard_expr(expr)) for _, expr in dashboard_targets()}
    finally:
        await asyncio.to_thread(prometheus.close)


@pytest.fixture(scope="module")
def daemon_run(docker_daemon: DockerDaemon) -> Iterator[Run]:
    docker_daemon.run_container("sms-db")
    state = Path(tempfile.mkdtemp(prefix="remediator-deploy-"))
    try:
        yield asyncio.run(_scenario(docker_daemon, state))
    finally:
        shutil.rmtree(state, ignore_errors=True)


@pytest.mark.realparts
def test_remediator_restarts_through_the_socket_proxy_allowlist_and_needs_nothing_more(
    daemon_run: Run,
) -> None:
    assert daemon_run.steps == [("container.logs", "ok"), ("container.restart", "ok")]
    denied = [c for c in daemon_run.calls if c[2] == 403]
    assert denied == [], f"the shipped allow list refused calls remediator makes: {denied}"
    # The SDK inspects by name, then acts on the container's id.
    assert any(m == "POST" and p.endswith("/restart") for m, p, _ in daemon_run.calls), daemon_run.calls

    allow = proxy_allowlist(COMPOSE)
    assert proxy_allowlist(SWARM) == allow
    assert set(allow) == {"GET", "POST"}
    assert allowed(allow, "GET", "/version")
    for method, path in [
        ("POST", "/v1.41/containers/create"),
        ("POST", "/v1.41/containers/sms-db/exec"),
        ("POST", "/v1.41/exec/abc/start"),
        ("POST", "/v1.41/containers/sms-db/stop"),
        ("POST", "/v1.41/containers/sms-db/kill"),
        ("DELETE", "/v1.41/containers/sms-db"),
        ("PUT", "/v1.41/containers/sms-db/archive"),
        ("GET", "/v1.41/containers/sms-db/archive"),
        ("GET", "/v1.41/containers/sms-db/export"),
        ("POST", "/v1.41/images/create"),
        ("GET", "/v1.41/secrets"),
        ("GET", "/v1.41/containers/../secrets/json"),
        ("POST", "/v1.41/containers/a/../../swarm/leave/restart"),
    ]:
        assert not allowed(allow, method, path), (method, path)


@pytest.mark.realparts
def test_compose_scale_needs_the_documented_extension_of_the_allowlist_and_works_with_it(
    daemon_run: Run,
) -> None:
    assert "403" in daemon_run.scale_refused, daemon_run.scale_refused
    assert [c for c in daemon_run.scale_calls if c[2] == 403] == []
    assert "from 1 to 2" in daemon_run.scale_results[0], daemon_run.scale_results
    assert "from 2 to 1" in daemon_run.scale_results[1], daemon_run.scale_results
    methods = {m for m, _, _ in daemon_run.scale_calls}
    assert methods == {"GET", "POST", "DELETE"}, daemon_run.scale_calls
    extended = scaling_allowlist()
    for method, path in [
        ("POST", "/v1.41/containers/web/exec"),
        ("POST", "/v1.41/containers/web/kill"),
        ("POST", "/v1.41/images/create"),
        ("POST", "/v1.41/build"),
        ("GET", "/v1.41/images/a/../../secrets/json"),
        ("DELETE", "/v1.41/images/busybox"),
        ("POST", "/v1.41/swarm/leave"),
    ]:
        assert not allowed(extended, method, path), (method, path)


@pytest.mark.realparts
def test_metrics_pass_promtool_check_metrics(daemon_run: Run) -> None:
    promtool = require("promtool")
    assert (
        'remediator_actions_total{action="container.restart",host="default",kind="act",outcome="ok",policy="database-down"} 1.0'
        in daemon_run.metrics
    )
    assert "remediator_time_to_recovery_seconds_count" in daemon_run.metrics
    assert run([promtool, "check", "metrics"], stdin=daemon_run.metrics).strip() == ""


@pytest.fixture(scope="module")
def swarm_daemon() -> Iterator[DockerDaemon]:
    """A one-node Swarm on a daemon of its own (the session's daemon never becomes a manager)."""
    daemon = DockerDaemon()
    try:
        daemon.client.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:0")
        yield daemon
    finally:
        try:
            daemon.client.swarm.leave(force=True)  # tasks would be restarted while the daemon stops
        finally:
            daemon.close()


@pytest.mark.realparts
async def test_swarm_actions_need_the_documented_extension_of_the_allowlist_and_work_with_it(
    swarm_daemon: DockerDaemon,
) -> None:
    from remediator.actions.docker import DockerBackend
    from remediator.actions.swarm import NoParams, SwarmRollback, SwarmScale, SwarmScaleParams, SwarmStatus

    await asyncio.to_thread(
        swarm_daemon.client.services.create,
        swarm_daemon.image,
        ["/bin/busybox", "sleep", "100000"],
        name="workers",
        networks=["host"],
        init=True,
        stop_grace_period=1_000_000_000,
        mode={"Replicated": {"Replicas": 1}},
    )
    calls: list[tuple[str, str, int]] = []
    allow = proxy_allowlist(SWARM)
    runner, session, port = await _allowlist_proxy(swarm_daemon.socket_path, allow, calls)
    backend = DockerBackend(f"tcp://{LOOPBACK}:{port}", timeout_s=20, threads=2)
    try:
        with pytest.raises(Exception, match="403"):
            await SwarmScale(backend).run("workers", SwarmScaleParams(by=1, max=3))
        allow.clear()
        allow.update(swarm_allowlist())
        calls.clear()
        scaled = await SwarmScale(backend).run("workers", SwarmScaleParams(by=1, max=3))
        rolled = await SwarmRollback(backend).run("workers", NoParams())
        status = await SwarmStatus(backend).run("workers", NoParams())
    finally:
        backend.close()
        await session.close()
        await runner.cleanup()
    assert scaled.startswith("scaled swarm service workers from 1 to 2"), scaled
    assert rolled.startswith("rolling back swarm service workers"), rolled
    assert status.startswith("swarm service workers: desired="), status
    assert [c for c in calls if c[2] == 403] == [], calls
    extended = swarm_allowlist()
    for method, path in [
        ("POST", "/v1.41/services/create"),
        ("DELETE", "/v1.41/services/workers"),
        ("POST", "/v1.41/swarm/leave"),
        ("GET", "/v1.41/secrets"),
        ("POST", "/v1.41/services/a/../../swarm/update"),
    ]:
        assert not allowed(extended, method, path), (method, path)


# ---------------------------------------------------------------------------------------------------------
# Grafana


def dashboard_targets() -> list[tuple[str, str]]:
    """(panel title, expr) of every query in the dashboard, rows' nested panels included."""
    found: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            walk(panel.get("panels", []))
            for target in panel.get("targets", []):
                found.append((panel["title"], target["expr"]))

    walk(json.loads(DASHBOARD.read_text())["panels"])
    return found


# PromQL words that are not metric names.
_PROMQL_WORDS = set(
    re.findall(
        r"\S+",
        """
        sum min max avg count stddev stdvar topk bottomk quantile count_values group
        rate irate increase delta idelta deriv histogram_quantile clamp_min clamp_max abs ceil floor round
        sort sort_desc time vector scalar absent absent_over_time label_replace label_join resets changes
        avg_over_time max_over_time min_over_time sum_over_time count_over_time last_over_time
        predict_linear timestamp by without on ignoring group_left group_right and or unless bool offset
        inf nan
        """,
    )
)


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: what is left once strings, label matchers, ranges, grouping
    clauses, numbers, functions and keywords are removed."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", text))
    return {w for w in words if w not in _PROMQL_WORDS}


def exposed_names(metrics: str) -> set[str]:
    """Every series name the exposition can produce, from its # TYPE lines (present even with no sample)."""
    names: set[str] = set()
    for line in metrics.splitlines():
        found = re.match(r"# TYPE (\S+) (\S+)", line)
        if not found:
            continue
        name, kind = found.groups()
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif kind == "summary":
            names |= {f"{name}_sum", f"{name}_count"}
    return names


def test_metric_name_extraction() -> None:
    assert metric_names(
        'histogram_quantile(0.9, sum by (le, policy) (rate(a_bucket{x=~"a|b"}[$__rate_interval])))'
        " / on (policy) group_left b_total or vector(0)"
    ) == {"a_bucket", "b_total"}


@pytest.mark.realparts
def test_every_metric_the_dashboard_queries_is_exposed(daemon_run: Run) -> None:
    exposed = exposed_names(daemon_run.metrics)
    queried: dict[str, set[str]] = {}
    for title, expr in dashboard_targets():
        for name in metric_names(expr):
            queried.setdefault(name, set()).add(title)
    missing = {name: titles for name, titles in queried.items() if name not in exposed}
    assert missing == {}, f"the dashboard queries metrics remediator does not expose: {missing}"
    # What the dashboard is for: each of these has a panel.
    for name in (
        "remediator_alerts_received_total",
        "remediator_actions_total",
        "remediator_refusals_total",
        "remediator_breaker_state",
        "remediator_escalations_total",
        "remediator_incidents_open",
        "remediator_time_to_recovery_seconds_bucket",
        "remediator_paused",
        "remediator_dry_run",
        "remediator_intake_backlog",
        "remediator_outbox_undelivered",
        "remediator_outbox_oldest_undelivered_age_seconds",
        "remediator_approvals_pending",
        "remediator_webhook_duration_seconds_bucket",
        "remediator_build_info",
        "remediator_recoveries_total",
        "remediator_pages_avoided_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ):
        assert name in queried, f"no panel queries {name}"


# Panels that show data as soon as a daemon runs, whatever happened (the others count events).
ALWAYS_ANSWERED = {
    "Automation",
    "Dry run",
    "Open incidents",
    "Pending approvals",
    "Undelivered escalations",
    "Intake backlog",
    "Actions run",
    "Success rate by policy",
    "Policies loaded",
    "Version",
    "Webhook latency",
    "CPU",
    "Memory and open files",
}


@pytest.mark.realparts
def test_every_dashboard_query_runs_on_prometheus_and_two_replicas_are_not_counted_twice(
    daemon_run: Run,
) -> None:
    answers = daemon_run.dashboard_answers
    for title, expr in dashboard_targets():
        answer = answers[expr]
        assert answer["status"] == "success", (title, expr, answer)
        if title in ALWAYS_ANSWERED:
            assert answer["data"]["result"], f"{title}: no data for {dashboard_expr(expr)}"
    # The refused target's incident is still open (escalated): both "replicas" report it, the panel shows 1.
    assert daemon_run.open_incidents >= 1
    (stat,) = [e for t, e in dashboard_targets() if t == "Open incidents" and e.startswith("max(")][:1]
    (sample,) = answers[stat]["data"]["result"]
    assert float(sample["value"][1]) == daemon_run.open_incidents


def test_dashboard_filters_by_its_variables_and_aggregates_shared_gauges_with_max() -> None:
    from remediator.metrics import Metrics

    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("instance", "policy", "host"):
        assert variables[name]["type"] == "query" and variables[name]["includeAll"], name
        assert variables[name]["definition"].endswith(f", {name})"), variables[name]
        assert variables[name]["allValue"] == ".*", "All must match series without the label too"
        assert variables[name]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert variables["host"]["definition"] == "label_values(remediator_actions_total, host)"

    # The store's gauges, as metrics.py documents them: the same on every replica.
    shared = [m.name for m in Metrics().registry.collect() if "aggregate with max" in m.documentation]
    assert {"remediator_incidents_open", "remediator_approvals_pending", "remediator_paused"} <= set(shared)
    for title, expr in dashboard_targets():
        selectors = re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}", expr)
        assert selectors, (title, expr)
        for metric, matchers in selectors:
            assert 'instance=~"$instance"' in matchers, (title, metric)
            if metric == "remediator_actions_total":
                # "Actions run" and the rest count remediations only: a diagnosis is not an action run.
                for matcher in ('kind="act"', 'policy=~"$policy"', 'host=~"$host"'):
                    assert matcher in matchers, (title, matcher)
        for name in shared:
            uses = len(re.findall(rf"\b{name}\b", expr))
            maxed = len(re.findall(rf"\bmax(?:\s+(?:by|without)\s*\([^)]*\))?\s*\(\s*{name}\b", expr))
            assert uses == maxed, f"{title}: {name} is the same on every replica; take max, never sum"


def test_dashboard_queries_parse_as_promql(tmp_path: Path) -> None:
    promtool = require("promtool")
    rules = [
        {
            "record": f"dashboard:query_{i}",
            "expr": dashboard_expr(expr),
        }
        for i, (_, expr) in enumerate(dashboard_targets())
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run([promtool, "check", "rules", str(path)])


def test_dashboard_is_provisioned_and_picks_its_datasource_by_a_variable() -> None:
    text = DASHBOARD.read_text()
    dashboard = json.loads(text)
    assert dashboard["uid"] == "remediator"
    (datasource,) = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")[
        "datasources"
    ]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    # No uid written in: imported into any Grafana, the dashboard uses the Prometheus chosen in ${datasource}.
    assert f'"uid": "{datasource["uid"]}"' not in text
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        assert panel["targets"] and panel.get("description"), panel["title"]

    (provider,) = load_yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "remediator.yml")[
        "providers"
    ]
    grafana = load_yaml(COMPOSE)["services"]["grafana"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in grafana["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    swarm_targets = {c["target"] for c in load_yaml(SWARM)["services"]["grafana"]["configs"]}
    assert f"{provider['options']['path']}/remediator.json" in swarm_targets


# ---------------------------------------------------------------------------------------------------------
# Compose and Swarm


def test_compose_and_swarm_files_are_valid_and_keep_the_socket_behind_the_proxy() -> None:
    # docker-compose validates both against the Compose schema (the Swarm file's `deploy:` keys included;
    # Debian's docker CLI 20.10 has no `docker stack config`). What Swarm alone reads is checked below.
    compose = require("docker-compose")
    for stack in (COMPOSE, SWARM):
        run([compose, "-f", str(stack), "config", "-q"], env={"DOCKER_GID": "999"})
    swarm = load_yaml(SWARM)
    assert swarm["services"]["remediator"]["deploy"]["replicas"] == 1, "one replica: the SQLite store"
    assert swarm["services"]["remediator"]["deploy"]["update_config"]["order"] == "stop-first"
    for name, service in swarm["services"].items():
        for ref in service.get("configs", []):
            assert ref["source"] in swarm["configs"], (name, ref)
        for ref in service.get("secrets", []):
            assert (ref if isinstance(ref, str) else ref["source"]) in swarm["secrets"], (name, ref)

    for stack in (COMPOSE, SWARM):
        services = load_yaml(stack)["services"]
        for name, service in services.items():
            mounts = [str(v) for v in service.get("volumes", [])]
            if name == "docker-proxy":
                assert mounts == ["/var/run/docker.sock:/var/run/docker.sock:ro"]
                assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
            else:
                assert not any("docker.sock" in m for m in mounts), (stack.name, name)
        rem = services["remediator"]
        assert rem["environment"]["REMEDIATOR_DOCKER__HOST"] == "tcp://docker-proxy:2375"
        # The token secret lands on <state_dir>/token, where remediator reads it.
        assert {"source": "remediator_token", "target": "token"} in rem["secrets"]
        assert rem["environment"]["REMEDIATOR_STATE_DIR"] == "/run/secrets"
        assert "docker-api" in rem["networks"]
        assert load_yaml(stack)["networks"]["docker-api"]["internal"] is True
        # The shipped policies verify with Prometheus queries: the stack's Prometheus, on a shared network.
        assert rem["environment"]["REMEDIATOR_PROMETHEUS__URL"] == "http://prometheus:9090"
        shared = set(rem["networks"]) & set(services["prometheus"].get("networks", ["default"]))
        assert shared - {"docker-api"}, (stack.name, "remediator cannot reach prometheus")

    services = load_yaml(COMPOSE)["services"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    # The demo's containers are named as the policies and the scrape labels name them.
    scrape = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")["scrape_configs"]
    labelled = {sc["labels"]["container"] for job in scrape for sc in job["static_configs"] if "labels" in sc}
    named = {s["container_name"] for s in services.values() if "container_name" in s}
    assert labelled <= named
    for compose_path in (COMPOSE, SWARM):
        text = compose_path.read_text()
        for relative in re.findall(r"(?:file: |- )(\.\.?/[\w./-]+)", text):
            if relative.startswith("./secrets/"):
                continue  # made by whoever deploys, never committed
            assert (compose_path.parent / relative.split(":")[0]).exists(), relative


# ---------------------------------------------------------------------------------------------------------
# Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    text = (REPO / "Dockerfile").read_text()
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            out.append((keyword.upper(), args.strip()))
    return out


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches the path (or one of its parents) decides."""
    parts = path.split("/")
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").rstrip("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(
            fnmatch(p, pat) or (pat.startswith("**/") and fnmatch(p.split("/")[-1], pat[3:]))
            for p in prefixes
        ):
            excluded = not negate
    return excluded


def test_dockerfile_is_multi_stage_non_root_with_a_healthcheck() -> None:
    steps = dockerfile_instructions()
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for k, a in steps if k == "ARG" and "=" in a}
    froms = [a.replace("${PYTHON_IMAGE}", args.get("PYTHON_IMAGE", "")) for k, a in steps if k == "FROM"]
    assert froms == ["python:3.11-slim AS builder", "python:3.11-slim"]
    final = steps[max(i for i, (k, _) in enumerate(steps) if k == "FROM") :]
    builder = steps[: max(i for i, (k, _) in enumerate(steps) if k == "FROM")]
    assert any(k == "RUN" and "pip wheel" in a for k, a in builder), "the wheel is built in the builder stage"
    assert any(k == "COPY" and a.startswith("--from=builder ") for k, a in final)
    assert not any(k == "RUN" and "pip install" in a for k, a in final), "the runtime stage installs nothing"

    (user,) = [a for k, a in final if k == "USER"]
    uid = user.replace("${UID}", args["UID"]).split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric and non-root, so runAsNonRoot can check it"
    assert [a for k, a in final if k == "EXPOSE"] == ["9095"]
    assert [json.loads(a) for k, a in final if k == "ENTRYPOINT"] == [["remediator"]]
    # The listen address is in ENV, so any CMD listens beyond the container's loopback; the probe reads it.
    assert [json.loads(a) for k, a in final if k == "CMD"] == [["serve"]]
    env = " ".join(a for k, a in final if k == "ENV")
    assert "REMEDIATOR_SERVER__HOST=0.0.0.0" in env and "REMEDIATOR_SERVER__PORT=9095" in env
    assert _healthcheck_argv() == ["remediator", "healthcheck"]
    # The package index is a build argument of the builder; every install is held to requirements.lock.
    builder_args = {a.split("=", 1)[0] for k, a in builder if k == "ARG"}
    assert {"PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST"} <= builder_args
    assert any(k == "ENV" and "PIP_CONSTRAINT=/src/requirements.lock" in a for k, a in builder)
    assert any(k == "COPY" and a.split()[0] == "requirements.lock" for k, a in builder)
    assert not any(k == "ARG" and a.startswith("PIP_") for k, a in final), "the index stays in the builder"

    patterns = [
        ln.strip()
        for ln in (REPO / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    for keyword, arguments in steps:
        if keyword == "COPY" and not arguments.startswith("--from"):
            for source in arguments.split()[:-1]:
                assert (REPO / source).exists(), source
                assert not dockerignored(source, patterns), f"{source} is excluded by .dockerignore"
    for secret in (".git", ".venv", ".remediator", ".env", "tests", "bench", "remediator/__pycache__"):
        assert dockerignored(secret, patterns), f"{secret} would be sent to the build"


@pytest.mark.realparts
def test_the_healthcheck_command_probes_the_daemon(daemon_run: Run) -> None:
    assert daemon_run.healthcheck_up.returncode == 0, daemon_run.healthcheck_up.stderr
    assert daemon_run.healthcheck_down.returncode != 0
