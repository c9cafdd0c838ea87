"""Guards in the ladder: every limit holds exactly, every refusal is recorded with its reason and escalated.

Time is the rig's FakeClock; nothing here sleeps to let a limit expire.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from engine_rig import Rig, build, make_policy, start
from helpers import alert, eventually

from remediator.errors import TemporaryActionError
from remediator.settings import BreakerSettings, GuardSettings

LOOSE = {
    "cooldown_s": 0,
    "max_actions": {"count": 100, "window_s": 3600},
    "flapping": {"count": 100, "window_s": 3600},
}


async def refusals(rig: Rig) -> list[dict[str, Any]]:
    return [a.detail for a in await rig.store.audit_trail() if a.kind == "refused"]


def refused_count(rig: Rig, policy: str, reason: str) -> float:
    return rig.metrics.refusals.labels(policy, reason)._value.get()


async def fire_and_resolve(rig: Rig, n: int, container: str = "db", resolve: bool = True) -> None:
    """Open incident number n on ``container``: one firing alert, then (optionally) its resolution."""
    starts = f"2026-11-23T10:{n:02d}:00Z"
    before = (len(rig.restart.calls), len(rig.notifier.sent))
    rig.send(alert(container=container, fingerprint=f"fp-{container}", starts_at=starts))
    await rig.settle()
    # the ladder either acted or was refused and escalated
    await eventually(lambda: (len(rig.restart.calls), len(rig.notifier.sent)) != before)
    if resolve:
        rig.send(
            alert(container=container, fingerprint=f"fp-{container}", starts_at=starts, status="resolved")
        )
        await rig.settle()
        await eventually(lambda: rig.runner.running == 0)


async def test_cooldown_holds_a_new_incident_until_it_expires(tmp_path: Path, rigs: list[Rig]) -> None:
    limits = {**LOOSE, "cooldown_s": 300}
    rig = await start(rigs, tmp_path, make_policy(attempts=1, within=5, limits=limits))
    await fire_and_resolve(rig, 1)
    assert rig.restart.calls == ["db"]
    rig.clock.advance(120)
    await fire_and_resolve(rig, 2, resolve=False)
    await eventually(lambda: rig.notifier.sent)
    assert rig.restart.calls == ["db"]
    assert (
        "refused (cooldown)" in rig.notifier.sent[0][1]["reason"]
        and "180s left" in rig.notifier.sent[0][1]["reason"]
    )
    assert refused_count(rig, "database-down", "cooldown") == 1
    rig.send(alert(container="db", fingerprint="fp-db", starts_at="2026-11-23T10:02:00Z", status="resolved"))
    await rig.settle()
    rig.clock.advance(181)
    await fire_and_resolve(rig, 3)
    assert rig.restart.calls == ["db", "db"]


async def test_rate_limit_counts_every_attempt_on_the_target(tmp_path: Path, rigs: list[Rig]) -> None:
    limits = {**LOOSE, "max_actions": {"count": 2, "window_s": 3600}}
    rig = await start(rigs, tmp_path, make_policy(attempts=5, within=0.05, limits=limits))
    rig.send(alert(container="db"))
    await eventually(lambda: rig.notifier.sent)
    assert rig.restart.calls == ["db", "db"]
    (detail,) = await refusals(rig)
    assert detail["reason"] == "rate_limit" and "already had 2 actions in 3600s (limit 2)" in detail["detail"]
    rig.clock.advance(3601)  # the window slides: a new incident may act again
    rig.send(alert(container="db", status="resolved"))
    await rig.settle()
    rig.send(alert(container="db", starts_at="2026-11-23T11:00:00Z", fingerprint="f9"))
    await eventually(lambda: len(rig.restart.calls) == 4)


async def test_the_global_budget_bounds_actions_over_all_targets(tmp_path: Path, rigs: list[Rig]) -> None:
    rig = await start(
        rigs,
        tmp_path,
        make_policy(attempts=1, within=30, allow="db-[0-9]", limits=LOOSE),
        guards=GuardSettings(budget_count=3, budget_window_s=600),
    )
    for n in range(6):
        rig.send(alert(container=f"db-{n}", fingerprint=f"f{n}"))
    await eventually(lambda: len(rig.notifier.sent) == 3)
    await asyncio.sleep(0.05)
    assert sorted(rig.restart.calls) == ["db-0", "db-1", "db-2"]
    reasons = [p["reason"] for _, p in rig.notifier.sent]
    assert all("refused (budget)" in r and "budget 3" in r for r in reasons)
    assert refused_count(rig, "database-down", "budget") == 3


async def test_a_flapping_target_is_escalated_not_restarted_in_a_loop(
    tmp_path: Path, rigs: list[Rig]
) -> None:
    limits = {**LOOSE, "flapping": {"count": 3, "window_s": 3600}}
    rig = await start(rigs, tmp_path, make_policy(attempts=1, within=5, limits=limits))
    await fire_and_resolve(rig, 1)
    await fire_and_resolve(rig, 2)
    await fire_and_resolve(rig, 3, resolve=False)
    await eventually(lambda: rig.notifier.sent)
    assert rig.restart.calls == ["db", "db"]
    assert "refused (flapping)" in rig.notifier.sent[0][1]["reason"]
    assert refused_count(rig, "database-down", "flapping") == 1


async def test_a_failing_backend_opens_its_breaker_then_a_probe_closes_it(
    tmp_path: Path, rigs: list[Rig]
) -> None:
    guards = GuardSettings(breaker=BreakerSettings(failures=2, window_s=60, open_s=30))
    rig = await start(
        rigs, tmp_path, make_policy(attempts=1, within=5, allow="db-[a-z]", limits=LOOSE), guards=guards
    )
    rig.restart.failures = [TemporaryActionError("docker unreachable")] * 6  # 3 tries per attempt, 2 attempts
    for name in ("db-a", "db-b"):
        rig.send(alert(container=name, fingerprint=name))
        await eventually(lambda n=name: any(p["target"] == n for _, p in rig.notifier.sent))
    assert rig.gate.circuits.get("backend:test").status == "open"
    assert rig.metrics.breaker_state.labels("backend:test", "")._value.get() == 2

    rig.send(alert(container="db-c", fingerprint="db-c"))
    await eventually(lambda: len(rig.notifier.sent) == 3)
    assert rig.restart.calls.count("db-c") == 0
    assert "refused (breaker_open)" in rig.notifier.sent[2][1]["reason"]

    # The state is persisted: a restarted daemon starts with the breaker open.
    again = await build(tmp_path / "again", make_policy())
    await again.store.close()
    reloaded = await build(tmp_path, make_policy())
    assert reloaded.gate.circuits.get("backend:test").status == "open"
    await reloaded.store.close()

    rig.clock.advance(31)  # half-open: one probe goes through, succeeds, and closes the breaker
    rig.send(alert(container="db-d", fingerprint="db-d"))
    await eventually(lambda: "db-d" in rig.restart.calls)
    await eventually(lambda: rig.gate.circuits.get("backend:test").status == "closed")
    assert rig.metrics.breaker_state.labels("backend:test", "")._value.get() == 0
    trail = [a.kind for a in await rig.store.audit_trail()]
    assert "breaker_open" in trail and "breaker_half_open" in trail and "breaker_closed" in trail


async def test_global_dry_run_records_and_executes_nothing(tmp_path: Path, rigs: list[Rig]) -> None:
    rig = await start(rigs, tmp_path, make_policy(attempts=2), guards=GuardSettings(dry_run=True))
    rig.send(alert(container="db"))
    await eventually(lambda: rig.notifier.sent)
    assert rig.restart.calls == []
    dry = [a.detail for a in await rig.store.audit_trail(1) if a.kind == "dry_run"]
    assert dry == [
        {
            "step": "container.restart",
            "reason": "dry_run",
            "detail": "dry-run globally: would have run container.restart on db",
        }
    ]
    assert "dry-run globally" in rig.notifier.sent[0][1]["reason"]
    assert refused_count(rig, "database-down", "dry_run") == 1


async def test_policy_dry_run_leaves_other_policies_acting(tmp_path: Path, rigs: list[Rig]) -> None:
    dry = make_policy(attempts=1, within=5, name="dry", alertname="A", dry_run=True, limits=LOOSE)
    live = make_policy(attempts=1, within=5, name="live", alertname="B", limits=LOOSE)
    rig = await start(rigs, tmp_path, dry, policies=[dry, live])
    rig.send(alert(alertname="A", container="db", fingerprint="a"))
    rig.send(alert(alertname="B", container="db", fingerprint="b"))
    await eventually(lambda: rig.restart.calls and rig.notifier.sent)
    assert rig.restart.calls == ["db"]
    assert refused_count(rig, "dry", "dry_run") == 1 and refused_count(rig, "live", "dry_run") == 0


async def test_pause_stops_every_action_and_resume_restores(tmp_path: Path, rigs: list[Rig]) -> None:
    rig = await start(rigs, tmp_path, make_policy(attempts=1, within=5, allow="db-[0-9]", limits=LOOSE))
    await rig.gate.control.set_paused(True, by="test")
    rig.send(alert(container="db-1", fingerprint="1"))
    await eventually(lambda: rig.notifier.sent)
    assert rig.restart.calls == [] and "refused (paused)" in rig.notifier.sent[0][1]["reason"]
    await rig.gate.control.set_paused(False, by="test")
    rig.send(alert(container="db-2", fingerprint="2"))
    await eventually(lambda: rig.restart.calls == ["db-2"])
    trail = [a.kind for a in await rig.store.audit_trail()]
    assert "paused" in trail and "resumed" in trail


async def test_one_step_at_a_time_on_a_target_across_policies(tmp_path: Path, rigs: list[Rig]) -> None:
    slow = make_policy(attempts=1, within=10, name="slow", alertname="A", limits=LOOSE)
    other = make_policy(
        attempts=1, within=10, name="other", alertname="B", limits={**LOOSE, "lock_wait_s": 0.2}
    )
    rig = await start(rigs, tmp_path, slow, policies=[slow, other])
    rig.send(alert(alertname="A", container="db", fingerprint="a"))
    await eventually(lambda: rig.restart.calls == ["db"])  # "slow" now verifies while holding the lock
    rig.send(alert(alertname="B", container="db", fingerprint="b"))
    await eventually(lambda: rig.notifier.sent)
    assert rig.restart.calls == ["db"]
    assert "refused (locked)" in rig.notifier.sent[0][1]["reason"]
    assert refused_count(rig, "other", "locked") == 1
