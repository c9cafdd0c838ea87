"""A rig for engine tests: the real intake, runner, gate, escalator and SQLite store, with recording
doubles for the backend action and the notifier, and an injected clock."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from helpers import FakeClock

from remediator.actions.base import Params, ProbeResult
from remediator.actions.docker import LogsParams, RestartParams
from remediator.domain.alerts import Notification
from remediator.domain.policies import Policy
from remediator.engine.escalate import Escalator
from remediator.engine.gate import Gate
from remediator.engine.intake import Intake
from remediator.engine.outbox import Outbox
from remediator.engine.runner import RetryPolicy, Runner
from remediator.errors import NotifyError
from remediator.escalation.log import LogNotifier
from remediator.metrics import Metrics
from remediator.settings import GuardSettings
from remediator.store.sqlite import SqliteStore


@dataclass
class RecordingAction:
    name: str
    kind: Literal["act", "diagnose"]
    params_model: type[Params]
    backend: str = "test"
    failures: list[Exception] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)

    async def run(self, target: str, params: Params, host: str = "default") -> str:
        self.calls.append(target)
        self.hosts.append(host)
        if self.failures:
            raise self.failures.pop(0)
        return f"{self.name} done on {target}"


@dataclass
class RecordingNotifier:
    name: str = "oncall"
    fail_first: int = 0
    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    attempts: int = 0

    async def send(self, payload: dict[str, Any], dedup_key: str) -> None:
        self.attempts += 1
        if self.attempts <= self.fail_first:
            raise NotifyError("down")
        self.sent.append((dedup_key, payload))

    async def close(self) -> None:
        return None


def make_policy(
    attempts: int = 2,
    within: float = 0.3,
    allow: str = "db",
    name: str = "database-down",
    alertname: str = "DatabaseDown",
    **extra: Any,
) -> Policy:
    return Policy.model_validate(
        {
            **extra,
            "name": name,
            "match": [f"alertname = {alertname}"],
            "target": {"kind": "container", "from_label": "container", "allow": [allow]},
            "steps": [
                {"diagnose": "container.logs"},
                {"act": "container.restart", "verify": {"resolved_within_s": within}, "attempts": attempts},
                {"escalate": "oncall"},
            ],
        }
    )


@dataclass
class Rig:
    store: SqliteStore
    intake: Intake
    runner: Runner
    escalator: Escalator
    restart: RecordingAction
    logs: RecordingAction
    notifier: RecordingNotifier
    metrics: Metrics
    gate: Gate
    clock: FakeClock

    def send(self, *alerts: dict[str, Any]) -> None:
        body = {"version": "4", "status": alerts[0]["status"], "alerts": list(alerts)}
        self.intake.submit(0, Notification.model_validate(body))

    async def settle(self) -> None:
        await self.intake.join()


async def build(
    tmp_path: Path,
    policy: Policy,
    notifier: RecordingNotifier | None = None,
    guards: GuardSettings | None = None,
    policies: list[Policy] | None = None,
    probes: dict[str, Any] | None = None,
) -> Rig:
    store = SqliteStore(tmp_path / "s.sqlite3")
    await store.open()
    metrics = Metrics()
    restart = RecordingAction("container.restart", "act", RestartParams)
    logs = RecordingAction("container.logs", "diagnose", LogsParams)
    notifier = notifier or RecordingNotifier()
    clock = FakeClock()
    gate = Gate(store, guards or GuardSettings(), metrics, clock)
    await gate.load()
    outbox = Outbox(
        store,
        {"oncall": notifier},
        LogNotifier(),
        gate.circuits,
        metrics,
        clock,
        4,
        0.05,
        backoff_initial_s=0.01,
    )
    escalator = Escalator(store, outbox, metrics, clock)
    runner = Runner(
        store,
        {a.name: a for a in (restart, logs)},
        probes or {},
        gate,
        escalator,
        metrics,
        clock,
        RetryPolicy(3, 0.01, 0.02),
        poll_s=0.05,
    )
    intake = Intake(store, policies or [policy], runner, escalator, metrics, clock)
    return Rig(store, intake, runner, escalator, restart, logs, notifier, metrics, gate, clock)


async def close_all(made: list[Rig]) -> None:
    for rig in made:
        worker = getattr(rig, "worker", None)
        if worker is not None:
            worker.cancel()
        await rig.runner.drain(0)
        await rig.escalator.drain(0)
        await rig.store.close()


async def start(rigs: list[Rig], tmp_path: Path, policy: Policy, **kw: Any) -> Rig:
    rig = await build(tmp_path, policy, **kw)
    rigs.append(rig)
    rig.worker = asyncio.create_task(rig.intake.run())  # type: ignore[attr-defined]
    return rig


@dataclass
class ScriptedProbe:
    """A verification/floor check whose answers the test scripts: True, False or None (no data)."""

    answers: list[bool | None]
    seen: list[Any] = field(default_factory=list)

    async def check(self, spec: Any) -> ProbeResult:
        self.seen.append(spec)
        healthy = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return ProbeResult(healthy, {True: "holds", False: "does not hold", None: "no series"}[healthy])
