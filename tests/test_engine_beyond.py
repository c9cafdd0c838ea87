"""Shadow mode, human approval and the healthy floor, in the ladder (recording backends, injected clock)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from engine_rig import Rig, ScriptedProbe, make_policy, start
from helpers import alert, eventually

from remediator.domain.policies import Approval, Policy, PrometheusCheck, Verify
from remediator.settings import GuardSettings

LOOSE = {
    "cooldown_s": 0,
    "max_actions": {"count": 100, "window_s": 3600},
    "flapping": {"count": 100, "window_s": 3600},
}


async def kinds(rig: Rig, incident_id: int = 1) -> list[str]:
    return [a.kind for a in await rig.store.audit_trail(incident_id)]


async def test_a_shadow_policy_acts_on_nothing_pages_nobody_and_counts(
    tmp_path: Path, rigs: list[Rig]
) -> None:
    rig = await start(rigs, tmp_path, make_policy(attempts=2, within=0.05, mode="shadow", limits=LOOSE))
    rig.send(alert(container="db"))
    await eventually(
        lambda: (
            rig.runner.running == 0
            and rig.metrics.refusals.labels("database-down", "shadow")._value.get() == 2
        )
    )
    assert rig.restart.calls == [] and rig.notifier.sent == []
    shadow = [a.detail["detail"] for a in await rig.store.audit_trail(1) if a.kind == "refused"]
    assert shadow == [
        "shadow mode: would have run container.restart on db",
        "shadow mode: would have escalated to oncall: refused (shadow): shadow mode: would have run container.restart on db",
    ]
    assert rig.logs.calls == [
        "db"
    ]  # diagnosis is read-only: it runs, so the record shows what it would have seen
    # The ladder is over: the incident waits for its alert, and no replica claims and runs it again.
    incident = await rig.store.get_incident(1)
    assert incident is not None and incident.status == "waiting"
    assert (
        await rig.store.claim_expired("other", now=rig.clock() + 3600, lease_until=rig.clock() + 3615) == []
    )


async def test_promoting_a_shadow_policy_makes_it_act(tmp_path: Path, rigs: list[Rig]) -> None:
    policy = make_policy(attempts=1, within=5, mode="shadow", allow="db-[0-9]", limits=LOOSE)
    rig = await start(rigs, tmp_path, policy)
    assert await rig.gate.control.mode(policy) == "shadow"
    await rig.gate.control.set_mode("database-down", "enforce", by="test")
    assert await rig.gate.control.mode(policy) == "enforce"
    rig.send(alert(container="db-1"))
    await eventually(lambda: rig.restart.calls == ["db-1"])
    assert "policy_mode" in [a.kind for a in await rig.store.audit_trail()]


def approval_policy(on_timeout: Literal["deny", "proceed"] = "deny", timeout_s: float = 0.3) -> Policy:
    policy = make_policy(attempts=1, within=5, limits=LOOSE)
    approval = Approval(timeout_s=timeout_s, on_timeout=on_timeout)
    steps = tuple(s.model_copy(update={"approval": approval}) if s.kind == "act" else s for s in policy.steps)
    return policy.model_copy(update={"steps": steps})


async def test_an_approval_that_times_out_denies_and_escalates(tmp_path: Path, rigs: list[Rig]) -> None:
    rig = await start(rigs, tmp_path, approval_policy("deny"))
    rig.send(alert(container="db"))
    await eventually(lambda: len(rig.notifier.sent) == 2)
    assert rig.restart.calls == []
    (ask_key, ask), (_, escalation) = rig.notifier.sent
    assert (
        re.fullmatch(r"remediator-1-1-approval-\d+-oncall", ask_key) and ask["event"] == "approval_requested"
    )
    assert ask["approve_url"].endswith("/api/incidents/1/approve") and ask["deny_url"].endswith("/deny")
    assert ask["approve_command"] == "remediator approve 1" and "approval needed" in ask["reason"]
    assert "refused (approval_denied)" in escalation["reason"]
    trail = await kinds(rig)
    assert "approval_requested" in trail and "denied" in trail
    state = await rig.gate.approvals.get(1)
    assert state is not None and state.state == "denied" and state.by.startswith("timeout")


async def test_an_approval_that_times_out_may_proceed_if_the_policy_says_so(
    tmp_path: Path, rigs: list[Rig]
) -> None:
    rig = await start(rigs, tmp_path, approval_policy("proceed"))
    rig.send(alert(container="db"))
    await eventually(lambda: rig.restart.calls == ["db"])


async def test_an_approved_step_acts_and_still_counts_against_the_budget(
    tmp_path: Path, rigs: list[Rig]
) -> None:
    policy = approval_policy("deny", timeout_s=30)
    rig = await start(rigs, tmp_path, policy, guards=GuardSettings(budget_count=0))
    rig.send(alert(container="db"))
    await eventually(lambda: rig.gate.approvals.get(1))
    assert await rig.gate.approvals.decide(1, True, by="alice")
    assert not await rig.gate.approvals.decide(1, True, by="bob")  # nothing pending any more
    await eventually(lambda: len(rig.notifier.sent) == 2)
    assert rig.restart.calls == []  # approved, but the budget (0) still refuses
    assert "refused (budget)" in rig.notifier.sent[1][1]["reason"]
    assert "approved" in await kinds(rig)


async def test_an_approved_step_acts(tmp_path: Path, rigs: list[Rig]) -> None:
    rig = await start(rigs, tmp_path, approval_policy("deny", timeout_s=30))
    rig.send(alert(container="db"))
    await eventually(lambda: rig.gate.approvals.get(1))
    await rig.gate.approvals.decide(1, True, by="alice")
    await eventually(lambda: rig.restart.calls == ["db"])


async def floor_rig(
    tmp_path: Path, rigs: list[Rig], answers: list[bool | None], hold_s: float = 0.2
) -> tuple[Rig, ScriptedProbe]:
    probe = ScriptedProbe(answers)
    floor = {"prometheus": {"query": 'count(up{job="web"} == 1) >= 2'}, "hold_s": hold_s, "interval_s": 0.05}
    rig = await start(
        rigs,
        tmp_path,
        make_policy(attempts=1, within=5, limits=LOOSE, healthy_floor=floor),
        probes={"prometheus": probe},
    )
    return rig, probe


async def test_a_healthy_floor_that_holds_lets_the_action_run(tmp_path: Path, rigs: list[Rig]) -> None:
    rig, probe = await floor_rig(tmp_path, rigs, [True])
    rig.send(alert(container="db"))
    await eventually(lambda: rig.restart.calls == ["db"])
    assert probe.seen[0].query == 'count(up{job="web"} == 1) >= 2'


async def test_a_floor_that_recovers_within_the_hold_lets_the_action_run(
    tmp_path: Path, rigs: list[Rig]
) -> None:
    rig, _ = await floor_rig(tmp_path, rigs, [False, False, True], hold_s=5)
    rig.send(alert(container="db"))
    await eventually(lambda: rig.restart.calls == ["db"])


async def test_a_floor_that_does_not_hold_holds_then_escalates(tmp_path: Path, rigs: list[Rig]) -> None:
    rig, probe = await floor_rig(tmp_path, rigs, [False])
    rig.send(alert(container="db"))
    await eventually(lambda: rig.notifier.sent)
    assert rig.restart.calls == [] and len(probe.seen) >= 2  # it re-checked during the hold
    assert "refused (healthy_floor): healthy floor does not hold" in rig.notifier.sent[0][1]["reason"]


async def test_missing_data_is_never_read_as_a_healthy_floor(tmp_path: Path, rigs: list[Rig]) -> None:
    rig, _ = await floor_rig(tmp_path, rigs, [None])
    rig.send(alert(container="db"))
    await eventually(lambda: rig.notifier.sent)
    assert rig.restart.calls == []
    assert "healthy floor cannot be evaluated (no series)" in rig.notifier.sent[0][1]["reason"]


async def test_missing_data_is_never_read_as_recovered(tmp_path: Path, rigs: list[Rig]) -> None:
    probe = ScriptedProbe([None])
    policy = make_policy(attempts=1, within=5, limits=LOOSE)
    act = policy.steps[1]
    verify = Verify(within_s=0.3, prometheus=PrometheusCheck(query="up == 1"), interval_s=0.05)
    policy = policy.model_copy(
        update={"steps": (policy.steps[0], act.model_copy(update={"verify": verify}), policy.steps[2])}
    )
    rig = await start(rigs, tmp_path, policy, probes={"prometheus": probe})
    rig.send(alert(container="db"))
    await eventually(lambda: rig.notifier.sent)
    assert rig.restart.calls == ["db"]
    assert "did not recover" in rig.notifier.sent[0][1]["reason"]
    (not_recovered,) = [a.detail for a in await rig.store.audit_trail(1) if a.kind == "not_recovered"]
    assert "no series" in not_recovered["evidence"]


async def test_an_escalate_step_in_the_middle_tells_a_person_and_the_ladder_goes_on(
    tmp_path: Path, rigs: list[Rig]
) -> None:
    from remediator.domain.policies import Policy

    policy = Policy.model_validate(
        {
            "name": "database-down",
            "match": ["alertname = DatabaseDown"],
            "target": {"kind": "container", "from_label": "container", "allow": ["db"]},
            "steps": [
                {"act": "container.restart", "verify": {"resolved_within_s": 0.05}},
                {"escalate": "oncall"},
                {"act": "container.restart", "verify": {"resolved_within_s": 0.05}},
                {"escalate": "oncall"},
            ],
            "limits": {"cooldown_s": 0, "max_actions": {"count": 10, "window_s": 3600}},
        }
    )
    rig = await start(rigs, tmp_path, policy)
    rig.send(alert(container="db"))
    await eventually(lambda: len(rig.notifier.sent) == 2, timeout=30)
    assert rig.restart.calls == ["db", "db"]  # the act after the first escalation ran
    incident = await rig.store.get_incident(1)
    assert incident is not None and incident.status == "escalated"  # handed over by the last step
    assert rig.metrics.lease_lost.labels("incident")._value.get() == 0
