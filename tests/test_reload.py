"""Policy reload without a restart (issue 14 item 2): POST /-/reload, SIGHUP and `remediator reload`. A broken
set is refused with check's file:line: reason and the policies in force stay; a running incident keeps the
policy it started with; new alerts use the new set; a removed policy's running incident escalates."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
from helpers import REPO, TOKEN, alert, eventually, notification, post_alerts, settings_env
from realparts import DockerDaemon, free_port

RESTART = """\
name: {name}
match: [alertname = {alertname}]
target: {{kind: container, from_label: container, allow: ["{allow}"]}}
steps:
  - act: container.restart
    verify: {{resolved_within_s: {verify}}}
  - escalate: log
limits: {{cooldown_s: 0}}
"""


def policy(name: str = "db-down", alertname: str = "DbDown", allow: str = "rl-[0-9]", verify: int = 8) -> str:
    return RESTART.format(name=name, alertname=alertname, allow=allow, verify=verify)


async def reload(app: Any) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"http://127.0.0.1:{app.port}/-/reload", headers=headers) as r,
    ):
        return r.status, await r.json()


def gauge(app: Any, name: str) -> float:
    value = app.metrics.registry.get_sample_value(name)
    assert value is not None, name
    return float(value)


async def test_a_reload_keeps_the_running_incident_and_refuses_a_broken_set(
    start_app: Any, docker_daemon: DockerDaemon, tmp_path: Path
) -> None:
    await asyncio.to_thread(docker_daemon.run_container, "rl-1")
    await asyncio.to_thread(docker_daemon.run_container, "rl-2")
    app = await start_app(policies={"db.yaml": policy()}, REMEDIATOR_DOCKER__HOST=docker_daemon.host)
    directory = tmp_path / "policies"
    assert await post_alerts(
        app.port, [notification(alert("DbDown", fingerprint="a", container="rl-1"))]
    ) == [200]

    async def restarted() -> bool:
        steps = await app.store.steps(1)
        return bool(steps) and steps[-1].status == "ok"

    await eventually(restarted, timeout=30)  # the ladder now waits in its 8 s verification

    (directory / "broken.yaml").write_text("name: broken\nmatch: [alertname = X]\nsteps: [}\n")
    status, body = await reload(app)
    assert status == 400 and "broken.yaml:3" in body["error"] and "in force stay" in body["error"]
    assert gauge(app, "remediator_config_last_reload_successful") == 0
    assert [p.name for p in app.policies] == ["db-down"]

    (directory / "broken.yaml").unlink()
    (directory / "db.yaml").write_text(policy(allow="rl-[12]"))  # a new version of the running policy
    (directory / "other.yaml").write_text(policy(name="other", alertname="OtherDown", allow="rl-2"))
    status, body = await reload(app)
    assert status == 200 and body["policies"] == 2, body
    assert gauge(app, "remediator_config_last_reload_successful") == 1
    assert (
        app.metrics.registry.get_sample_value("remediator_policies_info", {"version": body["version"]}) == 1
    )
    incident = await app.store.get_incident(1)
    assert incident is not None and incident.status == "active"  # its ladder goes on, under its own version
    assert [s.attempt for s in await app.store.steps(1)] == [1]  # and was not restarted or acted on again

    # New alerts use the new set at once.
    assert await post_alerts(
        app.port, [notification(alert("OtherDown", fingerprint="b", container="rl-2"))]
    ) == [200]
    opened = await eventually(lambda: app.store.list_incidents(), timeout=10)
    await eventually(lambda: _has_policy(app, "other"))
    kinds = {r.kind: r.detail for r in await app.store.audit_trail()}
    assert kinds["policies_reloaded"]["changed"] == ["db-down"] and kinds["policies_reloaded"]["added"] == [
        "other"
    ]
    assert opened


async def _has_policy(app: Any, name: str) -> bool:
    return any(i.policy == name for i in await app.store.list_incidents())


async def test_a_removed_policy_s_running_incident_escalates_after_its_step(
    start_app: Any, docker_daemon: DockerDaemon, tmp_path: Path
) -> None:
    await asyncio.to_thread(docker_daemon.run_container, "rl-3")
    app = await start_app(
        policies={"db.yaml": policy(verify=4), "keep.yaml": policy(name="keep", alertname="Keep")},
        REMEDIATOR_DOCKER__HOST=docker_daemon.host,
    )
    assert await post_alerts(
        app.port, [notification(alert("DbDown", fingerprint="c", container="rl-3"))]
    ) == [200]

    async def restarted() -> bool:
        return any(s.status == "ok" for s in await app.store.steps(1))

    await eventually(restarted, timeout=30)
    (tmp_path / "policies" / "db.yaml").unlink()
    status, body = await reload(app)
    assert status == 200 and body["policies"] == 1
    incident = await eventually(lambda: _escalated(app), timeout=30)
    assert "policy 'db-down' was removed" in incident.reason
    assert len(await app.store.steps(1)) == 1  # it finished its step (the verification), and acted no more


async def _escalated(app: Any) -> Any:
    incident = await app.store.get_incident(1)
    return incident if incident is not None and incident.status == "escalated" else None


def _metric(url: str, name: str) -> float | None:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


def test_sighup_and_the_cli_reload_a_running_daemon(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "db.yaml").write_text(policy())
    port = free_port()
    env = {
        **os.environ,
        **settings_env(tmp_path, REMEDIATOR_POLICIES_DIR=str(policies), REMEDIATOR_SERVER__PORT=str(port)),
    }
    daemon = subprocess.Popen(
        [sys.executable, "-m", "remediator", "serve"], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while _safe_metric(url, "remediator_policies_loaded") != 1:
            assert daemon.poll() is None and time.monotonic() < deadline, "the daemon did not start"
            time.sleep(0.2)
        (policies / "more.yaml").write_text(policy(name="more", alertname="More"))
        daemon.send_signal(signal.SIGHUP)
        _wait(lambda: _safe_metric(url, "remediator_policies_loaded") == 2)
        (policies / "bad.yaml").write_text("name: [\n")
        daemon.send_signal(signal.SIGHUP)
        _wait(lambda: _safe_metric(url, "remediator_config_last_reload_successful") == 0)
        assert _safe_metric(url, "remediator_policies_loaded") == 2  # the set in force stays
        (policies / "bad.yaml").unlink()
        cli = subprocess.run(
            [sys.executable, "-m", "remediator", "reload", "--url", url],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert cli.returncode == 0 and "2 policies in force" in cli.stdout, cli.stderr
        assert _safe_metric(url, "remediator_config_last_reload_successful") == 1
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=30)
    assert "bad.yaml" in err and "refused" in err and "Traceback" not in err


def _safe_metric(url: str, name: str) -> float | None:
    try:
        return _metric(url, name)
    except OSError:
        return None


def _wait(check: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.2)


async def test_a_vanished_or_empty_directory_is_a_refused_reload(start_app: Any, tmp_path: Path) -> None:
    app = await start_app(policies={"db.yaml": policy()})
    directory = tmp_path / "policies"
    (directory / "db.yaml").unlink()
    status, body = await reload(app)  # empty: never "no policies at all" by accident
    assert status == 400 and "no policies" in body["error"]
    directory.rmdir()
    status, body = await reload(app)
    assert status == 400 and "not a directory" in body["error"]
    assert [p.name for p in app.policies] == ["db-down"]
    assert gauge(app, "remediator_config_last_reload_successful") == 0
