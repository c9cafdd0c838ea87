"""swarm.scale, swarm.rollback and swarm.status on a one-node Swarm.

The swarm lives on a private daemon of this module, so the session's daemon never becomes a manager.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import docker.errors
import pytest
from realparts import DockerDaemon

from remediator.actions.docker import DockerBackend
from remediator.actions.swarm import NoParams, SwarmRollback, SwarmScale, SwarmScaleParams, SwarmStatus
from remediator.errors import PermanentActionError

pytestmark = pytest.mark.realparts


@pytest.fixture(scope="module")
def swarm() -> Iterator[DockerDaemon]:
    daemon = DockerDaemon()
    try:
        daemon.client.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:0")
        yield daemon
    finally:
        try:
            # Tasks would be restarted while the daemon stops: leave first, then close.
            daemon.client.swarm.leave(force=True)
        finally:
            daemon.close()


@pytest.fixture
def backend(swarm: DockerDaemon) -> Iterator[DockerBackend]:
    b = DockerBackend(swarm.host, timeout_s=20, threads=2)
    yield b
    b.close()


def create_service(swarm: DockerDaemon, name: str, **kwargs: Any) -> None:
    for old in swarm.client.services.list(filters={"name": name}):
        old.remove()
    swarm.client.services.create(
        swarm.image,
        ["/bin/busybox", "sleep", "100000"],
        name=name,
        networks=["host"],
        init=True,
        stop_grace_period=1_000_000_000,  # 1 s, in nanoseconds
        **kwargs,
    )


def spec(swarm: DockerDaemon, name: str) -> dict[str, Any]:
    service = swarm.client.services.get(name)
    attrs: dict[str, Any] = service.attrs
    return attrs


async def test_scales_a_service_within_bounds_and_rolls_it_back(
    swarm: DockerDaemon, backend: DockerBackend
) -> None:
    await asyncio.to_thread(create_service, swarm, "workers", mode={"Replicated": {"Replicas": 1}})
    scale = SwarmScale(backend)
    detail = await scale.run("workers", SwarmScaleParams(by=1, max=3))
    assert detail == "scaled swarm service workers from 1 to 2 replicas (min 1, max 3)"
    detail = await scale.run("workers", SwarmScaleParams(by=4, max=3))
    assert detail == "scaled swarm service workers from 2 to 3 replicas (min 1, max 3)"
    with pytest.raises(PermanentActionError, match="swarm service workers already at max 3 \\(3 replicas\\)"):
        await scale.run("workers", SwarmScaleParams(by=1, max=3))
    attrs = await asyncio.to_thread(spec, swarm, "workers")
    assert attrs["Spec"]["Mode"] == {"Replicated": {"Replicas": 3}}
    assert attrs["PreviousSpec"]["Mode"] == {"Replicated": {"Replicas": 2}}

    detail = await SwarmRollback(backend).run("workers", NoParams())
    assert detail == "rolling back swarm service workers to its previous spec (replicas 3 -> 2)"
    attrs = await asyncio.to_thread(spec, swarm, "workers")
    assert attrs["Spec"]["Mode"] == {"Replicated": {"Replicas": 2}}
    assert attrs["UpdateStatus"]["State"].startswith("rollback")

    status = await SwarmStatus(backend).run("workers", NoParams())
    assert status.startswith("swarm service workers: desired=2 image=remediator-test/busybox:latest")
    assert "update: rollback_" in status


async def test_scaling_down_stops_at_min(swarm: DockerDaemon, backend: DockerBackend) -> None:
    await asyncio.to_thread(create_service, swarm, "shrink", mode={"Replicated": {"Replicas": 2}})
    scale = SwarmScale(backend)
    detail = await scale.run("shrink", SwarmScaleParams(by=-3, min=1, max=5))
    assert detail == "scaled swarm service shrink from 2 to 1 replicas (min 1, max 5)"
    with pytest.raises(PermanentActionError, match="already at min 1"):
        await scale.run("shrink", SwarmScaleParams(by=-1, min=1, max=5))


async def test_what_cannot_be_scaled_or_rolled_back_is_a_permanent_error(
    swarm: DockerDaemon, backend: DockerBackend, docker_daemon: DockerDaemon
) -> None:
    await asyncio.to_thread(create_service, swarm, "fresh", mode={"Replicated": {"Replicas": 0}})
    with pytest.raises(PermanentActionError, match="fresh has no previous spec to roll back to"):
        await SwarmRollback(backend).run("fresh", NoParams())
    # The name filter matches prefixes; "fres" must not find "fresh".
    with pytest.raises(PermanentActionError, match="no such swarm service: fres"):
        await SwarmScale(backend).run("fres", SwarmScaleParams(max=3))
    await asyncio.to_thread(create_service, swarm, "everywhere", mode={"Global": {}})
    with pytest.raises(PermanentActionError, match="everywhere is not replicated \\(Global\\)"):
        await SwarmScale(backend).run("everywhere", SwarmScaleParams(max=3))

    # A daemon that is not a swarm manager answers 503; retrying cannot make it one.
    plain = DockerBackend(docker_daemon.host, timeout_s=20, threads=1)
    try:
        with pytest.raises(PermanentActionError, match="not a swarm manager"):
            await SwarmScale(plain).run("workers", SwarmScaleParams(max=3))
    finally:
        plain.close()


async def test_a_service_is_found_by_its_whole_name_never_by_an_id_or_id_prefix(
    swarm: DockerDaemon, backend: DockerBackend
) -> None:
    """``services.get`` (GET /services/{id}) takes a name, an ID or an ID prefix; the actions never use it with
    a target, so neither an ID prefix nor a full ID nor a name prefix reaches another service."""
    await asyncio.to_thread(create_service, swarm, "tr-billing", mode={"Replicated": {"Replicas": 1}})
    before = await asyncio.to_thread(spec, swarm, "tr-billing")
    service_id = str(before["ID"])

    def unique_prefix() -> str:
        # The shortest prefix the daemon's own lookup takes to this service, and no service's name.
        for n in range(2, 20):
            prefix = service_id[:n]
            if swarm.client.services.list(filters={"name": prefix}):
                continue
            try:
                if swarm.client.services.get(prefix).id == service_id:
                    return prefix
            except docker.errors.APIError:
                continue  # ambiguous: another service's ID starts the same way
        raise AssertionError(f"no unique prefix for {service_id}")

    prefix = await asyncio.to_thread(unique_prefix)
    for loose in (prefix, service_id, "tr-bill"):
        with pytest.raises(PermanentActionError, match=f"no such swarm service: {loose}"):
            await SwarmScale(backend).run(loose, SwarmScaleParams(max=3))
        with pytest.raises(PermanentActionError, match=f"no such swarm service: {loose}"):
            await SwarmRollback(backend).run(loose, NoParams())
        with pytest.raises(PermanentActionError, match=f"no such swarm service: {loose}"):
            await SwarmStatus(backend).run(loose, NoParams())
    after = await asyncio.to_thread(spec, swarm, "tr-billing")
    assert after["Version"] == before["Version"]
    assert after["Spec"]["Mode"] == {"Replicated": {"Replicas": 1}}


async def test_a_swarm_is_reached_through_the_manager_host_the_incident_names(
    swarm: DockerDaemon, docker_daemon: DockerDaemon
) -> None:
    """A fleet: the swarm's manager is one named host among others; swarm actions go to it, and to no other."""
    from remediator.actions.fleet import DockerFleet

    await asyncio.to_thread(create_service, swarm, "fleet-workers", mode={"Replicated": {"Replicas": 1}})
    fleet = DockerFleet(
        {
            "manager": DockerBackend(swarm.host, timeout_s=20, threads=1, host_name="manager"),
            "plain": DockerBackend(docker_daemon.host, timeout_s=20, threads=1, host_name="plain"),
        }
    )
    try:
        detail = await SwarmScale(fleet).run("fleet-workers", SwarmScaleParams(by=1, max=3), host="manager")
        assert detail == "scaled swarm service fleet-workers from 1 to 2 replicas (min 1, max 3)"
        status = await SwarmStatus(fleet).run("fleet-workers", NoParams(), host="manager")
        assert status.startswith("swarm service fleet-workers: desired=2")
        # The same request on the host that is no swarm manager is refused there; nothing reaches the swarm.
        with pytest.raises(PermanentActionError, match="not a swarm manager"):
            await SwarmScale(fleet).run("fleet-workers", SwarmScaleParams(by=1, max=3), host="plain")
        with pytest.raises(PermanentActionError, match="not configured"):
            await SwarmRollback(fleet).run("fleet-workers", NoParams(), host="elsewhere")
        attrs = await asyncio.to_thread(spec, swarm, "fleet-workers")
        assert attrs["Spec"]["Mode"] == {"Replicated": {"Replicas": 2}}
    finally:
        fleet.close()
