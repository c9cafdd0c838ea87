"""Every action by name: its spec (kind, target kinds, parameters) for ``check``, and the built instances."""

from __future__ import annotations

from collections.abc import Mapping

from remediator.actions.base import Action, Probe
from remediator.actions.checks import CheckParams, ContainerCheck
from remediator.actions.compose import ComposeParams, ComposeScale, ComposeScaleParams, ComposeStatus
from remediator.actions.docker import (
    ContainerExec,
    ContainerLogs,
    ContainerRestart,
    DockerHosts,
    ExecParams,
    LogsParams,
    RestartParams,
)
from remediator.actions.http import HttpRequest, HttpRequestParams
from remediator.actions.postgres import (
    Activity,
    ActivityParams,
    CancelLongQueries,
    CancelQueriesParams,
    PostgresBackend,
    TerminateIdle,
    TerminateIdleParams,
)
from remediator.actions.probes import HttpProbe, PrometheusProbe
from remediator.actions.prune import DockerPrune, PruneParams
from remediator.actions.swarm import NoParams, SwarmRollback, SwarmScale, SwarmScaleParams, SwarmStatus
from remediator.domain.policies import ActionSpec
from remediator.settings import PostgresSettings, Settings

CONTAINER = frozenset({"container"})
# A compose action takes the service by name, or a container of it ("add a replica of this container").
COMPOSE = frozenset({"compose-service", "container"})
SWARM = frozenset({"swarm-service"})
POSTGRES = frozenset({"postgres"})
DOCKER_HOST = frozenset({"docker-host"})
# The URL is fixed in the policy, so an HTTP hook may follow any kind of target.
ANY = frozenset({"container", "compose-service", "swarm-service", "postgres", "docker-host"})

SPECS: Mapping[str, ActionSpec] = {
    "container.restart": ActionSpec("act", CONTAINER, RestartParams),
    "container.exec": ActionSpec("act", CONTAINER, ExecParams),
    "container.logs": ActionSpec("diagnose", CONTAINER, LogsParams),
    "container.check": ActionSpec("diagnose", CONTAINER, CheckParams),
    "compose.scale": ActionSpec("act", COMPOSE, ComposeScaleParams),
    "compose.status": ActionSpec("diagnose", COMPOSE, ComposeParams),
    "swarm.scale": ActionSpec("act", SWARM, SwarmScaleParams),
    "swarm.rollback": ActionSpec("act", SWARM, NoParams),
    "swarm.status": ActionSpec("diagnose", SWARM, NoParams),
    "postgres.terminate_idle": ActionSpec("act", POSTGRES, TerminateIdleParams),
    "postgres.cancel_long_queries": ActionSpec("act", POSTGRES, CancelQueriesParams),
    "postgres.activity": ActionSpec("diagnose", POSTGRES, ActivityParams),
    "http.request": ActionSpec("act", ANY, HttpRequestParams),
    "docker.prune": ActionSpec("act", DOCKER_HOST, PruneParams),
}


def build_actions(docker_backend: DockerHosts, settings: Settings | None = None) -> dict[str, Action]:
    """Every action of SPECS, on the given Docker host(s) (a DockerFleet, or one DockerBackend) and the PostgreSQL instances of ``settings``
    (none without settings: a postgres step then fails permanently, naming the missing instance)."""
    postgres = PostgresBackend(settings.postgres if settings is not None else PostgresSettings())
    actions: list[Action] = [
        ContainerRestart(docker_backend),
        ContainerExec(docker_backend),
        ContainerLogs(docker_backend),
        ComposeScale(docker_backend),
        ComposeStatus(docker_backend),
        SwarmScale(docker_backend),
        SwarmRollback(docker_backend),
        SwarmStatus(docker_backend),
        TerminateIdle(postgres),
        CancelLongQueries(postgres),
        Activity(postgres),
        HttpRequest(),
        DockerPrune(docker_backend),
        ContainerCheck(docker_backend),
    ]
    assert {a.name for a in actions} == set(SPECS), "the built actions and SPECS disagree"
    for action in actions:
        assert SPECS[action.name].kind == action.kind and SPECS[action.name].params is action.params_model
    return {a.name: a for a in actions}


def build_probes(settings: Settings | None = None) -> dict[str, Probe]:
    """The verification checks by kind: ``http`` always, ``prometheus`` when ``settings.prometheus.url`` is set."""
    probes: dict[str, Probe] = {"http": HttpProbe()}
    if settings is not None and settings.prometheus.url:
        probes["prometheus"] = PrometheusProbe(settings.prometheus.url, settings.prometheus.timeout_s)
    return probes
