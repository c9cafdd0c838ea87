"""``docker.prune``: a bounded cleanup of one Docker host for a disk that is filling up (DiskSpaceLow).

The runbooks' answer to a full disk is ``docker system prune -f``, two of them with ``-a --volumes``, which also
deletes the volumes of stopped containers: a database stopped at that moment loses its data. This action does
the safe part through the Engine API's prune endpoints, in stages ordered from the cheapest to lose to the
dearest, each with filters:

1. build cache (``POST /build/prune``; ``keep_storage`` leaves that many bytes of it);
2. stopped containers created over ``containers_min_age_s`` ago (``POST /containers/prune``, ``until``);
3. dangling images, then (4.) unused images, created over ``images_min_age_s`` ago (``POST /images/prune``);
5. volumes, only when the policy opts in with ``volumes: {label: ...}``: only unused volumes carrying that label.

Anything carrying the ``keep_label`` (``remediator.keep``) is never pruned (``label!=`` on every stage that
takes labels). Docker's prune endpoints never remove what a container uses (an image of any container,
running or stopped, a volume mounted by any container, a running container), and nothing here forces anything.

The per-run cap: the stages run in that order and the action stops after the first stage that brought the bytes
reclaimed to ``stop_after_bytes``; a stage itself removes everything its filters select (the endpoints take no
count). The bytes reclaimed per stage are the evidence. Finding nothing to reclaim is a permanent failure, so
the ladder goes on to a person at once instead of waiting for a verification that cannot succeed.

The target is a Docker host (target kind ``docker-host``), named by an alert label and admitted by the allow
list like any target. The name must be the name the Docker daemon reports for itself (``docker info``'s
``Name``, its hostname): an alert about another host is refused before anything is removed, since this
remediator's Docker is not that host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from remediator.actions.base import Params
from remediator.actions.docker import DockerHosts, before_mutation
from remediator.errors import PermanentActionError

# A label key, or key=value, as Docker filters take them; fixed in the policy, never from an alert.
_LABEL = r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,127}(=[A-Za-z0-9_.\-/:]{0,255})?$"


class VolumeOptIn(Params):
    """Volumes are pruned only when a policy says so, and then only unused volumes carrying this label."""

    label: str = Field(pattern=_LABEL)
    """``key`` or ``key=value``: only unused volumes with this label are removed (named or anonymous)."""


class PruneParams(Params):
    build_cache: bool = True
    """Prune the build cache (stage 1)."""
    build_cache_keep_bytes: int = Field(default=0, ge=0)
    """Bytes of build cache to keep (Docker's ``keep-storage``); 0 removes all of it that is unused."""
    stopped_containers: bool = True
    """Remove stopped containers (stage 2). Their named volumes stay: container prune never removes one."""
    containers_min_age_s: int = Field(default=86_400, ge=0, le=365 * 86_400)
    """Only containers created at least this long ago (Docker's ``until`` filter)."""
    dangling_images: bool = True
    """Remove dangling (untagged) images that no container uses (stage 3)."""
    unused_images: bool = True
    """Remove tagged images that no container (running or stopped) uses (stage 4). Set it false where a
    rollback needs the previous image on the host and the registry may be unreachable during an incident."""
    images_min_age_s: int = Field(default=86_400, ge=0, le=365 * 86_400)
    """Only images created at least this long ago, dangling or not (``until``)."""
    keep_label: str = Field(default="remediator.keep", pattern=_LABEL)
    """Containers, images and volumes carrying this label are never pruned (``label!=``)."""
    volumes: VolumeOptIn | None = None
    """Unset: volumes are never touched. ``{label: backup=disposable}``: unused volumes with that label are
    removed, as the last stage."""
    stop_after_bytes: int = Field(default=1 << 30, ge=1)
    """The per-run cap: no further stage runs once this many bytes were reclaimed."""
    timeout_s: int = Field(default=120, ge=1, le=1800)
    """Seconds the prune requests may take together, beyond the Docker client's own timeout."""


Stage = Literal["build cache", "stopped containers", "dangling images", "unused images", "volumes"]


@dataclass(frozen=True)
class StageResult:
    stage: Stage
    items: int
    reclaimed: int

    def __str__(self) -> str:
        return f"{self.stage}: {self.items} removed, {_size(self.reclaimed)}"


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit} ({n} bytes)"
    return f"{n} bytes"


def _count(answer: dict[str, Any], key: str) -> int:
    return len(answer.get(key) or [])


def _reclaimed(answer: dict[str, Any]) -> int:
    return int(answer.get("SpaceReclaimed") or 0)


def _stages(params: PruneParams) -> list[tuple[Stage, Any]]:
    """(stage, fn(client) -> StageResult) in the order they run; only the stages the policy enables."""
    keep = f"{params.keep_label}"
    stages: list[tuple[Stage, Any]] = []

    if params.build_cache:

        def build_cache(client: Any) -> StageResult:
            before_mutation()
            answer = client.api.prune_builds(keep_storage=params.build_cache_keep_bytes or None)
            return StageResult("build cache", _count(answer, "CachesDeleted"), _reclaimed(answer))

        stages.append(("build cache", build_cache))
    if params.stopped_containers:

        def containers(client: Any) -> StageResult:
            filters = {"until": f"{params.containers_min_age_s}s", "label!": [keep]}
            before_mutation()
            answer = client.api.prune_containers(filters=filters)
            return StageResult("stopped containers", _count(answer, "ContainersDeleted"), _reclaimed(answer))

        stages.append(("stopped containers", containers))

    def images(dangling: bool, stage: Stage) -> Any:
        def prune(client: Any) -> StageResult:
            filters = {"dangling": dangling, "until": f"{params.images_min_age_s}s", "label!": [keep]}
            before_mutation()
            answer = client.api.prune_images(filters=filters)
            return StageResult(stage, _count(answer, "ImagesDeleted"), _reclaimed(answer))

        return prune

    if params.dangling_images:
        stages.append(("dangling images", images(True, "dangling images")))
    if params.unused_images:
        stages.append(("unused images", images(False, "unused images")))
    if params.volumes is not None:
        label = params.volumes.label

        def volumes(client: Any) -> StageResult:
            # Both filters must hold; the opt-in label is required by the schema, so no unlabelled volume
            # is ever selected. Docker never prunes a volume a container (even a stopped one) mounts.
            filters = {"label": [label], "label!": [keep]}
            before_mutation()
            answer = client.api.prune_volumes(filters=filters)
            return StageResult("volumes", _count(answer, "VolumesDeleted"), _reclaimed(answer))

        stages.append(("volumes", volumes))
    return stages


@dataclass(frozen=True)
class DockerPrune:
    """``docker.prune``: reclaim disk space on the Docker host the alert names, in bounded stages."""

    backend_: DockerHosts
    name: str = "docker.prune"
    kind: Literal["act", "diagnose"] = "act"
    backend: str = "docker"
    params_model: type[Params] = PruneParams

    async def run(self, target: str, params: Params, host: str = "default") -> str:
        """Prune the Docker host ``host`` (the incident's), whose daemon must call itself ``target``."""
        assert isinstance(params, PruneParams)
        stages = _stages(params)

        def host_name(client: Any) -> str:
            return str(client.info().get("Name") or "")

        name = await self.backend_.on(host).call(target, host_name)
        if name != target:
            raise PermanentActionError(
                f"the alert names Docker host {target!r}, but this remediator's Docker is {name!r}: "
                "nothing pruned"
            )
        done: list[StageResult] = []
        total = 0
        for _stage, fn in stages:
            # One call per stage: each is fenced on its own (a lease lost mid-run stops before the next).
            result: StageResult = await self.backend_.on(host).call(
                target, fn, extra_timeout_s=params.timeout_s
            )
            done.append(result)
            total += result.reclaimed
            if total >= params.stop_after_bytes:
                break
        skipped = [s for s, _ in stages[len(done) :]]
        lines = [f"reclaimed {_size(total)} on {target}", *(f"  {r}" for r in done)]
        if skipped:
            lines.append(
                f"  not run (stop_after_bytes {_size(params.stop_after_bytes)} reached): {', '.join(skipped)}"
            )
        if params.volumes is None:
            lines.append("  volumes: never touched (the policy does not opt in)")
        text = "\n".join(lines)
        if total == 0 and sum(r.items for r in done) == 0:
            raise PermanentActionError(f"nothing to prune on {target}: {text}")
        return text
