"""A diagnosis that must pass (``must_pass: true``): its failure stops the ladder and escalates with its output;
its success lets the ladder go on; in shadow mode nobody is paged; after a restart it runs again.
(The engine rig: the real intake, runner, gate and store, recording backends. The same gate on real Docker,
with the shipped proxy-down policy, is tests/test_drills_runbooks.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from engine_rig import Rig, build, start
from helpers import alert, eventually

from remediator.domain.policies import Policy
from remediator.engine.leases import LeaseKeeper
from remediator.errors import PermanentActionError, TemporaryActionError

LOOSE = {
    "cooldown_s": 0,
    "max_actions": {"count": 100, "window_s": 3600},
    "flapping": {"count": 100, "window_s": 3600},
}


def gated(**extra: Any) -> Policy:
    return Policy.model_validate(
        {
            "name": "proxy-down",
            "match": ["alertname = DatabaseDown"],
            "target": {"kind": "container", "from_label": "container", "allow": ["db"]},
            "steps": [
                {"diagnose": "container.logs", "must_pass": True},
                {"act": "container.restart", "verify": {"resolved_within_s": 0.05}},
                {"escalate": "oncall"},
            ],
            "limits": LOOSE,
            **extra,
        }
    )


async def status(rig: Rig) -> str:
    incident = await rig.store.get_incident(1)
    return incident.status if incident is not None else ""


@pytest.mark.parametrize(
    "error", [PermanentActionError("nginx: [emerg] bad config"), TemporaryActionError("docker unreachable")]
)
async def test_a_failing_must_pass_diagnosis_stops_the_ladder_and_escalates_with_its_output(
    tmp_path: Path, rigs: list[Rig], error: Exception
) -> None:
    rig = await start(rigs, tmp_path, gated())
    rig.logs.failures = [error] * 3  # a temporary error is retried within the attempt, then counts
    rig.send(alert(container="db"))
    await eventually(lambda: rig.notifier.sent)
    assert rig.restart.calls == []
    assert await status(rig) == "escalated"
    [(_, payload)] = rig.notifier.sent
    text = str(payload)
    assert "container.logs must pass before the steps after it, and it failed" in text and str(error) in text


async def test_a_passing_must_pass_diagnosis_lets_the_ladder_go_on(tmp_path: Path, rigs: list[Rig]) -> None:
    rig = await start(rigs, tmp_path, gated())
    rig.send(alert(container="db"))
    await eventually(lambda: rig.restart.calls == ["db"])


async def test_in_shadow_mode_a_failing_gate_pages_nobody_and_the_incident_waits(
    tmp_path: Path, rigs: list[Rig]
) -> None:
    rig = await start(rigs, tmp_path, gated(mode="shadow"))
    rig.logs.failures = [PermanentActionError("bad config")]
    rig.send(alert(container="db"))
    await eventually(lambda: status(rig), timeout=5)
    await eventually(lambda: rig.runner.running == 0)
    assert await status(rig) == "waiting"
    assert rig.notifier.sent == [] and rig.restart.calls == []
    refused = [a.detail["detail"] for a in await rig.store.audit_trail(1) if a.kind == "refused"]
    assert refused and refused[0].startswith("shadow mode: would have stopped and escalated: container.logs")


def test_must_pass_belongs_to_a_diagnose_step() -> None:
    with pytest.raises(ValueError, match="must_pass belongs to a diagnose step"):
        Policy.model_validate(
            {
                "name": "x",
                "match": ["alertname = X"],
                "target": {"kind": "container", "from_label": "container", "allow": ["db"]},
                "steps": [
                    {"act": "container.restart", "verify": {"resolved_within_s": 1}, "must_pass": True}
                ],
            }
        )


async def test_after_a_crash_a_failed_must_pass_diagnosis_runs_again_and_the_act_never_does(
    tmp_path: Path, rigs: list[Rig]
) -> None:
    policy = gated()
    first = await build(tmp_path, policy)
    first.send(alert(container="db"))
    await first.intake._process([first.intake._queue.get_nowait()])
    await first.runner.drain(0)  # the "crash" right after the check failed, before the escalation was stored
    await first.store._run(lambda db: db.execute("DELETE FROM steps"))
    step_id = await first.store.step_started(1, 0, "diagnose", "container.logs", 1, 1000.0)
    await first.store.step_finished(step_id, "failed", "nginx: [emerg] bad config", 1001.0)
    await first.store.close()

    rig = await build(tmp_path, policy)
    rigs.append(rig)
    rig.logs.failures = [PermanentActionError("nginx: [emerg] still bad")]
    keeper = LeaseKeeper(rig.store, rig.runner, rig.escalator, {policy.name: policy}, "local", 15, rig.clock)
    await keeper.tick()  # the restarted replica claims what it held before the crash
    await eventually(lambda: rig.notifier.sent)
    assert rig.logs.calls == ["db"] and rig.restart.calls == []
    assert "still bad" in str(rig.notifier.sent[0][1])
