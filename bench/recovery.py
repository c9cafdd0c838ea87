"""Recovery: with a real Prometheus (1 s scrape and evaluation) and Alertmanager (group_wait 0), the time
from a failure injected (the container stopped) to the alert rule resolving, with remediator doing the fix.

Everything is real and on loopback: a private Docker daemon (tests/realparts/) runs "sms-db", a busybox
httpd on the host network that Prometheus scrapes (it serves `pg_up 1`); the alert rule is
deploy/prometheus/rules.yml's own DatabaseDown (`pg_up == 0 or up == 0` of job databases), with `for:` set
to 0s; Alertmanager posts to remediator, which runs the shipped policies/database-down.yaml as it is (logs as
evidence, the restart, verification by its own checks or the alert resolving) except for its limits, lifted
so that every iteration may act.

The baseline is an oracle in the same run: a second container ("oracle-db", outside the policy's allow
list, so remediator only records and escalates it) that the bench restarts itself the moment Prometheus
reports the rule firing. It is the floor set by scraping and rule evaluation; the difference is what
Alertmanager and remediator add.

Target: failure -> rule resolved under 15 s (median).

    .venv/bin/python bench/recovery.py [--iterations 4]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
import urllib.parse
from collections import defaultdict
from typing import Any

import common
import yaml
from common import Row


def httpd_command(port: int) -> list[str]:
    # A "database" that Prometheus scrapes directly: running, it answers pg_up 1 (what postgres_exporter says
    # of a database that answers); stopped, the scrape fails, up == 0 and pg_up goes stale.
    script = (
        "/bin/busybox mkdir -p /www && echo 'pg_up 1' > /www/metrics && "
        f"exec /bin/busybox httpd -f -p 127.0.0.1:{port} -h /www"
    )
    return ["/bin/sh", "-c", script]


def rules_with_for_zero() -> str:
    rules = yaml.safe_load((common.REPO / "deploy" / "prometheus" / "rules.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "0s"
    return yaml.safe_dump(rules, sort_keys=False)


def prometheus_config(am_port: int, targets: dict[str, int]) -> str:
    static = [
        {"targets": [f"127.0.0.1:{port}"], "labels": {"container": name}} for name, port in targets.items()
    ]
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "800ms", "evaluation_interval": "1s"},
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
        "scrape_configs": [{"job_name": "databases", "static_configs": static}],
        "rule_files": ["rules.yml"],
    }
    return yaml.safe_dump(config, sort_keys=False)


class Watch:
    """Prometheus' view: is DatabaseDown firing for a container; is its target up."""

    def __init__(self, url: str) -> None:
        self.url = url

    def firing(self, container: str) -> bool:
        alerts = common.http_json(self.url + "/api/v1/alerts", token=None)["data"]["alerts"]
        return any(
            a["labels"].get("alertname") == "DatabaseDown"
            and a["labels"].get("container") == container
            and a["state"] == "firing"
            for a in alerts
        )

    def up(self, container: str) -> bool:
        query = urllib.parse.quote(f'up{{job="databases",container="{container}"}}')
        result = common.http_json(f"{self.url}/api/v1/query?query={query}", token=None)["data"]["result"]
        return bool(result) and result[0]["value"][1] == "1"


def open_incidents(daemon: common.Process, target: str) -> list[Any]:
    found = []
    for status in ("active", "escalated"):
        found += [
            i
            for i in common.http_json(f"{daemon.url}/api/incidents?status={status}")["incidents"]
            if i["target"] == target
        ]
    return found


def settle(watch: Watch, daemon: common.Process, container: str) -> None:
    """Wait until the target is up, the rule quiet and remediator's incident on it closed."""
    common.wait_for(
        lambda: watch.up(container) and not watch.firing(container) and not open_incidents(daemon, container),
        timeout=60,
        what=f"{container} settled",
        interval=0.1,
    )


def one(
    docker: Any, events: common.Events, watch: Watch, daemon: common.Process, container: str, oracle: bool
) -> dict[str, float]:
    settle(watch, daemon, container)
    events.drain(container)
    docker.client.containers.get(container).stop(timeout=5)
    failed = events.wait(container, "die") / 1e9
    common.wait_for(lambda: watch.firing(container), timeout=60, what="rule firing", interval=0.05)
    firing = time.time()
    if oracle:
        docker.client.containers.get(container).restart(timeout=5)
    restarted = events.wait(container, "restart", timeout=60) / 1e9
    common.wait_for(lambda: not watch.firing(container), timeout=60, what="rule resolved", interval=0.05)
    resolved = time.time()
    return {
        "total": resolved - failed,
        "detect": firing - failed,
        "act": restarted - firing,
        "resolve": resolved - restarted,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=4)
    args = parser.parse_args()
    audit = common.CpuAudit.quiet_start()

    realparts = common.realparts()
    work = common.workdir("recovery")
    policies = work / "policies"
    policies.mkdir()
    shipped = (common.REPO / "policies" / "database-down.yaml").read_text()
    (policies / "database-down.yaml").write_text(common.with_limits_lifted(shipped))
    docker = realparts.DockerDaemon()
    parts: list[Any] = []
    daemon = None
    events = None
    figures: dict[str, list[float]] = defaultdict(list)
    try:
        ports = {"sms-db": realparts.free_port(), "oracle-db": realparts.free_port()}
        for name, port in ports.items():
            docker.run_container(name, command=httpd_command(port), network_mode="host")
        events = common.Events(docker.client)
        # Alertmanager posts to remediator, which asks Prometheus, which alerts Alertmanager: remediator's
        # port is picked first, and remediator starts last.
        port = realparts.free_port()
        am = realparts.Alertmanager(
            f"http://127.0.0.1:{port}/alerts",
            common.TOKEN,
            group_wait="0s",
            group_interval="1s",
            repeat_interval="1h",
        )
        parts.append(am)
        prom = realparts.Prometheus(
            prometheus_config(am.port, ports), rule_files=[("rules.yml", rules_with_for_zero())]
        )
        parts.append(prom)
        daemon = common.start_remediator(
            work,
            policies,
            port,
            REMEDIATOR_DOCKER__HOST=docker.host,
            REMEDIATOR_PROMETHEUS__URL=prom.url,
            REMEDIATOR_GUARDS__BUDGET_COUNT="100000",
        )
        watch = Watch(prom.url)
        for i in range(args.iterations):
            for who, container, oracle in (("remediator", "sms-db", False), ("oracle", "oracle-db", True)):
                result = one(docker, events, watch, daemon, container, oracle)
                for key, value in result.items():
                    figures[f"{who} {key}"].append(value)
            print(
                f"{i + 1}/{args.iterations}: remediator {figures['remediator total'][-1]:.1f} s,"
                f" oracle {figures['oracle total'][-1]:.1f} s",
                flush=True,
            )
        text = common.http_text(daemon.url + "/metrics")
        restarts = common.metric_sum(
            text, "remediator_actions_total", action="container.restart", policy="database-down", outcome="ok"
        )
    finally:
        for part in reversed(parts):
            part.close()
        if daemon is not None:
            daemon.stop()
        if events is not None:
            events.close()
        docker.close()
        shutil.rmtree(work, ignore_errors=True)

    m = {k: common.median(v) for k, v in figures.items()}
    rows = [
        Row(
            "failure -> rule resolved",
            m["remediator total"],
            m["oracle total"],
            "s",
            "< 15",
            m["remediator total"] < 15,
            2,
        ),
        Row("  failure -> rule firing", m["remediator detect"], m["oracle detect"], "s", digits=2),
        Row("  firing -> container restarted", m["remediator act"], m["oracle act"], "s", digits=2),
        Row("  restarted -> rule resolved", m["remediator resolve"], m["oracle resolve"], "s", digits=2),
        Row(
            "worst failure -> rule resolved",
            max(figures["remediator total"]),
            max(figures["oracle total"]),
            "s",
            digits=2,
        ),
        Row(
            "restarts by remediator",
            restarts,
            None,
            "",
            f"= {args.iterations + 0}",
            restarts == args.iterations,
            0,
        ),
    ]
    note = (
        f"{args.iterations} iterations each, alternating, medians; Prometheus 1 s scrape and evaluation, "
        f"Alertmanager group_wait 0s; baseline: an oracle restarting as soon as the rule fires. {common.command_line()}"
    )
    met = common.print_table("recovery: container stopped to alert resolved", rows, "oracle", note, audit)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
