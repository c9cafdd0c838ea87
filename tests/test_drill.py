"""A drill on real parts: the container is stopped, Prometheus sees it down, Alertmanager posts, remediator
restarts it, the rule resolves, and the drill reports its timings against the policy's criteria."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import TOKEN, settings_env
from realparts import Alertmanager, DockerDaemon, Prometheus, free_port

from remediator.api_client import ApiClient
from remediator.app import App
from remediator.drill import run_drill, synthetic_alert
from remediator.errors import TargetRefused
from remediator.settings import Settings

POLICY = """\
name: web-down
match: [alertname = WebDown, severity = critical]
target: {kind: container, from_label: container, allow: ["drill-web"]}
steps:
  - act: container.restart
    with: {timeout_s: 2}
    verify: {resolved_within_s: 60}
  - escalate: log
drill: {detect_within_s: 30, recover_within_s: 60}
"""

RULES = {
    "groups": [
        {
            "name": "drill",
            "rules": [
                {
                    "alert": "WebDown",
                    "expr": 'up{job="web"} == 0',
                    "for": "0s",
                    "labels": {"severity": "critical"},
                }
            ],
        }
    ]
}


async def test_a_drill_stops_the_container_and_times_the_recovery(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    docker_daemon: DockerDaemon,
    alertmanager_factory: Callable[..., Alertmanager],
    prometheus_factory: Callable[..., Prometheus],
) -> None:
    port = free_port()
    script = f"/bin/busybox mkdir -p /www && echo 'ok 1' > /www/metrics && exec /bin/busybox httpd -f -p 127.0.0.1:{port} -h /www"
    await asyncio.to_thread(
        docker_daemon.run_container, "drill-web", command=["/bin/sh", "-c", script], network_mode="host"
    )
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "web.yaml").write_text(POLICY)
    for key, value in settings_env(
        tmp_path, REMEDIATOR_POLICIES_DIR=str(policies), REMEDIATOR_DOCKER__HOST=docker_daemon.host
    ).items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    app = App(settings)
    await app.start()
    try:
        am = alertmanager_factory(f"http://127.0.0.1:{app.port}/alerts", TOKEN)
        config: dict[str, Any] = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "800ms", "evaluation_interval": "1s"},
            "alerting": {
                "alertmanagers": [{"static_configs": [{"targets": [am.url.removeprefix("http://")]}]}]
            },
            "scrape_configs": [
                {
                    "job_name": "web",
                    "static_configs": [
                        {"targets": [f"127.0.0.1:{port}"], "labels": {"container": "drill-web"}}
                    ],
                }
            ],
        }
        prometheus_factory(yaml.safe_dump(config), rule_files=[("rules.yml", yaml.safe_dump(RULES))])
        await asyncio.sleep(2.5)  # a first scrape of the healthy target

        policy = app.policies[0]
        with pytest.raises(TargetRefused):
            await run_drill(settings, policy, "sms-db", ApiClient(f"http://127.0.0.1:{app.port}", TOKEN))
        report = await run_drill(
            settings, policy, "drill-web", ApiClient(f"http://127.0.0.1:{app.port}", TOKEN), timeout_s=60
        )
        print(report.render())
        assert report.injected == "stop_container"
        assert report.outcome == "resolved" and report.passed, report.render()
        assert report.detected_s is not None and report.acted_s is not None and report.recovered_s is not None
        assert 0 <= report.detected_s <= report.acted_s <= report.recovered_s <= 60
        text = report.render()
        assert (
            "detected" in text
            and "recovered" in text
            and "lost       nothing" in text
            and text.endswith("PASS")
        )
    finally:
        await app.stop()


def test_a_synthetic_alert_carries_the_policys_labels() -> None:
    from remediator.domain.policies import Policy

    policy = Policy.model_validate(yaml.safe_load(POLICY))
    alert = synthetic_alert(policy, "drill-web")
    assert alert["labels"] == {
        "alertname": "WebDown",
        "severity": "critical",
        "container": "drill-web",
        "drill": "true",
    }
    assert policy.matches(alert["labels"])
    assert "endsAt" in synthetic_alert(policy, "drill-web", ends=True)
