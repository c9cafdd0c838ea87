"""The Alertmanager notifier against a real Alertmanager 0.25: the RemediationFailed alert is accepted, routed to
its receiver and resolved with the incident; the silence of the original alert matches it while remediation runs
and is expired when remediation ends. Everything is read back from the v2 API."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from engine_rig import make_policy
from helpers import eventually
from realparts import AlertmanagerFactory, CaptureServer

from remediator.domain.clock import system_clock
from remediator.domain.incidents import Incident, StepRecord
from remediator.domain.story import build_payload
from remediator.engine.escalate import Escalator
from remediator.engine.gate import Gate
from remediator.engine.outbox import Outbox
from remediator.escalation.alertmanager import AlertmanagerNotifier
from remediator.escalation.base import Notifiers
from remediator.escalation.log import LogNotifier
from remediator.metrics import Metrics
from remediator.settings import GuardSettings
from remediator.store.base import AlertRef, Firing, FiringResult
from remediator.store.sqlite import SqliteStore

LABELS = {"alertname": "DatabaseDown", "severity": "critical", "container": "sms-db", "team": "storage"}
ANNOTATIONS = {"summary": "PostgreSQL is down", "runbook_url": "https://runbooks.example.com/DatabaseDown"}


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:  # a loopback Alertmanager started by the test
        return json.loads(response.read())


async def am_alerts(base: str, alertname: str = "RemediationFailed") -> list[dict[str, Any]]:
    query = urllib.parse.quote(f'alertname="{alertname}"')
    return await asyncio.to_thread(_get, f"{base}/api/v2/alerts?filter={query}")


async def am_silence(base: str, silence_id: str) -> dict[str, Any]:
    found: dict[str, Any] = await asyncio.to_thread(_get, f"{base}/api/v2/silence/{silence_id}")
    return found


def incident(opened_at: float) -> Incident:
    return Incident(
        id=7,
        policy="database-down",
        target="sms-db",
        status="escalated",
        severity="critical",
        opened_at=opened_at,
        updated_at=opened_at,
        labels=LABELS,
        annotations=ANNOTATIONS,
    )


async def test_the_remediation_failed_alert_is_routed_and_resolved_by_a_real_alertmanager(
    capture_server: CaptureServer, alertmanager_factory: AlertmanagerFactory
) -> None:
    am = alertmanager_factory(f"{capture_server.url}/receiver", "token", group_by=["alertname"])
    notifier = AlertmanagerNotifier("am", am.url, {}, False, 3600, 5)
    now = time.time()
    steps = [StepRecord(1, 7, 1, "act", "container.restart", 1, "ok", now - 60, now - 58, "restarted sms-db")]
    payload = build_payload(
        incident(now - 120), None, steps, "did not recover within 30s", now, priority="P1"
    )
    await notifier.send(payload, "remediator-7-2-am")
    await notifier.send(payload, "remediator-7-2-am")  # a repeat after a lost answer: still one alert

    (alert,) = await am_alerts(am.url)
    assert alert["labels"] == {
        "alertname": "RemediationFailed",
        "original_alertname": "DatabaseDown",
        "policy": "database-down",
        "target": "sms-db",
        "priority": "P1",
        "incident": "7",
        "severity": "critical",
        "container": "sms-db",
        "team": "storage",  # the original labels stay, so routes on team or service still match
    }
    assert alert["status"]["state"] == "active"
    notes = alert["annotations"]
    assert notes["summary"] == "Remediation failed: DatabaseDown on sms-db"
    assert (
        notes["runbook_url"] == ANNOTATIONS["runbook_url"]
        and notes["original_summary"] == "PostgreSQL is down"
    )
    assert "did not recover within 30s" in notes["description"]
    assert "act container.restart #1 -> ok: restarted sms-db" in notes["description"]
    assert abs(_epoch(alert["startsAt"]) - now) < 1 and abs(_epoch(alert["endsAt"]) - (now + 3600)) < 1

    # Alertmanager's own routing delivers it to the receiver that pages the right person.
    (firing,) = await capture_server.wait_for(1, timeout=15)
    assert firing.json["status"] == "firing"
    assert [a["labels"]["alertname"] for a in firing.json["alerts"]] == ["RemediationFailed"]

    resolved = {**payload, "event": "resolve", "status": "resolved", "resolved_at": _iso(time.time())}
    await notifier.resolve(resolved, "remediator-7-resolved-am")
    assert await am_alerts(am.url) == []  # no longer active
    requests = await capture_server.wait_for(2, timeout=15)
    assert requests[1].json["status"] == "resolved"
    assert requests[1].json["alerts"][0]["labels"]["incident"] == "7"
    await notifier.close()


async def test_a_silence_matches_the_original_alert_and_expires(
    alertmanager_factory: AlertmanagerFactory,
) -> None:
    am = alertmanager_factory("http://127.0.0.1:9/unused", "token")
    notifier = AlertmanagerNotifier("am", am.url, {}, True, 3600, 5)
    await asyncio.to_thread(am.fire, LABELS, ANNOTATIONS)
    now = time.time()
    matchers = {"alertname": "DatabaseDown", "container": "sms-db"}
    silence_id = await notifier.silence(matchers, now, now + 600, "remediator incident 7: remediating sms-db")

    silence = await am_silence(am.url, silence_id)
    assert silence["status"]["state"] == "active" and silence["createdBy"] == "remediator"
    assert "incident 7" in silence["comment"]
    assert sorted((m["name"], m["value"], m["isEqual"], m["isRegex"]) for m in silence["matchers"]) == [
        ("alertname", "DatabaseDown", True, False),
        ("container", "sms-db", True, False),
    ]
    assert abs(_epoch(silence["endsAt"]) - (now + 600)) < 1
    (original,) = await eventually(lambda: _suppressed(am.url), timeout=10)
    assert original["status"]["silencedBy"] == [silence_id]

    await notifier.expire_silence(silence_id)
    assert (await am_silence(am.url, silence_id))["status"]["state"] == "expired"
    await notifier.expire_silence(silence_id)  # again (a retried delivery): fine
    await notifier.expire_silence("00000000-0000-0000-0000-000000000000")  # one Alertmanager forgot: fine
    await notifier.close()


async def test_the_escalator_silences_while_remediation_runs_and_ends_it_with_the_escalation(
    tmp_path: Path, capture_server: CaptureServer, alertmanager_factory: AlertmanagerFactory
) -> None:
    am = alertmanager_factory(f"{capture_server.url}/receiver", "token", group_by=["alertname"])
    notifier = AlertmanagerNotifier("am", am.url, {}, True, 3600, 5)
    store = SqliteStore(tmp_path / "s.sqlite3")
    await store.open()
    metrics = Metrics()
    gate = Gate(store, GuardSettings(), metrics, system_clock)
    outbox = Outbox(
        store, Notifiers({"am": notifier}), LogNotifier(), gate.circuits, metrics, system_clock, 5, 0.1
    )
    escalator = Escalator(store, outbox, metrics, system_clock)
    try:
        ref = AlertRef("f1", "2026-11-23T10:00:00+00:00", LABELS, ANNOTATIONS)
        (result,) = await store.record_intake(
            [Firing("database-down", "sms-db", ref)], [], time.time(), "test", time.time() + 600
        )
        assert isinstance(result, FiringResult)
        policy = make_policy(attempts=2, within=30, allow="sms-db")

        await escalator.incident_opened(result.incident, policy)
        created = await eventually(lambda: _audit(store, "silence_created"))
        silence_id = created.detail["silence_id"]
        await escalator.incident_opened(
            result.incident, policy
        )  # again (a resumed ladder): still one silence
        await escalator.drain(5)
        assert [a.kind for a in await store.audit_trail(1)].count("silence_created") == 1
        silence = await am_silence(am.url, silence_id)
        assert silence["status"]["state"] == "active" and "remediator incident 1" in silence["comment"]
        assert abs(_epoch(silence["endsAt"]) - (created.at + 2 * 30 + 300)) < 1

        await escalator.escalate(result.incident, policy, "am", 2, "did not recover within 30s")
        await eventually(lambda: _audit(store, "silence_expired"))
        assert (await am_silence(am.url, silence_id))["status"]["state"] == "expired"
        (alert,) = await am_alerts(am.url)
        assert alert["labels"]["incident"] == "1" and alert["labels"]["priority"] == "P1"

        await escalator.incident_resolved(await store.get_incident(1))  # type: ignore[arg-type]
        await eventually(lambda: _audit(store, "resolution_delivered"))
        assert await am_alerts(am.url) == []
        kinds = [a.kind for a in await store.audit_trail(1)]
        assert (
            kinds.index("silence_created") < kinds.index("escalation_queued") < kinds.index("silence_expired")
        )
        assert await store.outbox_pending() == []
    finally:
        await escalator.drain(0)
        await notifier.close()
        await store.close()


async def _audit(store: SqliteStore, kind: str) -> Any:
    return next((a for a in await store.audit_trail(1) if a.kind == kind), None)


async def _suppressed(base: str) -> list[dict[str, Any]]:
    return [a for a in await am_alerts(base, "DatabaseDown") if a["status"]["state"] == "suppressed"]


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat()
