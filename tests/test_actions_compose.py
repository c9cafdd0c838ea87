"""compose.scale and compose.status on a real Compose project, created by Debian's docker-compose (1.29).

The replicas remediator adds must be ones compose itself accepts as its own: after scaling, `docker-compose up`
finds every container up to date instead of recreating it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers import REPO, TOKEN, alert, notification
from realparts import CaptureServer, DockerDaemon, require

from remediator.actions.compose import ComposeParams, ComposeScale, ComposeScaleParams, ComposeStatus
from remediator.actions.docker import DockerBackend
from remediator.app import App
from remediator.errors import PermanentActionError
from remediator.settings import Settings

pytestmark = pytest.mark.realparts

PROJECT = "rmscale"

COMPOSE_FILE = """
version: "2.4"
services:
  worker:
    image: {image}
    command: ["/bin/busybox", "sleep", "100000"]
    init: true
    network_mode: none
    environment:
      QUEUE: sms
    labels:
      team: payments
  sms-workers:
    image: {image}
    command: ["/bin/busybox", "sleep", "100000"]
    init: true
    network_mode: none
"""

Compose = Callable[..., str]


@pytest.fixture
def backend(docker_daemon: DockerDaemon) -> Iterator[DockerBackend]:
    b = DockerBackend(docker_daemon.host, timeout_s=20, threads=2)
    yield b
    b.close()


def _remove_project(docker_daemon: DockerDaemon) -> None:
    for container in docker_daemon.client.containers.list(
        all=True, filters={"label": f"com.docker.compose.project={PROJECT}"}
    ):
        container.remove(force=True)
    for container in docker_daemon.client.containers.list(all=True, filters={"name": "^/cmp-"}):
        container.remove(force=True)


@pytest.fixture
def compose(docker_daemon: DockerDaemon, tmp_path: Path) -> Iterator[Compose]:
    """Runs docker-compose on the project against the private daemon; removes the project's containers after."""
    (tmp_path / "docker-compose.yml").write_text(COMPOSE_FILE.format(image=docker_daemon.image))
    binary = require("docker-compose")
    env = {**os.environ, "DOCKER_HOST": docker_daemon.host, "COMPOSE_INTERACTIVE_NO_CLI": "1"}

    def run(*args: str) -> str:
        done = subprocess.run(
            [binary, "-p", PROJECT, *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr

    _remove_project(docker_daemon)
    try:
        yield run
    finally:
        _remove_project(docker_daemon)


def replicas(docker_daemon: DockerDaemon, service: str = "worker") -> dict[str, dict[str, Any]]:
    """name -> inspect data of the service's containers."""
    found = docker_daemon.client.api.containers(
        all=True,
        filters={"label": [f"com.docker.compose.project={PROJECT}", f"com.docker.compose.service={service}"]},
    )
    return {c["Names"][0].lstrip("/"): docker_daemon.client.api.inspect_container(c["Id"]) for c in found}


async def test_scales_a_compose_service_from_2_to_4_and_never_past_max(
    docker_daemon: DockerDaemon, backend: DockerBackend, compose: Compose
) -> None:
    await asyncio.to_thread(compose, "up", "-d", "--scale", "worker=2", "worker")
    scale = ComposeScale(backend)

    detail = await scale.run("worker", ComposeScaleParams(project=PROJECT, by=1, max=4))
    assert detail == (
        f"scaled {PROJECT}/worker from 2 to 3 replicas (min 1, max 4); created {PROJECT}_worker_3"
    )
    # A step larger than the room left stops at max.
    detail = await scale.run("worker", ComposeScaleParams(project=PROJECT, by=5, max=4))
    assert detail.startswith(f"scaled {PROJECT}/worker from 3 to 4 replicas")
    with pytest.raises(PermanentActionError, match=f"{PROJECT}/worker already at max 4 \\(4 replicas\\)"):
        await scale.run("worker", ComposeScaleParams(project=PROJECT, by=1, max=4))

    found = await asyncio.to_thread(replicas, docker_daemon)
    assert sorted(found) == [f"{PROJECT}_worker_{n}" for n in (1, 2, 3, 4)]
    original, copy = found[f"{PROJECT}_worker_1"], found[f"{PROJECT}_worker_4"]
    assert copy["State"]["Status"] == "running"
    assert copy["Config"]["Labels"]["com.docker.compose.container-number"] == "4"
    assert copy["Config"]["Labels"]["team"] == "payments"
    for key in ("Cmd", "Env", "Image"):
        assert copy["Config"][key] == original["Config"][key], key
    assert copy["Image"] == original["Image"]
    assert copy["HostConfig"]["Init"] is True and copy["HostConfig"]["NetworkMode"] == "none"
    assert copy["Config"]["Hostname"] != original["Config"]["Hostname"]

    # compose takes the new replicas as its own: nothing to recreate, and scaling back is compose's to do.
    out = await asyncio.to_thread(compose, "up", "-d", "--scale", "worker=4", "worker")
    assert "Recreating" not in out and "Creating" not in out, out
    await asyncio.to_thread(compose, "up", "-d", "--scale", "worker=2", "worker")
    assert sorted(await asyncio.to_thread(replicas, docker_daemon)) == [
        f"{PROJECT}_worker_1",
        f"{PROJECT}_worker_2",
    ]


async def test_scaling_down_removes_the_highest_numbers_and_stops_at_min(
    docker_daemon: DockerDaemon, backend: DockerBackend, compose: Compose
) -> None:
    await asyncio.to_thread(compose, "up", "-d", "--scale", "worker=3", "worker")
    scale = ComposeScale(backend)
    # The target may also be a container of the service (a container policy's "add/remove a replica").
    detail = await scale.run(
        f"{PROJECT}_worker_1", ComposeScaleParams(project=PROJECT, by=-1, min=2, max=5, stop_timeout_s=2)
    )
    assert detail == (
        f"scaled {PROJECT}/worker from 3 to 2 replicas (min 2, max 5); removed {PROJECT}_worker_3"
    )
    with pytest.raises(PermanentActionError, match="already at min 2"):
        await scale.run("worker", ComposeScaleParams(project=PROJECT, by=-1, min=2, max=5))
    assert sorted(await asyncio.to_thread(replicas, docker_daemon)) == [
        f"{PROJECT}_worker_1",
        f"{PROJECT}_worker_2",
    ]

    status = await ComposeStatus(backend).run("worker", ComposeParams(project=PROJECT))
    lines = status.splitlines()
    assert lines[0] == f"{PROJECT}/worker: 2 replicas, 2 running"
    assert lines[1].startswith(f"  {PROJECT}_worker_1 running exit_code=0 restart_count=0 started_at=")


async def test_a_service_outside_the_project_or_with_a_fixed_name_is_refused(
    docker_daemon: DockerDaemon, backend: DockerBackend, compose: Compose
) -> None:
    """(``compose`` only for its clean-up of the project's containers.)"""
    scale = ComposeScale(backend)
    # The project is the policy's: the same service name in another project is not found.
    with pytest.raises(PermanentActionError, match="no compose service or container worker in project other"):
        await scale.run("worker", ComposeScaleParams(project="other", max=3))
    # A plain container (no compose labels) is not a service of the project either.
    await asyncio.to_thread(docker_daemon.run_container, "cmp-plain")
    with pytest.raises(
        PermanentActionError, match=f"no compose service or container cmp-plain in project {PROJECT}"
    ):
        await scale.run("cmp-plain", ComposeScaleParams(project=PROJECT, max=3))

    # container_name: compose cannot scale such a service, and neither does remediator.
    labels = {
        "com.docker.compose.project": PROJECT,
        "com.docker.compose.service": "web",
        "com.docker.compose.container-number": "1",
    }
    await asyncio.to_thread(docker_daemon.run_container, "cmp-web", labels=labels)
    with pytest.raises(PermanentActionError, match="fixed container_name cannot be scaled"):
        await scale.run("web", ComposeScaleParams(project=PROJECT, max=3))
    assert list(await asyncio.to_thread(replicas, docker_daemon, "web")) == ["cmp-web"]


def test_scale_params_refuse_a_zero_step_inverted_bounds_and_a_bad_project() -> None:
    with pytest.raises(ValueError, match="not 0"):
        ComposeScaleParams(project=PROJECT, by=0, max=3)
    with pytest.raises(ValueError, match="min \\(4\\) is above max \\(3\\)"):
        ComposeScaleParams(project=PROJECT, min=4, max=3)
    with pytest.raises(ValueError, match="project"):
        ComposeScaleParams(project="Bad Project; rm", max=3)
    with pytest.raises(ValueError, match="max"):
        ComposeScaleParams.model_validate({"project": PROJECT})


async def test_the_shipped_high_queue_depth_policy_scales_to_max_then_escalates(
    docker_daemon: DockerDaemon, compose: Compose, capture_server: CaptureServer, tmp_path: Path
) -> None:
    """policies/high-queue-depth.yaml as shipped, with this project's name, max 4 and a short verify window."""
    shipped = (REPO / "policies" / "high-queue-depth.yaml").read_text()
    policy = (
        shipped.replace("project: sms", f"project: {PROJECT}")
        .replace("max: 10", "max: 4")
        .replace("resolved_within_s: 180", "resolved_within_s: 0.2")
    )
    assert policy.count(PROJECT) == 2 and "max: 4" in policy and "0.2" in policy
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "high-queue-depth.yaml").write_text(policy)
    await asyncio.to_thread(compose, "up", "-d", "--scale", "sms-workers=2", "sms-workers")
    settings = Settings(
        policies_dir=tmp_path / "policies",
        state_dir=tmp_path / "state",
        server={"port": 0, "token": TOKEN},
        docker={"host": docker_daemon.host, "timeout_s": 20},
        escalation={"targets": {"oncall": {"url": f"{capture_server.url}/oncall"}}},
    )
    app = App(settings)
    await app.start()
    try:
        firing = alert(
            "HighQueueDepth", fingerprint="queue", severity="warning", service="sms-workers", queue="sms"
        )
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"http://127.0.0.1:{app.port}/alerts",
                json=notification(firing),
                headers={"Authorization": f"Bearer {TOKEN}"},
            ) as response,
        ):
            assert response.status == 200
        (escalation,) = await capture_server.wait_for(1, timeout=30)
    finally:
        await app.stop()

    body = escalation.json
    assert body["policy"] == "high-queue-depth" and body["target"] == "sms-workers"
    assert body["reason"].endswith(f"{PROJECT}/sms-workers already at max 4 (4 replicas)")
    steps = [(s["name"], s["status"]) for s in body["steps"]]
    assert steps == [("compose.status", "ok"), ("compose.scale", "ok"), ("compose.scale", "failed")]
    assert body["steps"][1]["detail"].startswith(f"scaled {PROJECT}/sms-workers from 2 to 4 replicas")
    (evidence,) = body["evidence"]
    assert evidence["name"] == "compose.status"
    assert evidence["detail"].startswith(f"{PROJECT}/sms-workers: 2 replicas, 2 running")
    assert len(await asyncio.to_thread(replicas, docker_daemon, "sms-workers")) == 4
