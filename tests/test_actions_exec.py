"""container.exec on the private Docker daemon: a fixed argv, run without a shell."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from realparts import DockerDaemon

from remediator.actions.docker import ContainerExec, DockerBackend, ExecParams
from remediator.errors import PermanentActionError

pytestmark = pytest.mark.realparts


@pytest.fixture
def backend(docker_daemon: DockerDaemon) -> Iterator[DockerBackend]:
    b = DockerBackend(docker_daemon.host, timeout_s=20, threads=2)
    yield b
    b.close()
    # The session's daemon is shared: leave no container of this module behind.
    for container in docker_daemon.client.containers.list(all=True, filters={"name": "^/exec-"}):
        container.remove(force=True)


async def test_runs_the_argv_as_is_without_a_shell(
    docker_daemon: DockerDaemon, backend: DockerBackend
) -> None:
    await asyncio.to_thread(docker_daemon.run_container, "exec-web")
    action = ContainerExec(backend)
    detail = await action.run("exec-web", ExecParams(argv=("/bin/busybox", "echo", "$(id)", ";", "reboot")))
    assert detail == "ran `/bin/busybox echo $(id) ; reboot` in exec-web (exit 0)\n$(id) ; reboot"

    detail = await action.run("exec-web", ExecParams(argv=("/bin/busybox", "id", "-u"), user="65534"))
    assert detail.endswith("\n65534")
    detail = await action.run("exec-web", ExecParams(argv=("/bin/busybox", "pwd"), workdir="/bin"))
    assert detail.endswith("\n/bin")


async def test_a_failing_command_or_a_stopped_container_is_permanent(
    docker_daemon: DockerDaemon, backend: DockerBackend
) -> None:
    await asyncio.to_thread(docker_daemon.run_container, "exec-fail")
    action = ContainerExec(backend)
    failing = ("/bin/busybox", "sh", "-c", "echo config invalid >&2; exit 3")
    with pytest.raises(PermanentActionError, match="exited 3: config invalid"):
        await action.run("exec-fail", ExecParams(argv=failing))
    with pytest.raises(PermanentActionError, match=r"exited 126: OCI runtime exec failed.*no such file"):
        await action.run("exec-fail", ExecParams(argv=("/no/such/program",)))

    await asyncio.to_thread(lambda: docker_daemon.client.containers.get("exec-fail").stop(timeout=1))
    with pytest.raises(PermanentActionError, match="exec-fail is exited: cannot run `/bin/busybox true`"):
        await action.run("exec-fail", ExecParams(argv=("/bin/busybox", "true")))
    with pytest.raises(PermanentActionError, match="no such container: exec-nothing"):
        await action.run("exec-nothing", ExecParams(argv=("/bin/busybox", "true")))


def test_the_argv_is_a_list_fixed_in_the_policy() -> None:
    with pytest.raises(ValueError, match="argv"):
        ExecParams.model_validate({"argv": []})
    with pytest.raises(ValueError, match="argv"):
        ExecParams.model_validate({"argv": "nginx -s reload"})
    with pytest.raises(ValueError, match="user"):
        ExecParams(argv=("true",), user="root; rm -rf /")
