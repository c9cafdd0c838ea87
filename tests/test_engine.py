"""The ladder's logic: attempts, verification, re-sends, resolution, refusal, escalation, and resume after a crash.

Backends here are recording doubles so that each rule is pinned down in isolation; the same paths run
against a real Docker daemon and a real Alertmanager in test_e2e_alertmanager.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from engine_rig import RecordingNotifier, Rig, build, make_policy, start
from helpers import alert, eventually

from remediator.engine import intake as intake_module
from remediator.engine.leases import LeaseKeeper
from remediator.errors import PermanentActionError, StoreDataError, StoreError, TemporaryActionError
from remediator.store.base import Firing, FiringResult
from remediator.store.sqlite import SqliteStore


async def kinds(store: SqliteStore, incident_id: int = 1) -> list[str]:
    return [a.kind for a in await store.audit_trail(incident_id)]


async def test_recovery_within_verify_closes_the_incident_without_escalating(
    tmp_path: Path, rigs: list[Rig]
) -> None:
    rig = await start(rigs, tmp_path, make_policy(within=5))
    rig.send(alert(container="db"))
    await eventually(lambda: rig.restart.calls)
    rig.send(alert(container="db", status="resolved"))
    await eventually(lambda: rig.runner.running == 0)
    incident = await rig.store.get_incident(1)
    assert incident is not None and incident.status == "resolved"
    assert rig.restart.calls == ["db"] and rig.logs.calls == ["db"]
    assert rig.notifier.sent == []
    assert await kinds(rig.store) == ["opened", "admitted", "alert_resolved", "resolved", "verified"]


async def test_intake_retries_what_the_store_failed_to_record(
    tmp_path: Path, rigs: list[Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(intake_module, "_RETRY_INITIAL_S", 0.01)
    rig = await start(rigs, tmp_path, make_policy(within=5))
    real = rig.store.record_intake
    failures = [StoreError("connection lost"), StoreError("deadlock detected")]

    async def flaky(*args: Any) -> Any:
        if failures:
            raise failures.pop(0)
        return await real(*args)

    monkeypatch.setattr(rig.store, "record_intake", flaky)
    rig.send(alert(container="db"))
    await eventually(lambda: rig.restart.calls)  # no restart of remediator needed
    assert failures == [] and await kinds(rig.store) == ["opened", "admitted"]


@pytest.mark.parametrize("error", [StoreDataError, StoreError])
async def test_a_notification_the_store_never_takes_does_not_stop_the_others(
    tmp_path: Path, rigs: list[Rig], monkeypatch: pytest.MonkeyPatch, error: type[StoreError]
) -> None:
    # StoreDataError: the store says the value cannot be stored. StoreError: unexplained, but it keeps coming
    # while the store takes other writes, so intake treats it the same way (and sets the notification aside).
    monkeypatch.setattr(intake_module, "_RETRY_INITIAL_S", 0.001)
    rig = await build(tmp_path, make_policy(within=5))
    rigs.append(rig)
    real = rig.store.record_intake

    async def refuses_poison(events: Any, *args: Any) -> Any:
        if any(isinstance(e, Firing) and e.target == "poison" for e in events):
            raise error("invalid byte sequence")  # never passes, however often it is tried
        return await real(events, *args)

    monkeypatch.setattr(rig.store, "record_intake", refuses_poison)
    rig.send(alert(container="poison", fingerprint="p"))
    rig.send(alert(container="db", fingerprint="d"))
    worker = asyncio.create_task(rig.intake.run())
    try:
        await asyncio.wait_for(rig.intake.join(), 10)  # the worker moves on instead of retrying forever
        await eventually(lambda: rig.restart.calls)
        assert rig.restart.calls == ["db"]
        assert [i.target for i in await rig.store.list_incidents()] == ["db"]
        trail = await rig.store.audit_trail()  # every record, incident or not
        assert [a.kind for a in trail].count("unrecordable") == 1  # set aside, and said so
        assert await rig.store.inbox_pending() == []
    finally:
        worker.cancel()


async def test_resends_attach_and_never_act_again(tmp_path: Path, rigs: list[Rig]) -> None:
    rig = await start(rigs, tmp_path, make_policy(attempts=1, within=5))
    for _ in range(5):
        rig.send(alert(container="db"))
    rig.send(alert(container="db", fingerprint="f2"))  # another alert naming the same target
    await rig.settle()
    await eventually(lambda: rig.restart.calls)
    await asyncio.sleep(0.1)
    assert rig.restart.calls == ["db"]
    trail = await kinds(rig.store)
    assert trail.count("opened") == 1 and trail.count("duplicate") == 4 and trail.count("attached") == 1
    # the incident stays open until every alert attached to it resolves
    rig.send(alert(container="db", status="resolved"))
    await rig.settle()
    assert (await rig.store.get_incident(1)).status == "active"  # type: ignore[union-attr]
    rig.send(alert(container="db", status="resolved", fingerprint="f2"))
    await rig.settle()
    assert (await rig.store.get_incident(1)).status == "resolved"  # type: ignore[union-attr]


async def test_no_recovery_uses_every_attempt_then_escalates_with_the_story(
    tmp_path: Path, rigs: list[Rig]
) -> None:
    rig = await start(rigs, tmp_path, make_policy(attempts=2, within=0.1))
    rig.send(alert(container="db"))
    await eventually(lambda: rig.notifier.sent)
    assert rig.restart.calls == ["db", "db"]
    dedup_key, payload = rig.notifier.sent[0]
    assert dedup_key == "remediator-1-2-oncall"
    assert payload["incident_id"] == 1 and payload["policy"] == "database-down" and payload["target"] == "db"
    assert payload["severity"] == "critical"
    assert payload["runbook_url"] == "https://runbooks.example.com/DatabaseDown"
    assert "did not recover within 0.1s" in payload["reason"]
    assert [(s["name"], s["attempt"], s["status"]) for s in payload["steps"]] == [
        ("container.logs", 1, "ok"),
        ("container.restart", 1, "ok"),
        ("container.restart", 2, "ok"),
    ]
    assert payload["evidence"] == [{"name": "container.logs", "detail": "container.logs done on db"}]
    incident = await rig.store.get_incident(1)
    assert incident is not None and incident.status == "escalated"
    assert rig.metrics.verifications.labels("database-down", "not_recovered")._value.get() == 2


async def test_a_permanent_error_skips_the_remaining_attempts(tmp_path: Path, rigs: list[Rig]) -> None:
    rig = await start(rigs, tmp_path, make_policy(attempts=3, within=5))
    rig.restart.failures = [PermanentActionError("no such container: db")]
    rig.send(alert(container="db"))
    await eventually(lambda: rig.notifier.sent)
    assert rig.restart.calls == ["db"]
    assert "no such container" in rig.notifier.sent[0][1]["reason"]
    assert (
        rig.metrics.actions.labels(
            "database-down", "act", "container.restart", "permanent", "default"
        )._value.get()
        == 1
    )


async def test_temporary_errors_are_retried_within_one_attempt(tmp_path: Path, rigs: list[Rig]) -> None:
    rig = await start(rigs, tmp_path, make_policy(attempts=1, within=0.1))
    rig.restart.failures = [
        TemporaryActionError("docker unreachable"),
        TemporaryActionError("docker unreachable"),
    ]
    rig.send(alert(container="db"))
    await eventually(lambda: rig.notifier.sent)
    assert len(rig.restart.calls) == 3  # two temporary failures, then success
    steps = await rig.store.steps(1)
    assert [(s.name, s.status) for s in steps] == [("container.logs", "ok"), ("container.restart", "ok")]


async def test_temporary_errors_past_the_retries_fail_the_attempt(tmp_path: Path, rigs: list[Rig]) -> None:
    rig = await start(rigs, tmp_path, make_policy(attempts=1, within=0.1))
    rig.restart.failures = [TemporaryActionError("docker unreachable")] * 3
    rig.send(alert(container="db"))
    await eventually(lambda: rig.notifier.sent)
    steps = await rig.store.steps(1)
    assert steps[-1].status == "failed" and "docker unreachable" in steps[-1].detail
    assert "failed (temporary)" in rig.notifier.sent[0][1]["reason"]


async def test_resolution_cancels_the_steps_not_yet_started(tmp_path: Path, rigs: list[Rig]) -> None:
    rig = await start(rigs, tmp_path, make_policy(attempts=3, within=30))
    rig.send(alert(container="db"))
    await eventually(lambda: rig.restart.calls)
    rig.send(alert(container="db", status="resolved"))
    await eventually(lambda: rig.runner.running == 0)
    await asyncio.sleep(0.05)
    assert rig.restart.calls == ["db"] and rig.notifier.sent == []


async def test_a_refused_target_escalates_and_reaches_no_backend(tmp_path: Path, rigs: list[Rig]) -> None:
    rig = await start(rigs, tmp_path, make_policy())
    rig.send(alert(container="db; rm -rf /"))
    await eventually(lambda: rig.notifier.sent)
    assert rig.restart.calls == [] and rig.logs.calls == []
    payload = rig.notifier.sent[0][1]
    assert "outside the allow list" in payload["reason"] and payload["target"] == "db; rm -rf /"
    assert rig.metrics.decisions.labels("target_refused")._value.get() == 1


async def test_unmatched_alerts_are_recorded_not_dropped(tmp_path: Path, rigs: list[Rig]) -> None:
    rig = await start(rigs, tmp_path, make_policy())
    rig.send(alert(alertname="DiskFull", container="db"))
    await rig.settle()
    trail = await rig.store.audit_trail()
    assert [a.kind for a in trail] == ["unmatched"]
    assert trail[0].detail["labels"]["alertname"] == "DiskFull"


async def test_an_escalation_survives_a_notifier_outage(tmp_path: Path, rigs: list[Rig]) -> None:
    rig = await start(
        rigs, tmp_path, make_policy(attempts=1, within=0.05), notifier=RecordingNotifier(fail_first=3)
    )
    rig.send(alert(container="db"))
    await eventually(lambda: rig.notifier.sent)
    assert rig.notifier.attempts == 4 and len(rig.notifier.sent) == 1
    delivered = await eventually(lambda: _audit_of(rig, "escalation_delivered"))
    assert delivered.detail["attempts"] == 4 and delivered.detail["dedup_key"] == "remediator-1-2-oncall"
    assert rig.metrics.escalations.labels("database-down", "oncall", "delivered")._value.get() == 1


async def test_a_step_interrupted_by_a_crash_is_verified_not_repeated(
    tmp_path: Path, rigs: list[Rig]
) -> None:
    policy = make_policy(attempts=2, within=0.1)
    first = await build(tmp_path, policy)
    first.send(alert(container="db"))
    await first.intake._process([first.intake._queue.get_nowait()])
    await first.runner.drain(0)  # the "crash": the ladder is gone; fake a restart that was mid-flight
    await first.store._run(lambda db: db.execute("DELETE FROM steps"))
    step_id = await first.store.step_started(1, 1, "act", "container.restart", 1, 1000.0)
    await first.store.close()

    rig = await build(tmp_path, policy)
    rigs.append(rig)
    keeper = LeaseKeeper(rig.store, rig.runner, rig.escalator, {policy.name: policy}, "local", 15, rig.clock)
    await keeper.tick()  # the restarted replica claims what it held before the crash
    await eventually(lambda: rig.notifier.sent)
    steps = await rig.store.steps(1)
    assert [(s.id == step_id, s.status, s.attempt) for s in steps] == [
        (True, "interrupted", 1),
        (False, "ok", 2),
    ]
    # attempt 1 was verified (not re-run), then attempt 2 ran: one restart in this process, not two
    assert rig.restart.calls == ["db"]
    assert "resumed" in await kinds(rig.store)


async def test_an_undelivered_escalation_is_resent_after_a_restart(tmp_path: Path, rigs: list[Rig]) -> None:
    policy = make_policy(attempts=1, within=0.05)
    first = await build(tmp_path, policy, notifier=RecordingNotifier(fail_first=100))
    (result,) = await first.store.record_intake(
        [Firing("database-down", "db", _ref())], [], 1000.0, "local", 0.0
    )
    assert isinstance(result, FiringResult)
    incident = result.incident
    await first.store.outbox_put(
        incident.id, "oncall", "remediator-1-2-oncall", {"policy": "database-down"}, 1000.0, "local", 1015.0
    )
    await first.store.close()

    rig = await build(tmp_path, policy)
    rigs.append(rig)
    await rig.escalator.outbox.claim()
    await eventually(lambda: rig.notifier.sent)
    assert rig.notifier.sent == [("remediator-1-2-oncall", {"policy": "database-down"})]
    await eventually(lambda: _no_pending(rig))


async def test_one_replica_delivers_an_escalation_and_another_takes_it_over_when_it_stalls(
    tmp_path: Path, rigs: list[Rig]
) -> None:
    class Stalled(RecordingNotifier):
        async def send(self, payload: dict[str, Any], dedup_key: str) -> None:
            self.attempts += 1
            await asyncio.Event().wait()  # a replica hung mid-delivery (paused, partitioned)

    policy = make_policy(attempts=1, within=0.05)
    a = await build(tmp_path, policy, notifier=Stalled())
    b = await build(tmp_path, policy)
    rigs.extend([a, b])
    a.escalator.outbox.owner, b.escalator.outbox.owner = "a", "b"
    keepers = {
        rig.escalator.outbox.owner: LeaseKeeper(
            rig.store, rig.runner, rig.escalator, {}, rig.escalator.outbox.owner, 15, rig.clock
        )
        for rig in (a, b)
    }
    (result,) = await a.store.record_intake([Firing("database-down", "db", _ref())], [], a.clock(), "a", 0.0)
    assert isinstance(result, FiringResult)
    await a.escalator.escalate(result.incident, policy, "oncall", 2, "no recovery")
    await eventually(lambda: a.notifier.attempts == 1)
    await keepers["b"].tick()  # a holds the lease: b leaves the entry alone
    await asyncio.sleep(0.1)
    assert b.escalator.outbox.delivering() == [] and b.notifier.attempts == 0
    b.clock.advance(16)  # a stays stalled past its lease, renewing nothing
    await keepers["b"].tick()
    await eventually(lambda: b.notifier.sent)
    await keepers["a"].tick()  # a learns it lost the lease and stops
    assert a.escalator.outbox.delivering() == []
    assert [key for key, _ in b.notifier.sent] == ["remediator-1-2-oncall"] and a.notifier.sent == []
    await eventually(lambda: _no_pending(b))


async def test_a_stalled_delivery_that_wakes_after_the_takeover_records_nothing(
    tmp_path: Path, rigs: list[Rig]
) -> None:
    release = asyncio.Event()

    class Stalled(RecordingNotifier):
        async def send(self, payload: dict[str, Any], dedup_key: str) -> None:
            self.attempts += 1
            await release.wait()  # frozen mid-send; it wakes up before its keeper notices anything
            self.sent.append((dedup_key, payload))

    policy = make_policy(attempts=1, within=0.05)
    a = await build(tmp_path, policy, notifier=Stalled())
    b = await build(tmp_path, policy)
    rigs.extend([a, b])
    a.escalator.outbox.owner, b.escalator.outbox.owner = "a", "b"
    keeper_b = LeaseKeeper(b.store, b.runner, b.escalator, {}, "b", 15, b.clock)
    (result,) = await a.store.record_intake([Firing("database-down", "db", _ref())], [], a.clock(), "a", 0.0)
    assert isinstance(result, FiringResult)
    await a.escalator.escalate(result.incident, policy, "oncall", 2, "no recovery")
    await eventually(lambda: a.notifier.attempts == 1)
    b.clock.advance(16)
    await keeper_b.tick()
    await eventually(lambda: _no_pending(b))  # b delivered it and recorded so
    release.set()  # a's send completes now, after the takeover
    await eventually(lambda: a.escalator.outbox.delivering() == [])
    assert a.metrics.lease_lost.labels("outbox")._value.get() == 1
    delivered = [r for r in await b.store.audit_trail(1) if r.kind == "escalation_delivered"]
    assert len(delivered) == 1  # b's; a's late outcome is refused, not recorded over it
    (entry,) = await b.store._run(lambda db: db.execute("SELECT lease_owner, status FROM outbox").fetchall())
    assert (entry["lease_owner"], entry["status"]) == ("b", "delivered")


async def _audit_of(rig: Rig, kind: str) -> Any:
    return next((a for a in await rig.store.audit_trail(1) if a.kind == kind), None)


async def _no_pending(rig: Rig) -> bool:
    return await rig.store.outbox_pending() == []


def _ref() -> Any:
    from remediator.store.base import AlertRef

    return AlertRef("f1", "2026-11-23T10:00:00+00:00", {"alertname": "DatabaseDown", "container": "db"}, {})


@pytest.mark.parametrize("status", ["firing", "resolved"])
async def test_alert_counts_by_name_and_status(tmp_path: Path, rigs: list[Rig], status: str) -> None:
    rig = await start(rigs, tmp_path, make_policy())
    rig.send(alert(alertname="Other", status=status), alert(status=status))
    await rig.settle()
    # A name no policy pins counts as "other": outside input cannot grow the metric's series.
    assert rig.metrics.alerts_received.labels("other", status)._value.get() == 1
    assert rig.metrics.alerts_received.labels("DatabaseDown", status)._value.get() == 1
    assert not any(
        s.labels.get("alertname") == "Other" for m in rig.metrics.registry.collect() for s in m.samples
    )


async def test_an_escalation_after_a_committed_decision_survives_a_store_outage(
    tmp_path: Path, rigs: list[Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decision (a refused target: an escalated incident) is committed; the store then fails for a while.
    The escalation is retried until it is stored, not dropped (the commit is never replayed)."""
    from remediator.errors import StoreUnavailable

    monkeypatch.setattr(intake_module, "_RETRY_INITIAL_S", 0.01)
    rig = await start(rigs, tmp_path, make_policy(within=5))
    real = rig.escalator.escalate
    failures = [StoreUnavailable("connection lost"), StoreUnavailable("connection lost")]

    async def flaky(*args: Any, **kwargs: Any) -> None:
        if failures:
            raise failures.pop()
        await real(*args, **kwargs)

    monkeypatch.setattr(rig.escalator, "escalate", flaky)
    rig.send(alert(container="not-allowed; rm -rf /"))
    await eventually(lambda: rig.notifier.sent)
    assert failures == [] and "outside the allow list" in rig.notifier.sent[0][1]["reason"]
