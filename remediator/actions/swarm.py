"""Docker Swarm services: a bounded change of the replica count, and a rollback to the previous spec.

Swarm keeps a service's desired state itself, so these actions only change the spec through the Engine API
of a manager node and leave the convergence to Swarm; the step's verification says whether it worked. A
rollback is Swarm's own (``docker service rollback``): the service's PreviousSpec becomes its spec again.

A target names a service exactly. ``services.get`` (``GET /services/{id}``) also takes an ID or any unique ID
prefix, so it is never called with a target: the service is found in the listing by its whole name, and every
call after that (update, rollback, tasks) names it by its full ID.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from remediator.actions.base import Params
from remediator.actions.compose import ScaleParams, plan_scale
from remediator.actions.docker import DockerHosts
from remediator.errors import PermanentActionError
from remediator.settings import DEFAULT_DOCKER_HOST


class SwarmScaleParams(ScaleParams):
    """``by``, ``min`` and ``max`` as for ``compose.scale``."""


class NoParams(Params):
    """This action takes no parameters."""


def _service(client: Any, target: str) -> Any:
    # The name filter matches name prefixes (never IDs): keep only the service with exactly this name.
    for service in client.services.list(filters={"name": target}):
        if service.name == target:
            return service
    raise PermanentActionError(f"no such swarm service: {target}")


def _replicas(spec: dict[str, Any], target: str) -> int:
    mode = spec.get("Mode") or {}
    if "Replicated" not in mode:
        raise PermanentActionError(
            f"swarm service {target} is not replicated ({', '.join(mode) or 'no mode'})"
        )
    return int(mode["Replicated"].get("Replicas", 0))


# Swarm bumps a service's version while it applies an update; a change made with the version read a moment
# before is refused as "out of sequence". Reading again and retrying at once is what the CLI would need too.
_SEQUENCE_TRIES = 5


def _updating(client: Any, target: str, change: Callable[[Any], str]) -> str:
    """Read the service and apply ``change`` to it, again from a fresh read when Swarm moved in between."""
    for attempt in range(_SEQUENCE_TRIES):
        service = _service(client, target)
        try:
            return change(service)
        except Exception as exc:
            if "out of sequence" not in str(exc) or attempt == _SEQUENCE_TRIES - 1:
                raise
    raise AssertionError("unreachable")


def _image(spec: dict[str, Any]) -> str:
    image = str(spec.get("TaskTemplate", {}).get("ContainerSpec", {}).get("Image", "?"))
    return image.split("@", 1)[0]  # the digest makes every line unreadable and says nothing more here


@dataclass(frozen=True)
class SwarmScale:
    """``swarm.scale``: change a replicated service's replica count by a step, within [min, max]."""

    backend_: DockerHosts
    name: str = "swarm.scale"
    kind: Literal["act", "diagnose"] = "act"
    backend: str = "docker"
    params_model: type[Params] = SwarmScaleParams

    async def run(self, target: str, params: Params, host: str = DEFAULT_DOCKER_HOST) -> str:
        assert isinstance(params, SwarmScaleParams)

        def scale(service: Any) -> str:
            # Counted on every read: a retry after "out of sequence" never goes past max on a stale count.
            current = _replicas(service.attrs["Spec"], target)
            desired = plan_scale(current, params, f"swarm service {target}")
            service.scale(desired)
            return (
                f"scaled swarm service {target} from {current} to {desired} replicas "
                f"(min {params.min}, max {params.max})"
            )

        return await self.backend_.on(host).call(target, lambda client: _updating(client, target, scale))


@dataclass(frozen=True)
class SwarmRollback:
    """``swarm.rollback``: roll a service back to its previous spec (image, replicas, everything)."""

    backend_: DockerHosts
    name: str = "swarm.rollback"
    kind: Literal["act", "diagnose"] = "act"
    backend: str = "docker"
    params_model: type[Params] = NoParams

    async def run(self, target: str, params: Params, host: str = DEFAULT_DOCKER_HOST) -> str:
        def rollback(service: Any) -> str:
            client = service.client
            spec, previous = service.attrs["Spec"], service.attrs.get("PreviousSpec")
            if not previous:
                raise PermanentActionError(f"swarm service {target} has no previous spec to roll back to")
            api = client.api
            # The SDK has no rollback call; this is the request `docker service rollback` makes.
            response = api._post_json(
                api._url("/services/{0}/update", service.id),
                data=spec,
                params={"version": service.version, "rollback": "previous"},
            )
            api._raise_for_status(response)
            changes = []
            if _image(spec) != _image(previous):
                changes.append(f"image {_image(spec)} -> {_image(previous)}")
            before, after = spec.get("Mode", {}).get("Replicated"), previous.get("Mode", {}).get("Replicated")
            if before and after and before.get("Replicas") != after.get("Replicas"):
                changes.append(f"replicas {before.get('Replicas')} -> {after.get('Replicas')}")
            return f"rolling back swarm service {target} to its previous spec" + (
                f" ({', '.join(changes)})" if changes else ""
            )

        return await self.backend_.on(host).call(target, lambda client: _updating(client, target, rollback))


@dataclass(frozen=True)
class SwarmStatus:
    """``swarm.status``: desired and running replicas, the update state and the latest task errors."""

    backend_: DockerHosts
    name: str = "swarm.status"
    kind: Literal["act", "diagnose"] = "diagnose"
    backend: str = "docker"
    params_model: type[Params] = NoParams

    async def run(self, target: str, params: Params, host: str = DEFAULT_DOCKER_HOST) -> str:
        def status(client: Any) -> str:
            service = _service(client, target)
            spec = service.attrs["Spec"]
            mode = spec.get("Mode") or {}
            desired = mode["Replicated"].get("Replicas") if "Replicated" in mode else "global"
            tasks = service.tasks()
            states: dict[str, int] = {}
            # The current tasks only; the ones Swarm already replaced show up below, by their errors.
            for task in tasks:
                if task.get("DesiredState") != "running":
                    continue
                state = task.get("Status", {}).get("State", "?")
                states[state] = states.get(state, 0) + 1
            update = service.attrs.get("UpdateStatus") or {}
            lines = [
                f"swarm service {target}: desired={desired} image={_image(spec)} "
                + " ".join(f"{k}={v}" for k, v in sorted(states.items())),
            ]
            if update:
                lines.append(f"  update: {update.get('State')} {update.get('Message', '')}".rstrip())
            failed = sorted(
                (t for t in tasks if t.get("Status", {}).get("Err")),
                key=lambda t: str(t.get("UpdatedAt", "")),
                reverse=True,
            )
            for task in failed[:5]:
                lines.append(
                    f"  task {task['ID'][:12]} {task['Status'].get('State')}: {task['Status']['Err']}"
                )
            return "\n".join(lines)

        return await self.backend_.on(host).call(target, status)
