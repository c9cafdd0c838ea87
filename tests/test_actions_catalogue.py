"""The catalogue: every action built from SPECS, every parameter documented, the shipped policies valid."""

from __future__ import annotations

import ast
import inspect
import textwrap

import pytest
from helpers import REPO

from remediator.actions.base import Params
from remediator.actions.catalogue import SPECS, build_actions
from remediator.actions.docker import DockerBackend
from remediator.policy.loader import load_dir
from remediator.policy.matching import match_alert
from remediator.settings import Settings


def documented_fields(model: type[Params]) -> set[str]:
    """Fields followed by a docstring in the class bodies of ``model`` and its bases."""
    found: set[str] = set()
    for cls in model.__mro__:
        if not (isinstance(cls, type) and issubclass(cls, Params)) or cls is Params:
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0]
        assert isinstance(body, ast.ClassDef)
        for field, after in zip(body.body, body.body[1:], strict=False):
            if (
                isinstance(field, ast.AnnAssign)
                and isinstance(field.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                found.add(field.target.id)
    return found


def test_build_actions_builds_every_spec() -> None:
    backend = DockerBackend("unix:///nonexistent.sock", timeout_s=1, threads=1)
    try:
        actions = build_actions(
            backend, Settings(postgres={"targets": {"orders-db": {"dsn": "postgresql://x@h/db"}}})
        )
        assert set(actions) == set(SPECS)
        assert set(build_actions(backend)) == set(SPECS)
    finally:
        backend.close()
    assert {a.backend for a in actions.values()} == {"docker", "postgres", "http"}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_params_are_strict_frozen_and_every_field_is_documented(name: str) -> None:
    model = SPECS[name].params
    assert issubclass(model, Params)
    assert model.model_config.get("extra") == "forbid" and model.model_config.get("frozen") is True
    missing = set(model.model_fields) - documented_fields(model)
    assert not missing, f"{name}: fields without a docstring: {sorted(missing)}"


def test_the_shipped_policies_take_their_alerts() -> None:
    policies = {p.name: p for p in load_dir(REPO / "policies", SPECS)}
    assert {"database-down", "high-error-rate", "high-queue-depth", "pool-exhausted"} <= set(policies)

    # The labels deploy/prometheus/rules.test.yml expects HighQueueDepth to carry.
    queue = match_alert(
        list(policies.values()),
        {"alertname": "HighQueueDepth", "severity": "warning", "queue": "sms", "service": "sms-workers"},
    )
    assert queue is not None and queue.policy.name == "high-queue-depth" and not queue.refused
    assert queue.target == "sms-workers"
    scale = next(s for s in queue.policy.steps if s.name == "compose.scale")
    assert scale.params["max"] == 10 and scale.attempts * scale.params["by"] >= 10

    pool = match_alert(
        list(policies.values()),
        {"alertname": "PostgresPoolExhausted", "severity": "critical", "db": "orders-db"},
    )
    assert pool is not None and pool.policy.name == "pool-exhausted" and pool.target == "orders-db"
    assert [s.name for s in pool.policy.steps] == [
        "postgres.activity",
        "postgres.terminate_idle",
        "postgres.cancel_long_queries",
        "oncall",
    ]

    errors = policies["high-error-rate"]
    assert [s.name for s in errors.steps] == [
        "container.logs",
        "container.restart",
        "compose.scale",
        "oncall",
    ]
    database = policies["database-down"]
    restart = next(s for s in database.steps if s.name == "container.restart")
    assert restart.verify is not None and restart.verify.prometheus is not None
    assert [s.kind for s in database.steps] == ["diagnose", "act", "escalate"]
