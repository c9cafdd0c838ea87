"""Every action by name: its spec (kind, target kinds, parameters) for ``check``, and the built instances."""

from __future__ import annotations

from collections.abc import Mapping

from remediator.actions.base import Action, Probe
from remediator.actions.docker import (
    ContainerLogs,
    ContainerRestart,
    DockerBackend,
    LogsParams,
    RestartParams,
)
from remediator.domain.policies import ActionSpec

CONTAINER = frozenset({"container"})

SPECS: Mapping[str, ActionSpec] = {
    "container.restart": ActionSpec("act", CONTAINER, RestartParams),
    "container.logs": ActionSpec("diagnose", CONTAINER, LogsParams),
}


def build_actions(docker_backend: DockerBackend) -> dict[str, Action]:
    actions: list[Action] = [ContainerRestart(docker_backend), ContainerLogs(docker_backend)]
    assert {a.name for a in actions} == set(SPECS), "the built actions and SPECS disagree"
    for action in actions:
        assert SPECS[action.name].kind == action.kind and SPECS[action.name].params is action.params_model
    return {a.name: a for a in actions}


def build_probes() -> dict[str, Probe]:
    """The verification checks by kind (``http``, ``prometheus``)."""
    return {}
