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

from remediator.domain.incidents import AuditRecord, Incident, StepRecord
from remediator.domain.story import build_payload
from remediator.errors import NotifyError
from remediator.escalation import format as fmt
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
        host="db-host-1",
    )


FIRED = OPENED - 95  # the alert's startsAt: Alertmanager's group_wait and friends come before the incident
TRAIL = [AuditRecord(1, OPENED, 7, "opened", {"starts_at": "2026-11-23T09:58:25+00:00", "fingerprint": "f"})]


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
    body = build_payload(incident(), None, steps(), reason, OPENED + 251.2, priority=priority, trail=TRAIL)
    body["target_kind"] = "container"  # from the policy, which these tests do not load
    return body


def approval_payload(on_timeout: str = "proceed") -> dict[str, Any]:
    """An approval request, as engine/escalate.py builds it."""
    body = build_payload(
        incident(),
        None,
        steps()[:1],
        "approval needed: container.restart on sms-db, within 300s",
        OPENED + 3,
        priority="P1",
        status="awaiting_approval",
        trail=TRAIL,
        event="approval_requested",
        approval={
            "step": "container.restart",
            "timeout_s": 300,
            "expires_at": "2026-11-23T10:05:03+00:00",
            "on_timeout": on_timeout,
        },
    )
    body["target_kind"] = "container"
    body["approval_url"] = "https://remediator.example.com/approval/7?sig=abc"
    return body


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
        "section",
        "context",
    ]
    header, summary, facts, following, did, why, evidence, context = blocks
    assert header["text"]["type"] == "plain_text" and len(header["text"]["text"]) <= 150
    assert "P1 Remediation failed: DatabaseDown on sms-db" in header["text"]["text"]
    assert summary["text"]["text"] == "PostgreSQL is down"
    assert [f["text"] for f in facts["fields"]] == [
        "*Alert*\nDatabaseDown",
        "*Severity*\ncritical (P1)",
        "*Firing since*\n2026-11-23 09:58:25 UTC",
        "*Target*\ncontainer sms-db on host db-host-1",
        "*Incident*\n#7 (database-down)",
        "*Duration*\n4m 11s",
        "*Status*\nescalated",
    ]
    assert following["text"]["text"] == (
        "*What happens next*\nremediator has stopped acting on this incident: a person owns it now. "
        "It closes by itself when its alerts resolve."
    )
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
    assert details["alert"] == "DatabaseDown" and details["summary"] == "PostgreSQL is down"
    assert details["firing_since"] == "2026-11-23 09:58:25 UTC" and details["host"] == "db-host-1"
    assert details["target"] == "container sms-db on host db-host-1"
    assert details["next"].startswith("remediator has stopped acting on this incident")
    assert details["runbook_url"] == RUNBOOK and details["dashboard_url"] == DASHBOARD
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


@pytest.mark.parametrize("on_timeout", ["proceed", "deny"])
async def test_an_approval_request_carries_the_same_context_to_slack_and_pagerduty(
    capture_server: CaptureServer, on_timeout: str
) -> None:
    body = approval_payload(on_timeout)
    slack = SlackNotifier("ops", f"{capture_server.url}/services/T0/B0/secret", None, 5)
    pd = PagerDutyNotifier("pd", "R" * 32, f"{capture_server.url}/v2/enqueue", 5)
    await slack.send(body, "remediator-7-1-approval-1-ops")
    await pd.send(body, "remediator-7-1-approval-1-pd")
    await slack.close()
    await pd.close()
    slack_request, pd_request = await capture_server.wait_for(2)
    blocks, event = slack_request.json["blocks"], pd_request.json

    # What it is: an approval request, not a failure.
    assert blocks[0]["text"]["text"] == (
        ":raising_hand: P1 Approval needed: container.restart on sms-db (DatabaseDown)"
    )
    assert event["payload"]["summary"].startswith(
        "P1 approval needed: container.restart on sms-db (DatabaseDown): PostgreSQL is down (approval needed"
    )
    # The same facts in both: alert, severity, firing since, target and host, incident, duration, status.
    details = event["payload"]["custom_details"]
    fields = [f["text"] for f in blocks[2]["fields"]]
    for name, value in fmt.facts(body):
        assert f"*{name}*\n{value}" in fields
        assert details[name.lower().replace(" ", "_")] == value
    assert ("Firing since", "2026-11-23 09:58:25 UTC") in fmt.facts(body)
    assert ("Target", "container sms-db on host db-host-1") in fmt.facts(body)
    assert details["summary"] == "PostgreSQL is down" and blocks[1]["text"]["text"] == "PostgreSQL is down"

    # What happens next, with what silence does at what time, and the link to decide.
    silence = (
        "container.restart runs anyway (on_timeout: proceed)"
        if on_timeout == "proceed"
        else "container.restart does not run and the incident is escalated to people (on_timeout: deny)"
    )
    following = blocks[3]["text"]["text"]
    assert following.startswith("*What happens next*\nApprove: container.restart runs on sms-db at once")
    assert f"No answer by 2026-11-23 10:05:03 UTC: {silence}." in following
    assert "<https://remediator.example.com/approval/7?sig=abc|Approve or deny>" in following
    assert (
        details["next"] == body["next"]
        and f"No answer by 2026-11-23 10:05:03 UTC: {silence}." in details["next"]
    )
    assert blocks[5]["text"]["text"].startswith("*Why it asks*\napproval needed")

    # The evidence's tail and the links, in both.
    assert "FATAL connection 399 refused" in blocks[6]["text"]["text"]
    assert "FATAL connection 399 refused" in details["evidence"]
    assert event["links"] == [
        {"href": "https://remediator.example.com/approval/7?sig=abc", "text": "Approve or deny"},
        {"href": RUNBOOK, "text": "Runbook"},
        {"href": DASHBOARD, "text": "Dashboard"},
    ]
    context = [e["text"] for e in blocks[-1]["elements"]]
    assert f"<{RUNBOOK}|Runbook>" in context and f"<{DASHBOARD}|Dashboard>" in context


async def test_huge_values_stay_within_slack_and_pagerduty_limits(capture_server: CaptureServer) -> None:
    body = approval_payload()
    body["summary"] = "s" * 10_000
    body["reason"] = "r" * 10_000
    body["target"] = "t" * 300
    body["labels"] = {f"label{i}": "v" * 1000 for i in range(100)}
    body["evidence"] = [{"name": f"diag{i}", "detail": "x" * 50_000} for i in range(20)]
    body["steps"] = [{**body["steps"][0], "detail": "d" * 5000} for _ in range(50)]
    slack = SlackNotifier("ops", f"{capture_server.url}/hook", None, 5)
    pd = PagerDutyNotifier("pd", "k", f"{capture_server.url}/v2/enqueue", 5)
    await slack.send(body, "k")
    await pd.send(body, "k")
    await slack.close()
    await pd.close()
    slack_request, pd_request = await capture_server.wait_for(2)
    blocks = slack_request.json["blocks"]
    assert len(blocks) <= 50 and len(blocks[0]["text"]["text"]) <= 150
    for block in blocks:
        for text in _texts(block):
            assert len(text) <= 3000
        for field in block.get("fields", []):
            assert len(field["text"]) <= 2000
        assert len(block.get("fields", [])) <= 10 and len(block.get("elements", [])) <= 10
    assert len(slack_request.json["text"]) <= 3000
    assert len(pd_request.json["payload"]["summary"]) <= 1024
    assert len(pd_request.body) < 512 * 1024


def test_what_happens_next_follows_the_event() -> None:
    last = build_payload(incident(), None, steps(), "r", OPENED + 10)
    going_on = build_payload(incident(), None, steps(), "r", OPENED + 10, handed_over=False)
    resolve = build_payload(incident(), None, steps(), "r", OPENED + 10, event="resolve", status="resolved")
    assert last["next"].startswith("remediator has stopped acting on this incident: a person owns it now")
    assert going_on["next"] == "For your information: remediator goes on with the next steps of the policy."
    assert resolve["next"] == "Nothing to do: the alerts resolved and the incident is closed."
    # Without the trail, the alert fired when the incident opened; with it, at its startsAt.
    assert last["firing_since"] == "2026-11-23T10:00:00+00:00"
    assert payload()["firing_since"] == "2026-11-23T09:58:25+00:00"
    # A payload stored before these fields existed still reads well.
    old = {k: v for k, v in payload().items() if k not in ("next", "firing_since", "target_kind", "host")}
    assert fmt.next_text(old).startswith("remediator has stopped acting")  # type: ignore[arg-type]
    assert dict(fmt.facts(old))["Firing since"] == "2026-11-23 10:00:00 UTC"  # type: ignore[arg-type]
    assert dict(fmt.facts(old))["Target"] == "sms-db"  # type: ignore[arg-type]
