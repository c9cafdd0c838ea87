"""Every action by name, built for one set of backends; its ``params_models`` lets ``check`` validate policies."""

from __future__ import annotations

from collections.abc import Mapping

from remediator.actions.base import Action, Params
from remediator.actions.docker import (
    ContainerLogs,
    ContainerRestart,
    DockerBackend,
    LogsParams,
    RestartParams,
)

PARAMS_MODELS: Mapping[str, type[Params]] = {
    "container.restart": RestartParams,
    "container.logs": LogsParams,
}


def build_actions(docker_backend: DockerBackend) -> dict[str, Action]:
    actions: list[Action] = [ContainerRestart(docker_backend), ContainerLogs(docker_backend)]
    assert {a.name for a in actions} == set(PARAMS_MODELS), "catalogue and PARAMS_MODELS disagree"
    return {a.name: a for a in actions}
