"""A target resolves to exactly the container it names, or the action fails permanently (issues 12 and 19).

Docker's own lookup (``containers.get``, ``GET /containers/{id}/json``) also takes a full ID or any unique ID
prefix: an allowed name such as ``db`` used to restart, exec in or read the logs of whichever other container's
ID started with "db". Each test here names another container by an ID prefix (or its full ID) and checks that
nothing reached it: not restarted, no exec in it, none of its log lines in the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterator
from typing import Any

import docker.errors
import pytest
from realparts import DockerDaemon

from remediator.actions.base import Action
from remediator.actions.catalogue import build_actions
from remediator.actions.compose import ComposeParams, ComposeScaleParams
from remediator.actions.docker import DockerBackend
from remediator.errors import PermanentActionError

pytestmark = pytest.mark.realparts

SLEEP = "exec /bin/busybox sleep 100000"


@pytest.fixture
def backend(docker_daemon: DockerDaemon) -> Iterator[DockerBackend]:
    b = DockerBackend(docker_daemon.host, timeout_s=30, threads=2)
    yield b
    b.close()


@pytest.fixture
def actions(backend: DockerBackend) -> dict[str, Action]:
    return build_actions(backend)


@pytest.fixture
def made(docker_daemon: DockerDaemon) -> Iterator[list[str]]:
    """IDs of the containers a test made; removed afterwards (the session's daemon is shared)."""
    ids: list[str] = []
    yield ids
    for container_id in ids:
        with contextlib.suppress(docker.errors.NotFound):
            docker_daemon.client.api.remove_container(container_id, force=True)


def _run(docker_daemon: DockerDaemon, made: list[str], name: str, line: str, **kwargs: Any) -> str:
    # Not DockerDaemon.run_container: it first removes `containers.get(name)`, which is itself the loose lookup
    # (a name that is an ID prefix would remove the other container). A leftover is found by its exact name.
    for leftover in docker_daemon.client.api.containers(all=True, filters={"name": f"^/{name}$"}):
        if f"/{name}" in leftover["Names"]:
            docker_daemon.client.api.remove_container(leftover["Id"], force=True)
    command = ["/bin/busybox", "sh", "-c", f"echo {line}; {SLEEP}"]
    container = docker_daemon.client.containers.run(
        docker_daemon.image, command, name=name, detach=True, init=True, network_mode="none", **kwargs
    )
    made.append(container.id)
    return str(container.id)


def _unique_prefix(docker_daemon: DockerDaemon, container_id: str) -> str:
    """The shortest prefix of ``container_id`` that Docker's loose lookup takes to that container and that
    no container has as its name (Docker names have at least two characters)."""
    client = docker_daemon.client
    for length in range(2, 20):
        prefix = container_id[:length]
        if client.api.containers(all=True, filters={"name": f"^/{prefix}$"}):
            continue
        try:
            if client.api.inspect_container(prefix)["Id"] == container_id:
                return prefix
        except docker.errors.APIError:
            continue  # ambiguous: another container's ID starts the same way
    raise AssertionError(f"no unique prefix for {container_id}")


def _state(docker_daemon: DockerDaemon, container_id: str) -> tuple[str, int]:
    attrs = docker_daemon.client.api.inspect_container(container_id)
    return str(attrs["State"]["StartedAt"]), int(attrs["RestartCount"])


def _has_file(docker_daemon: DockerDaemon, container_id: str, path: str) -> bool:
    result = docker_daemon.client.containers.get(container_id).exec_run(["/bin/busybox", "test", "-e", path])
    return int(result.exit_code) == 0


async def _payments(docker_daemon: DockerDaemon, made: list[str]) -> tuple[str, str, str]:
    """A container outside every allow list, logging a secret: (its id, a name that is an ID prefix of it,
    the secret)."""
    secret = f"SECRET-LINE-{secrets.token_hex(8)}"
    payments = await asyncio.to_thread(_run, docker_daemon, made, "tr-payments", secret)
    prefix = await asyncio.to_thread(_unique_prefix, docker_daemon, payments)
    return payments, prefix, secret


async def test_restart_of_a_name_that_is_another_containers_id_prefix_is_refused(
    docker_daemon: DockerDaemon, actions: dict[str, Action], made: list[str]
) -> None:
    payments, prefix, _ = await _payments(docker_daemon, made)
    before = await asyncio.to_thread(_state, docker_daemon, payments)
    restart = actions["container.restart"]
    with pytest.raises(PermanentActionError) as refused:
        await restart.run(prefix, restart.params_model.model_validate({"timeout_s": 1}))
    assert str(refused.value) == (
        f"no such container: {prefix} (docker would match container {payments[:12]} named 'tr-payments' "
        "by ID prefix; remediator only acts on the container with exactly this name)"
    )
    assert await asyncio.to_thread(_state, docker_daemon, payments) == before


async def test_logs_of_a_name_that_is_another_containers_id_prefix_are_refused(
    docker_daemon: DockerDaemon, actions: dict[str, Action], made: list[str]
) -> None:
    payments, prefix, secret = await _payments(docker_daemon, made)
    logs = actions["container.logs"]
    with pytest.raises(PermanentActionError, match=f"no such container: {prefix} .*by ID prefix") as refused:
        await logs.run(prefix, logs.params_model.model_validate({"tail": 50}))
    assert secret not in str(refused.value)
    # The secret really is in that container's log: the test would see it leak.
    assert secret in (await asyncio.to_thread(docker_daemon.client.api.logs, payments)).decode()


async def test_exec_in_a_name_that_is_another_containers_id_prefix_is_refused(
    docker_daemon: DockerDaemon, actions: dict[str, Action], made: list[str]
) -> None:
    payments, prefix, _ = await _payments(docker_daemon, made)
    execute = actions["container.exec"]
    params = execute.params_model.model_validate({"argv": ["/bin/busybox", "touch", "/ran-here"]})
    with pytest.raises(PermanentActionError, match=f"no such container: {prefix} .*by ID prefix"):
        await execute.run(prefix, params)
    assert not await asyncio.to_thread(_has_file, docker_daemon, payments, "/ran-here")


async def test_a_full_id_is_not_a_name(
    docker_daemon: DockerDaemon, actions: dict[str, Action], made: list[str]
) -> None:
    payments, _, _ = await _payments(docker_daemon, made)
    before = await asyncio.to_thread(_state, docker_daemon, payments)
    restart = actions["container.restart"]
    with pytest.raises(PermanentActionError, match=f"no such container: {payments} .*by its full ID"):
        await restart.run(payments, restart.params_model.model_validate({"timeout_s": 1}))
    assert await asyncio.to_thread(_state, docker_daemon, payments) == before


async def test_an_exact_name_is_used_even_when_another_id_starts_with_it(
    docker_daemon: DockerDaemon, actions: dict[str, Action], made: list[str]
) -> None:
    payments, prefix, secret = await _payments(docker_daemon, made)
    named = await asyncio.to_thread(_run, docker_daemon, made, prefix, "the-named-one")
    payments_before = await asyncio.to_thread(_state, docker_daemon, payments)
    named_before = await asyncio.to_thread(_state, docker_daemon, named)

    restart, logs, execute = (
        actions["container.restart"],
        actions["container.logs"],
        actions["container.exec"],
    )
    detail = await restart.run(prefix, restart.params_model.model_validate({"timeout_s": 1}))
    assert detail.startswith(f"restarted {prefix}; running since ")
    assert (await asyncio.to_thread(_state, docker_daemon, named))[0] != named_before[0]

    detail = await logs.run(prefix, logs.params_model.model_validate({"tail": 50}))
    assert "the-named-one" in detail
    assert secret not in detail

    touch = execute.params_model.model_validate({"argv": ["/bin/busybox", "touch", "/ran-here"]})
    await execute.run(prefix, touch)
    assert await asyncio.to_thread(_has_file, docker_daemon, named, "/ran-here")
    assert not await asyncio.to_thread(_has_file, docker_daemon, payments, "/ran-here")
    assert await asyncio.to_thread(_state, docker_daemon, payments) == payments_before


async def test_compose_finds_a_service_or_container_by_its_whole_name_only(
    docker_daemon: DockerDaemon, actions: dict[str, Action], made: list[str]
) -> None:
    """Compose was exact already (label values and names are compared whole); keep it so."""
    project = "trproj"
    labels = {
        "com.docker.compose.project": project,
        "com.docker.compose.service": "trworker",
        "com.docker.compose.container-number": "1",
    }
    replica = await asyncio.to_thread(_run, docker_daemon, made, f"{project}_trworker_1", "x", labels=labels)
    prefix = await asyncio.to_thread(_unique_prefix, docker_daemon, replica)
    status, scale = actions["compose.status"], actions["compose.scale"]
    params = ComposeParams(project=project)

    detail = await status.run(f"{project}_trworker_1", params)  # the container's whole name
    assert detail.startswith(f"{project}/trworker: 1 replicas, 1 running")
    for loose in (prefix, replica, "trwork", f"{project}_trworker"):
        with pytest.raises(PermanentActionError, match=f"no compose service or container {loose} in project"):
            await status.run(loose, params)
        with pytest.raises(PermanentActionError, match=f"no compose service or container {loose} in project"):
            await scale.run(loose, ComposeScaleParams(project=project, max=3))
    found = await asyncio.to_thread(
        docker_daemon.client.api.containers,
        all=True,
        filters={"label": f"com.docker.compose.project={project}"},
    )
    assert [c["Id"] for c in found] == [replica]  # nothing was scaled
