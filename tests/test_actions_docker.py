"""Container actions against a real (private) Docker daemon, with its errors mapped at the boundary."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import docker.errors
import pytest
from realparts import DockerDaemon

from remediator.actions.docker import (
    ContainerLogs,
    ContainerRestart,
    DockerBackend,
    LogsParams,
    RestartParams,
)
from remediator.errors import PermanentActionError, TemporaryActionError


@pytest.fixture
def backend(docker_daemon: DockerDaemon) -> Iterator[DockerBackend]:
    b = DockerBackend(docker_daemon.host, timeout_s=20, threads=2)
    yield b
    b.close()


async def test_restart_restarts_a_running_container(
    docker_daemon: DockerDaemon, backend: DockerBackend
) -> None:
    await asyncio.to_thread(docker_daemon.run_container, "act-web")
    before = docker_daemon.started_at("act-web")
    detail = await ContainerRestart(backend).run("act-web", RestartParams(timeout_s=5))
    assert docker_daemon.started_at("act-web") != before
    assert detail.startswith("restarted act-web; running since ")


async def test_a_missing_container_is_a_permanent_error(backend: DockerBackend) -> None:
    with pytest.raises(PermanentActionError, match="no such container: act-nothing"):
        await ContainerRestart(backend).run("act-nothing", RestartParams())


async def test_a_container_that_cannot_start_is_a_permanent_error(
    docker_daemon: DockerDaemon, backend: DockerBackend
) -> None:
    def create() -> None:
        with contextlib.suppress(docker.errors.NotFound):
            docker_daemon.client.containers.get("act-broken").remove(force=True)
        docker_daemon.client.containers.create(docker_daemon.image, ["/nonexistent"], name="act-broken")

    await asyncio.to_thread(create)
    with pytest.raises(PermanentActionError, match=r"cannot start.*/nonexistent"):
        await ContainerRestart(backend).run("act-broken", RestartParams(timeout_s=1))


async def test_logs_give_state_restart_count_and_lines(
    docker_daemon: DockerDaemon, backend: DockerBackend
) -> None:
    await asyncio.to_thread(
        docker_daemon.run_container,
        "act-talk",
        command=["/bin/busybox", "sh", "-c", "echo hello-evidence; sleep 100000"],
    )
    detail = await ContainerLogs(backend).run("act-talk", LogsParams(tail=5))
    assert detail.startswith("state=running exit_code=0 restart_count=0")
    assert "hello-evidence" in detail


async def test_an_unreachable_daemon_is_a_temporary_error() -> None:
    backend = DockerBackend("unix:///nonexistent/docker.sock", timeout_s=5, threads=1)
    try:
        with pytest.raises(TemporaryActionError, match="docker unreachable"):
            await ContainerRestart(backend).run("web", RestartParams())
    finally:
        backend.close()


async def test_a_daemon_that_comes_back_is_used_again(
    docker_daemon: DockerDaemon, backend: DockerBackend
) -> None:
    await asyncio.to_thread(docker_daemon.run_container, "act-back")
    await asyncio.to_thread(docker_daemon.stop_daemon)
    try:
        with pytest.raises(TemporaryActionError):
            await ContainerRestart(backend).run("act-back", RestartParams(timeout_s=1))
    finally:
        await asyncio.to_thread(docker_daemon.start_daemon)
    await asyncio.to_thread(lambda: docker_daemon.client.containers.get("act-back").start())
    detail = await ContainerRestart(backend).run("act-back", RestartParams(timeout_s=1))
    assert detail.startswith("restarted act-back")
