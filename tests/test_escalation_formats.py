"""Each notifier's request format, checked on a capture server against the receiver's documentation: Slack
Block Kit limits and escaping, PagerDuty Events API v2 fields, and the HTTP error mapping they share.
(Alertmanager, which runs here, is checked against a real one in test_escalation_alertmanager.py.)"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

import pytest
from realparts import CaptureServer, free_port

from remediator.domain.incidents import Incident, StepRecord
from remediator.domain.story import build_payload
from remediator.errors import NotifyError
from remediator.escalation.pagerduty import PagerDutyNotifier
from remediator.escalation.slack import SlackNotifier
from remediator.escalation.webhook import WebhookNotifier

OPENED = datetime.fromisoformat("2026-11-23T10:00:00+00:00").timestamp()
RUNBOOK = "https://runbooks.example.com/DatabaseDown"
DASHBOARD = "https://grafana.example.com/d/db"
LOG_LINES = "\n".join(f"2026-11-23 10:00:{i % 60:02d} FATAL connection {i} refused" for i in range(400))


def incident(severity: str = "critical", **labels: str) -> Incident:
    return Incident(
        id=7,
        policy="database-down",
        target="sms-db",
        status="escalated",
        severity=severity,
        opened_at=OPENED,
        updated_at=OPENED,
        labels={"alertname": "DatabaseDown", "severity": severity, "container": "sms-db", **labels},
        annotations={"summary": "PostgreSQL is down", "runbook_url": RUNBOOK, "dashboard_url": DASHBOARD},
    )


def steps() -> list[StepRecord]:
    return [
        StepRecord(1, 7, 0, "diagnose", "container.logs", 1, "ok", OPENED + 1, OPENED + 2, LOG_LINES),
        StepRecord(2, 7, 1, "act", "container.restart", 1, "ok", OPENED + 2, OPENED + 5, "restarted sms-db"),
        StepRecord(
            3, 7, 1, "act", "container.restart", 2, "ok", OPENED + 125, OPENED + 128, "restarted sms-db"
        ),
    ]


def payload(
    priority: str = "P1", reason: str = "container.restart attempt 2/2 ran, but ..."
) -> dict[str, Any]:
    return build_payload(incident(), None, steps(), reason, OPENED + 251.2, priority=priority)


def resolved_payload() -> dict[str, Any]:
    body = build_payload(
        incident(),
        None,
        steps(),
        "every alert of the incident resolved",
        OPENED + 600,
        priority="P1",
        status="resolved",
        escalated_at=OPENED + 251.2,
    )
    body.update(event="resolve", resolved_at="2026-11-23T10:10:00+00:00")
    return body


def _texts(block: dict[str, Any]) -> list[str]:
    found = [block["text"]["text"]] if "text" in block else []
    found += [f["text"] for f in block.get("fields", [])]
    found += [e["text"] for e in block.get("elements", [])]
    return found


async def test_slack_gets_readable_blocks_within_the_documented_limits(capture_server: CaptureServer) -> None:
    notifier = SlackNotifier("ops", f"{capture_server.url}/services/T0/B0/secret", "#ops", 5)
    await notifier.send(payload(), "remediator-7-2-ops")
    await notifier.close()
    (request,) = await capture_server.wait_for(1)
    assert request.method == "POST" and request.path == "/services/T0/B0/secret"
    assert request.headers["Content-Type"] == "application/json"
    body = request.json
    assert body["channel"] == "#ops"
    assert body["text"].startswith(
        "P1 remediation failed: DatabaseDown on sms-db: container.restart attempt 2/2"
    )

    blocks = body["blocks"]
    assert [b["type"] for b in blocks] == [
        "header",
        "section",
        "section",
        "section",
        "section",
        "section",
        "context",
    ]
    header, summary, facts, did, why, evidence, context = blocks
    assert header["text"]["type"] == "plain_text" and len(header["text"]["text"]) <= 150
    assert "P1 Remediation failed: DatabaseDown on sms-db" in header["text"]["text"]
    assert summary["text"]["text"] == "PostgreSQL is down"
    assert [f["text"] for f in facts["fields"]] == [
        "*Incident*\n#7 (database-down)",
        "*Severity*\ncritical (P1)",
        "*Target*\nsms-db",
        "*Duration*\n4m 11s",
        "*Status*\nescalated",
        "*Alert*\nDatabaseDown",
    ]
    lines = did["text"]["text"].splitlines()
    assert lines[0] == "*What remediator did*"
    assert lines[2] == "• 10:00:02 act container.restart #1 -&gt; ok: restarted sms-db"
    assert lines[3].startswith("• 10:02:05 act container.restart #2")
    assert why["text"]["text"] == "*Why it escalated*\ncontainer.restart attempt 2/2 ran, but ..."
    ev = evidence["text"]["text"]
    assert ev.startswith("*Evidence*\n```") and ev.endswith("```")
    assert "FATAL connection 399 refused" in ev  # logs are cut from the front: the end is what matters
    assert "earlier characters cut" in ev and "FATAL connection 0 refused" not in ev
    assert [e["text"] for e in context["elements"]][:2] == [
        f"<{RUNBOOK}|Runbook>",
        f"<{DASHBOARD}|Dashboard>",
    ]
    assert "remediator-7-2-ops" in context["elements"][2]["text"]
    for block in blocks:  # Slack refuses a message whose texts exceed its limits
        for text in _texts(block):
            assert len(text) <= 3000
        assert len(block.get("fields", [])) <= 10 and len(block.get("elements", [])) <= 10


async def test_slack_escapes_what_comes_from_alerts(capture_server: CaptureServer) -> None:
    body = payload()
    body["target"] = "<!channel> db"
    body["summary"] = "down <https://evil.example|click> & out"
    body["reason"] = "<@U123> did it"
    notifier = SlackNotifier("ops", f"{capture_server.url}/hook", None, 5)
    await notifier.send(body, "k")
    await notifier.resolve({**body, "event": "resolve"}, "k2")
    await notifier.close()
    first, second = await capture_server.wait_for(2)
    raw = first.body.decode() + second.body.decode()
    assert "<!channel>" not in raw and "<@U123>" not in raw and "<https://evil" not in raw
    assert "&lt;!channel&gt; db" in raw and "&amp; out" in raw
    assert "channel" not in first.json  # no override configured
    assert second.json["text"].startswith(":white_check_mark: Resolved: DatabaseDown on &lt;!channel&gt; db")


async def test_pagerduty_trigger_and_resolve_follow_events_api_v2(capture_server: CaptureServer) -> None:
    key = "R" * 32
    notifier = PagerDutyNotifier("pd", key, f"{capture_server.url}/v2/enqueue", 5)
    await notifier.send(payload(reason="x" * 2000), "remediator-7-2-pd")
    await notifier.resolve(resolved_payload(), "remediator-7-resolved-pd")
    await notifier.close()
    trigger, resolve = (r.json for r in await capture_server.wait_for(2))

    assert trigger["routing_key"] == key and trigger["event_action"] == "trigger"
    assert trigger["dedup_key"].startswith("remediator-7-") and len(trigger["dedup_key"]) <= 255
    event = trigger["payload"]
    assert {
        "summary",
        "source",
        "severity",
        "timestamp",
        "component",
        "group",
        "class",
        "custom_details",
    } <= set(event)
    assert len(event["summary"]) <= 1024  # PagerDuty's limit; the long reason was cut
    assert event["summary"].startswith("P1 remediation failed: DatabaseDown on sms-db: PostgreSQL is down (")
    assert event["severity"] == "critical" and event["source"] == "sms-db"
    assert event["group"] == "database-down" and event["class"] == "DatabaseDown"
    assert datetime.fromisoformat(event["timestamp"]).timestamp() == pytest.approx(OPENED + 251.2)
    details = event["custom_details"]
    assert details["incident_id"] == 7 and details["priority"] == "P1" and details["duration"] == "4m 11s"
    assert details["steps"][0].startswith("10:00:01 diagnose container.logs #1 -> ok")
    assert "FATAL connection 399 refused" in details["evidence"]
    assert details["remediator_dedup_key"] == "remediator-7-2-pd"
    assert trigger["links"] == [
        {"href": RUNBOOK, "text": "Runbook"},
        {"href": DASHBOARD, "text": "Dashboard"},
    ]
    json.dumps(trigger).encode()  # serialisable, and well under the 512 KB limit:
    assert len(json.dumps(trigger)) < 512 * 1024

    assert resolve == {"routing_key": key, "event_action": "resolve", "dedup_key": trigger["dedup_key"]}


async def test_pagerduty_severity_follows_the_priority(capture_server: CaptureServer) -> None:
    notifier = PagerDutyNotifier("pd", "k", f"{capture_server.url}/v2/enqueue", 5)
    for priority in ("P1", "P2"):
        await notifier.send(payload(priority), f"key-{priority}")
    await notifier.close()
    sent = [r.json["payload"]["severity"] for r in await capture_server.wait_for(2)]
    assert sent == ["critical", "error"]


@pytest.mark.parametrize("status", [429, 500, 502, 503])
async def test_retryable_answers_are_notify_errors(
    capture_server: CaptureServer, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    capture_server.fail_first(1, status)
    notifier = WebhookNotifier("oncall", f"{capture_server.url}/hook", {}, 5)
    with pytest.raises(NotifyError, match=f"answered {status}"):
        await notifier.send(payload(), "k")
    await notifier.send(payload(), "k")  # the next attempt goes through
    await notifier.close()
    assert [r.status for r in capture_server.requests] == [status, 200]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_refusing_receiver_is_logged_loudly_and_retried(
    capture_server: CaptureServer, caplog: pytest.LogCaptureFixture
) -> None:
    capture_server.fail_first(1, 403)
    notifier = SlackNotifier("ops", f"{capture_server.url}/services/T0/B0/secret", None, 5)
    with pytest.raises(NotifyError, match="answered 403") as raised:
        await notifier.send(payload(), "k")
    await notifier.close()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "check the settings of notifier ops" in errors[0]
    # The webhook URL is a credential: neither the error nor the log shows its path.
    assert "secret" not in str(raised.value) and "secret" not in errors[0]


async def test_an_unreachable_receiver_is_a_notify_error() -> None:
    notifier = PagerDutyNotifier("pd", "k", f"http://127.0.0.1:{free_port()}/v2/enqueue", 2)
    with pytest.raises(NotifyError, match="unreachable"):
        await notifier.send(payload(), "k")
    await notifier.close()


async def test_the_generic_webhook_posts_the_payload_with_an_idempotency_key(
    capture_server: CaptureServer,
) -> None:
    notifier = WebhookNotifier("oncall", f"{capture_server.url}/hook", {"Authorization": "Bearer t"}, 5)
    await notifier.send(payload(), "remediator-7-2-oncall")
    await notifier.close()
    (request,) = await capture_server.wait_for(1)
    assert request.headers["Idempotency-Key"] == "remediator-7-2-oncall"
    assert request.headers["Authorization"] == "Bearer t"
    body = request.json
    assert body == json.loads(json.dumps(payload()))
    assert body["event"] == "escalate" and body["priority"] == "P1" and body["status"] == "escalated"
    assert body["duration_s"] == 251.2 and body["opened_at"] == "2026-11-23T10:00:00+00:00"
    assert body["steps"][1] == {
        "index": 1,
        "kind": "act",
        "name": "container.restart",
        "attempt": 1,
        "status": "ok",
        "detail": "restarted sms-db",
        "started_at": "2026-11-23T10:00:02+00:00",
        "finished_at": "2026-11-23T10:00:05+00:00",
    }
