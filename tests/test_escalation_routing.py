"""Routing by priority, and the Escalator's outbox rules: who gets an escalation, P3/P4 never page, stable dedup
keys, a resolve that never overtakes its trigger, and settings that refuse a routing that cannot work."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from engine_rig import make_policy
from helpers import FakeClock, eventually
from pydantic import ValidationError

from remediator.domain.incidents import Incident, StepRecord
from remediator.domain.story import incident_timeline
from remediator.engine.escalate import Escalator, remediation_window_s
from remediator.engine.gate import Gate
from remediator.engine.outbox import Outbox
from remediator.errors import NotifyError
from remediator.escalation.base import Notifiers
from remediator.escalation.catalogue import build_notifiers
from remediator.escalation.log import LogNotifier
from remediator.escalation.routing import priority_of, recipients
from remediator.metrics import Metrics
from remediator.settings import EscalationSettings, GuardSettings, RoutingSettings, Settings
from remediator.store.base import AlertRef, Firing, FiringResult
from remediator.store.sqlite import SqliteStore


@dataclass
class Recorder:
    """A notifier double that records escalations and resolves; ``pages`` makes it a pager."""

    name: str
    pages: bool = False
    fail_first: int = 0
    events: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    attempts: int = 0

    async def _record(self, event: str, payload: dict[str, Any], dedup_key: str) -> None:
        self.attempts += 1
        if self.attempts <= self.fail_first:
            raise NotifyError("down")
        self.events.append((event, dedup_key, payload))

    async def send(self, payload: dict[str, Any], dedup_key: str) -> None:
        await self._record("escalate", payload, dedup_key)

    async def resolve(self, payload: dict[str, Any], dedup_key: str) -> None:
        await self._record("resolve", payload, dedup_key)

    async def close(self) -> None:
        return None


@dataclass
class SendOnly:
    name: str
    sent: list[str] = field(default_factory=list)

    async def send(self, payload: dict[str, Any], dedup_key: str) -> None:
        self.sent.append(dedup_key)

    async def close(self) -> None:
        return None


@dataclass
class Bench:
    store: SqliteStore
    metrics: Metrics
    escalator: Escalator

    async def incident(self, severity: str = "critical", label: str = "severity") -> Incident:
        ref = AlertRef(
            "f1",
            "2026-11-23T10:00:00+00:00",
            {"alertname": "DatabaseDown", label: severity, "container": "db"},
            {},
        )
        (result,) = await self.store.record_intake(
            [Firing("database-down", "db", ref)], [], 1000.0, "test", 1e12
        )
        assert isinstance(result, FiringResult)
        return result.incident

    async def kinds(self, incident_id: int = 1) -> list[str]:
        return [a.kind for a in await self.store.audit_trail(incident_id)]


@pytest_asyncio.fixture
async def bench(tmp_path: Path) -> AsyncIterator[Any]:
    made: list[Bench] = []

    async def make(notifiers: dict[str, Any], routing: RoutingSettings | None = None) -> Bench:
        store = SqliteStore(tmp_path / f"s{len(made)}.sqlite3")
        await store.open()
        metrics, clock = Metrics(), FakeClock()
        gate = Gate(store, GuardSettings(), metrics, clock)
        await gate.load()
        outbox = Outbox(
            store,
            Notifiers(notifiers, routing),
            LogNotifier(),
            gate.circuits,
            metrics,
            clock,
            10,
            0.02,
            backoff_initial_s=0.01,
        )
        escalator = Escalator(store, outbox, metrics, clock)
        made.append(Bench(store, metrics, escalator))
        return made[-1]

    yield make
    for b in made:
        await b.escalator.drain(0)
        await b.store.close()


# -- priorities and recipients (pure) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("critical", "P1"),
        ("Page", "P1"),
        ("error", "P2"),
        ("high", "P2"),
        ("warning", "P3"),
        ("info", "P4"),
        ("", "P2"),
        ("whatever", "P2"),
        ("p3", "P3"),
        ("P4", "P4"),
    ],
)
def test_the_priority_comes_from_the_severity_label(value: str, expected: str) -> None:
    assert priority_of({"severity": value}, RoutingSettings()) == expected


def test_the_label_and_the_mapping_are_configurable() -> None:
    routing = RoutingSettings(severity_label="urgency", priorities={"Wake-Me": "P1"}, unknown="P4")
    assert priority_of({"urgency": "wake-me", "severity": "info"}, routing) == "P1"
    assert priority_of({"severity": "critical"}, routing) == "P4"


def test_recipients_are_the_step_notifier_then_the_route_each_once() -> None:
    routing = RoutingSettings(routes={"P1": ["pd", "chat", "oncall"]})
    assert recipients("oncall", "P1", routing) == ["oncall", "pd", "chat"]
    assert recipients("oncall", "P2", routing) == ["oncall"]


def test_settings_refuse_routing_that_cannot_work() -> None:
    pd = {"pd": {"routing_key": "k"}}
    with pytest.raises(ValidationError, match="is configured in both targets and slack"):
        EscalationSettings.model_validate(
            {
                "targets": {"x": {"url": "http://127.0.0.1/"}},
                "slack": {"x": {"webhook_url": "http://127.0.0.1/"}},
            }
        )
    with pytest.raises(ValidationError, match="'log' is reserved"):
        EscalationSettings.model_validate({"targets": {"log": {"url": "http://127.0.0.1/"}}})
    with pytest.raises(ValidationError, match="no notifier named 'nobody'"):
        EscalationSettings.model_validate({"routing": {"routes": {"P1": ["nobody"]}}})
    with pytest.raises(ValidationError, match="P4 never pages"):
        EscalationSettings.model_validate({"pagerduty": pd, "routing": {"routes": {"P4": ["pd"]}}})
    ok = EscalationSettings.model_validate({"pagerduty": pd, "routing": {"routes": {"P1": ["pd", "log"]}}})
    assert ok.notifier_names() == {"pd"}


def test_every_kind_is_configured_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMEDIATOR_ESCALATION__TARGETS", '{"oncall": {"url": "http://127.0.0.1:1/hook"}}')
    monkeypatch.setenv(
        "REMEDIATOR_ESCALATION__SLACK", '{"chat": {"webhook_url": "http://127.0.0.1:1/s", "channel": "#ops"}}'
    )
    monkeypatch.setenv("REMEDIATOR_ESCALATION__PAGERDUTY", '{"pd": {"routing_key": "R0UT1NG"}}')
    monkeypatch.setenv(
        "REMEDIATOR_ESCALATION__ALERTMANAGER",
        '{"am": {"url": "http://127.0.0.1:1", "silence_while_running": true}}',
    )
    monkeypatch.setenv("REMEDIATOR_ESCALATION__ROUTING__ROUTES", '{"P1": ["pd", "chat"], "P3": ["chat"]}')
    monkeypatch.setenv("REMEDIATOR_ESCALATION__ROUTING__SEVERITY_LABEL", "priority")
    settings = Settings().escalation
    assert settings.pagerduty["pd"].url == "https://events.pagerduty.com/v2/enqueue"
    assert "R0UT1NG" not in repr(settings)  # secrets stay out of logs and tracebacks
    assert settings.routing.severity_label == "priority" and settings.routing.routes["P3"] == ["chat"]
    notifiers = build_notifiers(settings)
    assert sorted(notifiers) == ["am", "chat", "oncall", "pd"] and notifiers.routing is settings.routing


# -- the escalator ---------------------------------------------------------------------------------------------


async def test_the_step_notifier_and_the_priority_route_each_get_one_entry(bench: Any) -> None:
    oncall, pd, chat = Recorder("oncall"), Recorder("pd", pages=True), Recorder("chat")
    b = await bench(
        {"oncall": oncall, "pd": pd, "chat": chat}, RoutingSettings(routes={"P1": ["pd", "chat"]})
    )
    incident = await b.incident("critical")
    await b.escalator.escalate(incident, make_policy(), "oncall", 2, "it did not recover")
    await eventually(lambda: oncall.events and pd.events and chat.events)
    for notifier in (oncall, pd, chat):
        ((event, key, payload),) = notifier.events
        assert event == "escalate" and key == f"remediator-1-2-{notifier.name}"
        assert payload["priority"] == "P1" and payload["reason"] == "it did not recover"
    queued = [a.detail for a in await b.store.audit_trail(1) if a.kind == "escalation_queued"]
    assert [(q["notifier"], q["priority"]) for q in queued] == [
        ("oncall", "P1"),
        ("pd", "P1"),
        ("chat", "P1"),
    ]
    assert (await b.store.get_incident(1)).status == "escalated"  # type: ignore[union-attr]


async def test_p3_and_p4_never_page(bench: Any) -> None:
    pd, chat = Recorder("pd", pages=True), Recorder("chat")
    b = await bench({"pd": pd, "chat": chat}, RoutingSettings(routes={"P3": ["chat"]}))
    incident = await b.incident("warning")
    await b.escalator.escalate(incident, make_policy(), "pd", 2, "no recovery")  # the step names the pager
    await eventually(lambda: chat.events)
    await asyncio.sleep(0.05)
    assert pd.events == [] and chat.events[0][2]["priority"] == "P3"
    trail = await b.store.audit_trail(1)
    skipped = next(a for a in trail if a.kind == "escalation_skipped")
    assert skipped.detail == {"notifier": "pd", "priority": "P3", "reason": "P3 never pages"}
    assert b.metrics.escalations.labels("database-down", "pd", "skipped")._value.get() == 1


async def test_with_only_a_pager_named_a_quiet_escalation_goes_to_the_log(bench: Any) -> None:
    pd = Recorder("pd", pages=True)
    b = await bench({"pd": pd})
    incident = await b.incident("info")
    await b.escalator.escalate(incident, make_policy(), "pd", 2, "no recovery")
    await eventually(lambda: _delivered(b))
    assert pd.events == []
    delivered = await _delivered(b)
    assert (
        delivered[0].detail["notifier"] == "log" and delivered[0].detail["dedup_key"] == "remediator-1-2-log"
    )


async def test_a_resolve_closes_what_was_opened_and_never_overtakes_its_trigger(bench: Any) -> None:
    pd, chat, webhook = Recorder("pd", pages=True, fail_first=3), Recorder("chat"), SendOnly("oncall")
    b = await bench(
        {"pd": pd, "chat": chat, "oncall": webhook}, RoutingSettings(routes={"P1": ["pd", "chat"]})
    )
    incident = await b.incident("critical")
    await b.escalator.escalate(incident, make_policy(), "oncall", 2, "no recovery")
    resolved = await b.store.get_incident(1)  # as intake hands it over: re-read, with its reason
    assert resolved is not None and resolved.reason == "no recovery"
    await b.escalator.incident_resolved(resolved)  # pd is still failing its trigger
    await eventually(lambda: len(pd.events) == 2 and len(chat.events) == 2)
    assert [(e, k) for e, k, _ in pd.events] == [
        ("escalate", "remediator-1-2-pd"),
        ("resolve", "remediator-1-resolved-pd"),
    ]
    trigger, resolve = pd.events[0][2], pd.events[1][2]
    assert resolve["status"] == "resolved" and resolve["escalated_at"] == trigger["escalated_at"]
    assert resolve["escalation_dedup_key"] == "remediator-1-2-pd" and resolve["priority"] == "P1"
    assert webhook.sent == ["remediator-1-2-oncall"]  # a generic webhook gets escalations only
    # Resolving twice (a replayed notification) sends nothing new.
    await b.escalator.incident_resolved(resolved)
    await asyncio.sleep(0.05)
    assert len(pd.events) == 2 and len(chat.events) == 2
    assert "resolution_delivered" in await b.kinds()


async def test_a_resolve_without_an_escalation_sends_nothing(bench: Any) -> None:
    pd = Recorder("pd", pages=True)
    b = await bench({"pd": pd}, RoutingSettings(routes={"P1": ["pd"]}))
    incident = await b.incident("critical")
    await b.escalator.incident_resolved(incident)
    await asyncio.sleep(0.05)
    assert pd.events == [] and await b.store.outbox_pending() == []


async def test_one_dedup_key_is_delivered_once_even_when_queued_twice(bench: Any) -> None:
    chat = Recorder("chat", fail_first=2)
    b = await bench({"chat": chat})
    incident = await b.incident("critical")
    await b.escalator.escalate(incident, make_policy(), "chat", 2, "no recovery")
    await b.escalator.escalate(incident, make_policy(), "chat", 2, "no recovery")  # a replayed step
    await b.escalator.outbox.claim()  # and a claim while it is being delivered
    await eventually(lambda: chat.events)
    await asyncio.sleep(0.1)
    assert [k for _, k, _ in chat.events] == ["remediator-1-2-chat"] and chat.attempts == 3


def test_the_timeline_interleaves_decisions_and_steps() -> None:
    from remediator.domain.incidents import AuditRecord

    trail = [
        AuditRecord(1, 100.0, 1, "opened", {"alertname": "DatabaseDown"}),
        AuditRecord(2, 110.0, 1, "not_recovered", {"step": "container.restart"}),
        AuditRecord(3, 111.0, 1, "escalated", {"reason": "r"}),
    ]
    steps = [StepRecord(1, 1, 0, "act", "container.restart", 1, "ok", 101.0, 102.0, "restarted db")]
    timeline = incident_timeline(steps, trail)
    assert [e["kind"] for e in timeline] == [
        "opened",
        "step_started",
        "step_finished",
        "not_recovered",
        "escalated",
    ]
    assert timeline[2]["detail"]["status"] == "ok" and timeline[2]["detail"]["detail"] == "restarted db"
    assert timeline[0]["at"] == "1970-01-01T00:01:40+00:00"


def test_the_silence_lasts_the_policy_windows_plus_a_margin() -> None:
    assert remediation_window_s(make_policy(attempts=2, within=120)) == 2 * 120 + 300


async def _delivered(b: Bench) -> list[Any]:
    return [a for a in await b.store.audit_trail(1) if a.kind == "escalation_delivered"]
