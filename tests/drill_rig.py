"""What the drills on real parts share: a shipped policy and its shipped rule, a stand-in exporter, and the chain
Prometheus -> Alertmanager -> a daemon (tests/test_drills_runbooks.py, tests/test_drills_shipped.py,
tests/test_actions_prune.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from helpers import REPO, TOKEN, settings_env
from realparts import Alertmanager, DockerDaemon, Prometheus, free_port

from remediator.api_client import ApiClient
from remediator.app import App
from remediator.settings import Settings

FAST = {"scrape_interval": "1s", "scrape_timeout": "800ms", "evaluation_interval": "1s"}


def shipped_rule(alertname: str) -> dict[str, Any]:
    """The shipped rule named ``alertname`` (rules.yml or rules/runbooks.yml), its ``for`` cut to 0s."""
    for path in (REPO / "deploy/prometheus/rules.yml", REPO / "deploy/prometheus/rules/runbooks.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") == alertname:
                    rule["for"] = "0s"
                    return dict(rule)
    raise AssertionError(f"no shipped rule {alertname}")


async def serve(handler: Callable[[web.Request], Any]) -> tuple[web.AppRunner, int]:
    """A stand-in exporter: ``handler`` answers GET /metrics on a free loopback port."""
    app = web.Application()
    app.router.add_get("/metrics", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


def policy_dir(tmp_path: Path, name: str, edit: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """A directory holding policies/NAME.yaml: as shipped (byte for byte) unless ``edit`` changes it."""
    directory = tmp_path / "policies"
    directory.mkdir(exist_ok=True)
    text = (REPO / "policies" / f"{name}.yaml").read_text()
    if edit is not None:
        policy = yaml.safe_load(text)
        edit(policy)
        text = yaml.safe_dump(policy)
    (directory / f"{name}.yaml").write_text(text)
    return directory


async def chain(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    docker_daemon: DockerDaemon,
    alertmanager_factory: Callable[..., Alertmanager],
    prometheus_factory: Callable[..., Prometheus],
    *,
    policies: Path,
    rules: list[dict[str, Any]],
    scrape: list[dict[str, Any]],
    **env: str,
) -> tuple[App, Settings, ApiClient, Prometheus]:
    """Prometheus (scraping ``scrape``, evaluating ``rules``) -> Alertmanager -> a daemon on ``policies``."""
    port = free_port()
    am = alertmanager_factory(f"http://127.0.0.1:{port}/alerts", TOKEN)
    config: dict[str, Any] = {
        "global": FAST,
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [am.url.removeprefix("http://")]}]}]},
        "scrape_configs": scrape,
    }
    prometheus = prometheus_factory(
        yaml.safe_dump(config),
        rule_files=[("rules.yml", yaml.safe_dump({"groups": [{"name": "g", "rules": rules}]}))],
    )
    values = settings_env(
        tmp_path,
        REMEDIATOR_POLICIES_DIR=str(policies),
        REMEDIATOR_DOCKER__HOST=docker_daemon.host,
        REMEDIATOR_PROMETHEUS__URL=prometheus.url,
        REMEDIATOR_SERVER__PORT=str(port),
        **env,
    )
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    app = App(settings)
    await app.start()
    return app, settings, ApiClient(f"http://127.0.0.1:{port}", TOKEN), prometheus


async def settled(api: ApiClient, timeout_s: float = 60) -> tuple[dict[str, Any], float]:
    """The first incident once it is resolved or escalated (or as it is at the timeout), and when."""
    started = time.monotonic()
    incident: dict[str, Any] = {}
    while time.monotonic() - started < timeout_s:
        listed = (await asyncio.to_thread(api.get, "/api/incidents?limit=10"))["incidents"]
        if listed:
            incident = await asyncio.to_thread(api.get, f"/api/incidents/{listed[-1]['id']}")
            if incident["status"] in ("resolved", "escalated"):
                break
        await asyncio.sleep(0.25)
    return incident, time.monotonic() - started
