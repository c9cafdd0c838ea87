"""The outbox in the real daemon: an escalation survives a notifier outage and a restart of the daemon in between,
and reaches every routed notifier exactly once per dedup key; the resolve follows with PagerDuty's dedup_key."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers import TOKEN, alert, eventually, notification, post_alerts
from realparts import CapturedRequest, CaptureServer

from remediator.app import App

POLICY = """\
name: database-down
match:
  - alertname = DatabaseDown
target:
  kind: container
  from_label: container
  allow: ["db"]
steps:
  - escalate: oncall
"""


@pytest.fixture
def daemon(start_app: Callable[..., Any]) -> Callable[..., Any]:
    """start(**env) runs an App on the state dir of this test; each start is a new daemon on the same store."""

    def start(**extra: str) -> Any:
        return start_app(
            policies={"db.yaml": POLICY},
            REMEDIATOR_DOCKER__HOST="unix:///nonexistent.sock",  # no action in these policies
            REMEDIATOR_SERVER__SHUTDOWN_GRACE_S="0",
            **extra,
        )

    return start


async def post(app: App, *alerts: dict[str, Any]) -> None:
    assert await post_alerts(app.port, [notification(*alerts)]) == [200]


async def api(app: App, path: str) -> Any:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{app.port}{path}", headers={"Authorization": f"Bearer {TOKEN}"}) as r,
    ):
        assert r.status == 200
        return await r.json()


async def test_down_for_3_attempts_with_a_restart_in_between_delivers_exactly_once(
    daemon: Callable[..., Any], capture_server: CaptureServer
) -> None:
    targets = json.dumps({"oncall": {"url": f"{capture_server.url}/hook"}})
    capture_server.fail_first(3)
    # The first daemon waits 0.5 s after a failure: it is stopped before its second attempt.
    first = await daemon(REMEDIATOR_ESCALATION__TARGETS=targets, REMEDIATOR_ESCALATION__BACKOFF_MAX_S="5")
    await post(first, alert(container="db"))
    await capture_server.wait_for(1, timeout=10)
    await eventually(lambda: _attempted(first))  # the refusal is recorded: stop between two attempts
    await first.stop()
    tried_before_restart = len(capture_server.requests)
    (pending,) = await _pending(tmp_store := first.store.path)  # still in the outbox, across the restart
    assert pending["attempts"] == tried_before_restart and "503" in pending["error"]

    second = await daemon(REMEDIATOR_ESCALATION__TARGETS=targets, REMEDIATOR_ESCALATION__BACKOFF_MAX_S="0.1")
    requests = await capture_server.wait_for(4, timeout=15)
    await eventually(lambda: _kinds(second, "escalation_delivered"))
    assert [r.status for r in capture_server.requests] == [503, 503, 503, 200]  # nothing after the 200
    assert {r.headers["Idempotency-Key"] for r in requests} == {"remediator-1-0-oncall"}
    assert all(r.json == requests[0].json for r in requests)  # the stored payload, not a rebuilt one
    assert requests[0].json["incident_id"] == 1 and requests[0].json["priority"] == "P1"
    assert 1 <= tried_before_restart < 4
    (delivered,) = [a for a in await second.store.audit_trail(1) if a.kind == "escalation_delivered"]
    assert delivered.detail["attempts"] == 4
    assert await _pending(tmp_store) == []


async def test_every_routed_notifier_gets_it_once_across_a_restart_and_the_resolve_follows(
    daemon: Callable[..., Any], capture_server: CaptureServer
) -> None:
    url = capture_server.url
    env = {
        "REMEDIATOR_ESCALATION__TARGETS": json.dumps({"oncall": {"url": f"{url}/hook"}}),
        "REMEDIATOR_ESCALATION__SLACK": json.dumps({"chat": {"webhook_url": f"{url}/slack"}}),
        "REMEDIATOR_ESCALATION__PAGERDUTY": json.dumps({"pd": {"routing_key": "R" * 32, "url": f"{url}/pd"}}),
        "REMEDIATOR_ESCALATION__ROUTING__ROUTES": json.dumps({"P1": ["pd", "chat"], "P3": ["chat"]}),
    }
    capture_server.fail_first(3)
    first = await daemon(**env, REMEDIATOR_ESCALATION__BACKOFF_MAX_S="5")
    await post(first, alert(container="db"))
    await capture_server.wait_for(3, timeout=10)  # each notifier's first attempt, all refused
    await first.stop()

    second = await daemon(**env, REMEDIATOR_ESCALATION__BACKOFF_MAX_S="0.1")
    await eventually(lambda: len(_ok(capture_server)) >= 3, timeout=15)
    await post(second, alert(container="db", status="resolved"))
    await eventually(lambda: len(_ok(capture_server)) >= 5, timeout=15)
    await eventually(lambda: _kinds(second, "resolution_delivered", 2))

    delivered = sorted(_key(r) for r in _ok(capture_server))
    assert delivered == sorted(
        [
            ("/hook", "remediator-1-0-oncall"),
            ("/pd", "trigger"),
            ("/slack", "escalate"),
            ("/pd", "resolve"),
            ("/slack", "resolved"),
        ]
    )
    pd = [r.json for r in _ok(capture_server) if r.path == "/pd"]
    assert pd[0]["event_action"] == "trigger" and pd[1]["event_action"] == "resolve"
    assert pd[0]["dedup_key"] == pd[1]["dedup_key"]
    assert pd[0]["payload"]["severity"] == "critical"

    # The incident record tells the story, through the API.
    record = await api(second, "/api/incidents/1")
    kinds = [t["kind"] for t in record["timeline"]]
    assert kinds[0] == "opened" and kinds.count("escalation_queued") == 3
    assert kinds.count("escalation_delivered") == 3 and kinds.count("resolution_delivered") == 2
    assert record["status"] == "resolved"


async def test_a_p3_alert_reaches_chat_and_pages_nobody(
    daemon: Callable[..., Any], capture_server: CaptureServer
) -> None:
    url = capture_server.url
    app = await daemon(
        REMEDIATOR_ESCALATION__SLACK=json.dumps({"chat": {"webhook_url": f"{url}/slack"}}),
        REMEDIATOR_ESCALATION__PAGERDUTY=json.dumps({"oncall": {"routing_key": "k", "url": f"{url}/pd"}}),
        REMEDIATOR_ESCALATION__ROUTING__ROUTES=json.dumps({"P3": ["chat"]}),
    )
    warning = alert(container="db")
    warning["labels"]["severity"] = "warning"
    await post(app, warning)
    (request,) = await capture_server.wait_for(1, timeout=10)
    assert request.path == "/slack" and "P3" in request.json["text"]
    await eventually(lambda: _kinds(app, "escalation_delivered"))
    assert [r.path for r in capture_server.requests] == ["/slack"]
    assert await _kinds(app, "escalation_skipped")


def _ok(capture: CaptureServer) -> list[CapturedRequest]:
    return [r for r in capture.requests if r.status == 200]


def _key(r: CapturedRequest) -> tuple[str, str]:
    if r.path == "/hook":
        return r.path, r.headers["Idempotency-Key"]
    if r.path == "/pd":
        return r.path, r.json["event_action"]
    return r.path, "resolved" if "Resolved" in r.json["text"] else "escalate"


async def _kinds(app: App, kind: str, n: int = 1) -> bool:
    return sum(1 for a in await app.store.audit_trail(1) if a.kind == kind) >= n


async def _attempted(app: App) -> bool:
    return any(e.attempts >= 1 for e in await app.store.outbox_pending())


async def _pending(path: Path) -> list[dict[str, Any]]:
    import sqlite3

    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM outbox WHERE status = 'pending'")]
