"""Docker Compose services scaled through the Docker Engine API, as compose itself does it.

Where remediator runs there is usually no compose binary and no project file, and neither is needed: a
Compose service is the set of containers labelled ``com.docker.compose.project``, ``.service`` and
``.container-number``. A new replica is a copy of an existing replica's configuration (its image, command,
environment, labels with the next number, host config and networks), created and started through the API;
scaling down stops and removes the highest numbers, as ``docker compose up --scale`` does. Nothing here runs
a shell, and the project always comes from the policy, never from an alert label.

The target is the service name (a ``compose-service`` policy) or a container of the service (a ``container``
policy, e.g. "restart the web container, then add a web replica"): a name that is a service of the project
is a service, otherwise it must be a container that belongs to the project. Both lookups are exact: the
service by its label's whole value, the container by its whole name (never an ID prefix, see actions.docker);
every call after that names containers by their full IDs.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Any, Literal, Self

from pydantic import Field, model_validator

from remediator.actions.base import Params
from remediator.actions.docker import DockerHosts, container_named
from remediator.errors import PermanentActionError
from remediator.settings import DEFAULT_DOCKER_HOST

PROJECT = "com.docker.compose.project"
SERVICE = "com.docker.compose.service"
NUMBER = "com.docker.compose.container-number"
ONEOFF = "com.docker.compose.oneoff"

# Network modes that are not a network a container can hold aliases in.
_BUILTIN_NETWORKS = ("none", "host", "bridge", "default")


class ScaleParams(Params):
    """A bounded step in a replica count; shared by Compose and Swarm scaling."""

    by: int = Field(default=1, ge=-20, le=20)
    """Replicas to add (positive) or remove (negative) per run (count; not 0)."""
    min: int = Field(default=1, ge=0, le=1000)
    """Fewest replicas the action leaves (count); at it, scaling down is refused."""
    max: int = Field(ge=1, le=1000)
    """Most replicas the action makes (count); at it, scaling up is refused, so the ladder moves on."""

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.by == 0:
            raise ValueError("by must be a positive or negative step, not 0")
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self


def plan_scale(current: int, params: ScaleParams, what: str) -> int:
    """The replica count to go to from ``current``, within [min, max]; PermanentActionError when it cannot
    move in the asked direction (a retry would not either: a human or another step must take over)."""
    if params.by > 0:
        if current >= params.max:
            raise PermanentActionError(f"{what} already at max {params.max} ({current} replicas)")
        return min(current + params.by, params.max)
    if current <= params.min:
        raise PermanentActionError(f"{what} already at min {params.min} ({current} replicas)")
    return max(current + params.by, params.min)


class ComposeParams(Params):
    project: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    """The Compose project (its ``com.docker.compose.project`` label), fixed in the policy."""


class ComposeScaleParams(ScaleParams, ComposeParams):
    stop_timeout_s: int = Field(default=10, ge=0, le=600)
    """Seconds a replica removed by scaling down gets to stop before it is killed."""


@dataclass(frozen=True)
class _Replica:
    id: str
    name: str
    number: int
    status: str


def _number(labels: dict[str, str]) -> int:
    try:
        return int(labels.get(NUMBER, ""))
    except ValueError:
        return 0


def _replicas(client: Any, project: str, service: str) -> list[_Replica]:
    found = client.api.containers(
        all=True, filters={"label": [f"{PROJECT}={project}", f"{SERVICE}={service}"]}
    )
    replicas = [
        _Replica(
            id=c["Id"],
            name=(c.get("Names") or ["/"])[0].lstrip("/"),
            number=_number(c.get("Labels") or {}),
            status=str(c.get("State", "")),
        )
        for c in found
        # `docker compose run` containers are one-offs, not replicas.
        if (c.get("Labels") or {}).get(ONEOFF, "False") != "True"
    ]
    return sorted(replicas, key=lambda r: r.number)


def _resolve(client: Any, target: str, project: str) -> tuple[str, list[_Replica]]:
    """The service ``target`` names in ``project`` (itself, or the service of the container it names)."""
    replicas = _replicas(client, project, target)
    if replicas:
        return target, replicas
    # Exactly the container with this name (never an ID or an ID prefix, as Docker's own lookup would take).
    container = container_named(client, target)
    labels = (container.get("Labels") or {}) if container is not None else {}
    service = labels.get(SERVICE)
    if service and labels.get(PROJECT) == project:
        return service, _replicas(client, project, service)
    raise PermanentActionError(f"no compose service or container {target} in project {project}")


def _name_for(project: str, service: str, replicas: list[_Replica], number: int) -> str:
    """Name a new replica as the existing ones are named: compose 1 style or compose 2 style."""
    for sep in ("_", "-"):
        if all(r.name == f"{project}{sep}{service}{sep}{r.number}" for r in replicas):
            return f"{project}{sep}{service}{sep}{number}"
    names = ", ".join(r.name for r in replicas)
    raise PermanentActionError(
        f"{project}/{service} has containers named {names}: a fixed container_name cannot be scaled "
        "(compose refuses it too)"
    )


def _create_like(client: Any, template_id: str, name: str, number: int) -> str:
    """Create and start a copy of the replica ``template_id`` as replica ``number``; returns its id."""
    inspected = client.api.inspect_container(template_id)
    config: dict[str, Any] = dict(inspected["Config"])
    host_config: dict[str, Any] = dict(inspected["HostConfig"])
    try:
        tagged = client.api.inspect_image(config["Image"])["Id"]
    except Exception:
        tagged = None  # the tag is gone; the image itself is still there, held by the replica
    if tagged != inspected["Image"]:
        # The tag moved since the replica was created: a copy runs what the replica runs, not what is newer.
        config["Image"] = inspected["Image"]
    config["Labels"] = {**(config.get("Labels") or {}), NUMBER: str(number)}
    short_id = template_id[:12]
    if config.get("Hostname") == short_id:
        del config["Hostname"]  # Docker's default hostname is the container id: let the copy get its own
    config.pop("MacAddress", None)
    config["HostConfig"] = host_config
    networks: dict[str, Any] = dict(inspected.get("NetworkSettings", {}).get("Networks") or {})
    primary = str(host_config.get("NetworkMode") or "")
    template_name = inspected["Name"].lstrip("/")

    def endpoint(settings: dict[str, Any]) -> dict[str, Any]:
        # Static addresses would clash; the template's own id and name are not aliases of the copy.
        aliases = [a for a in settings.get("Aliases") or [] if a not in (short_id, template_name)]
        return {
            "Aliases": aliases or None,
            "Links": settings.get("Links"),
            "DriverOpts": settings.get("DriverOpts"),
        }

    user_networks = {
        n: s
        for n, s in networks.items()
        if n not in _BUILTIN_NETWORKS and not primary.startswith("container:")
    }
    if primary in user_networks:
        config["NetworkingConfig"] = {"EndpointsConfig": {primary: endpoint(user_networks[primary])}}
    created = client.api.create_container_from_config(config, name=name)
    new_id = str(created["Id"])
    try:
        # The API (before 1.44) takes one network at create time; the others are joined before start.
        for network, settings in user_networks.items():
            if network != primary:
                ep = endpoint(settings)
                client.api.connect_container_to_network(
                    new_id, network, aliases=ep["Aliases"], links=ep["Links"], driver_opt=ep["DriverOpts"]
                )
        client.api.start(new_id)
    except Exception as exc:
        # A replica that cannot start must not stay behind and count towards max on the next run.
        with contextlib.suppress(Exception):
            client.api.remove_container(new_id, force=True)
        if "port is already allocated" in str(exc) or "address already in use" in str(exc):
            raise PermanentActionError(
                f"{name} cannot start: the service publishes a fixed host port, so it cannot have two replicas"
            ) from exc
        raise
    return new_id


def _remove(client: Any, replica: _Replica, stop_timeout_s: int) -> None:
    try:
        client.api.stop(replica.id, timeout=stop_timeout_s)
        client.api.remove_container(replica.id)
    except Exception as exc:
        # Gone already (another run, or a person, removed it): that is what was wanted.
        if getattr(exc, "status_code", None) != 404:
            raise


@dataclass(frozen=True)
class ComposeScale:
    """``compose.scale``: add or remove replicas of a Compose service, by a step, within [min, max]."""

    backend_: DockerHosts
    name: str = "compose.scale"
    kind: Literal["act", "diagnose"] = "act"
    backend: str = "docker"
    params_model: type[Params] = ComposeScaleParams

    async def run(self, target: str, params: Params, host: str = DEFAULT_DOCKER_HOST) -> str:
        assert isinstance(params, ComposeScaleParams)
        project = params.project
        service, replicas = await self.backend_.on(host).call(target, lambda c: _resolve(c, target, project))
        what = f"{project}/{service}"
        if not replicas:
            raise PermanentActionError(f"{what} has no replica to copy from")
        current = len(replicas)
        desired = plan_scale(current, params, what)
        changed: list[str] = []
        if desired > current:
            # Container names are unique, so two runs racing for the same number cannot both create it.
            template = next((r for r in reversed(replicas) if r.status == "running"), replicas[-1])
            top = max(r.number for r in replicas)
            for number in range(top + 1, top + 1 + desired - current):
                name = _name_for(project, service, replicas, number)
                await self.backend_.on(host).call(
                    target, functools.partial(_create_like, template_id=template.id, name=name, number=number)
                )
                changed.append(name)
            verb = "created"
        else:
            for replica in sorted(replicas, key=lambda r: r.number, reverse=True)[: current - desired]:
                await self.backend_.on(host).call(
                    target,
                    functools.partial(_remove, replica=replica, stop_timeout_s=params.stop_timeout_s),
                    extra_timeout_s=params.stop_timeout_s,
                )
                changed.append(replica.name)
            verb = "removed"
        return (
            f"scaled {what} from {current} to {desired} replicas "
            f"(min {params.min}, max {params.max}); {verb} {', '.join(changed)}"
        )


@dataclass(frozen=True)
class ComposeStatus:
    """``compose.status``: the replicas of a Compose service with their state and restart count."""

    backend_: DockerHosts
    name: str = "compose.status"
    kind: Literal["act", "diagnose"] = "diagnose"
    backend: str = "docker"
    params_model: type[Params] = ComposeParams

    async def run(self, target: str, params: Params, host: str = DEFAULT_DOCKER_HOST) -> str:
        assert isinstance(params, ComposeParams)
        project = params.project

        def status(client: Any) -> str:
            service, replicas = _resolve(client, target, project)
            running = sum(r.status == "running" for r in replicas)
            lines = [f"{project}/{service}: {len(replicas)} replicas, {running} running"]
            for replica in replicas:
                state = client.api.inspect_container(replica.id)
                lines.append(
                    f"  {replica.name} {state['State'].get('Status')} "
                    f"exit_code={state['State'].get('ExitCode')} restart_count={state.get('RestartCount', 0)} "
                    f"started_at={state['State'].get('StartedAt')}"
                )
            return "\n".join(lines)

        return await self.backend_.on(host).call(target, status)
