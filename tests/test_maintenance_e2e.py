"""Maintenance windows on real parts: a real daemon (SQLite store), a container on the private dockerd, the
webhook notifier pointed at a capture server, and the command line calling the daemon's API.

During a window an alert restarts nothing and pages nobody, and the audit says why; cancelling the window with
the alert still firing starts the ladder and the container restarts; a window scheduled ahead holds from its
start and, ending on time, does the same; an alert that resolves during a window closes its incident quietly;
a window that is too long is refused, one on a target no policy admits is warned about.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from helpers import TOKEN, alert, eventually, notification, post_alerts
from realparts import CaptureServer, DockerDaemon

from remediator.app import App
from remediator.cli import main
from remediator.domain.incidents import Incident
from remediator.domain.maintenance import MaintenanceWindow
from remediator.domain.story import build_payload
from remediator.engine.runner import RetryPolicy
from remediator.errors import ConfigError
from remediator.escalation.format import headline
from remediator.escalation.slack import slack_message

POLICY = """\
name: database-down
match: [alertname = DatabaseDown]
target: {kind: container, from_label: container, allow: ["maint-[a-z0-9]+"]}
steps:
  - act: container.restart
    with: {timeout_s: 2}
    verify: {resolved_within_s: 30}
  - escalate: oncall
limits:
  cooldown_s: 0
"""


@pytest.fixture
def daemon(
    start_app: Callable[..., Any], docker_daemon: DockerDaemon, capture_server: CaptureServer
) -> Callable[..., Any]:
    def start(**env: str) -> Any:
        return start_app(
            policies={"database-down.yaml": POLICY},
            retry=RetryPolicy(tries=2, initial_s=0.05, max_s=0.1),
            REMEDIATOR_DOCKER__HOST=docker_daemon.host,
            REMEDIATOR_ESCALATION__TARGETS=json.dumps({"oncall": {"url": f"{capture_server.url}/hook"}}),
            REMEDIATOR_MAINTENANCE__TICK_S="0.2",
            **env,
        )

    return start


async def cli(app: App, *args: str) -> int:
    """``remediator ARGS --url ... --token ...``, in a thread (it calls the daemon's API synchronously)."""
    argv = [*args, "--url", f"http://127.0.0.1:{app.port}", "--token", TOKEN]
    return await asyncio.to_thread(main, argv)


async def api(app: App, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, f"http://127.0.0.1:{app.port}{path}", json=body, headers=headers) as r,
    ):
        return r.status, await r.json()


async def incident_of(app: App, target: str) -> Any:
    found = [i for i in await app.store.list_incidents() if i.target == target]
    return found[0] if found else None


def firing(target: str, fp: str) -> dict[str, Any]:
    return notification(alert("DatabaseDown", fingerprint=fp, container=target))


def resolved(target: str, fp: str) -> dict[str, Any]:
    return notification(alert("DatabaseDown", status="resolved", fingerprint=fp, container=target))


async def test_an_alert_in_a_window_restarts_nothing_and_pages_nobody_until_the_window_is_cancelled(
    daemon: Callable[..., Any],
    docker_daemon: DockerDaemon,
    capture_server: CaptureServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await asyncio.to_thread(docker_daemon.run_container, "maint-db")
    before = await asyncio.to_thread(docker_daemon.started_at, "maint-db")
    app = await daemon()
    reason = "disk swap, CHG-1234"
    assert (
        await cli(app, "maintenance", "add", "--target", "maint-db", "--for", "2h", "--reason", reason) == 0
    )
    declared = capsys.readouterr().out
    assert "maintenance window 1 on maint-db (host any, policy any)" in declared and "in force" in declared

    assert await post_alerts(app.port, [firing("maint-db", "fp-1")]) == [200]
    assert app.intake is not None
    await app.intake.join()
    incident = await incident_of(app, "maint-db")
    assert incident.status == "maintenance" and reason in incident.reason
    await asyncio.sleep(1.5)  # several passes of the maintenance task, and Alertmanager's re-send
    assert await post_alerts(app.port, [firing("maint-db", "fp-1")]) == [200]
    await app.intake.join()
    assert await asyncio.to_thread(docker_daemon.started_at, "maint-db") == before  # not restarted
    assert capture_server.requests == []  # nobody paged
    assert await app.store.steps(incident.id) == []
    held = [a for a in await app.store.audit_trail(incident.id) if a.kind == "maintenance"]
    assert len(held) == 1 and held[0].detail["reason"] == reason and held[0].detail["window"] == 1
    assert app.metrics.maintenance.labels("database-down", "held")._value.get() == 1
    assert app.metrics.decisions.labels("maintenance")._value.get() == 1

    # The listings say it: the window in force, the incident in maintenance.
    assert await cli(app, "maintenance", "list") == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0].split()[:3] == ["ID", "STATE", "TARGET"]
    assert listed[1].split()[:4] == ["1", "in", "force", "maint-db"] and reason in listed[1]
    status, body = await api(app, "GET", "/api/incidents?status=maintenance")
    assert status == 200 and [i["id"] for i in body["incidents"]] == [incident.id]
    assert await cli(app, "status") == 0
    shown = capsys.readouterr().out.splitlines()
    assert "maintenance     1 window(s) in force (`remediator maintenance list`)" in shown
    assert "open incidents  1" in shown

    # Cancelled with the alert still firing: evaluated as new, the ladder starts, the container restarts.
    assert await cli(app, "maintenance", "cancel", "1") == 0
    assert "maintenance window 1 cancelled" in capsys.readouterr().out
    await eventually(
        lambda: asyncio.to_thread(lambda: docker_daemon.started_at("maint-db") != before), timeout=20
    )
    after = await app.store.get_incident(incident.id)
    assert after is not None and after.status == "active"
    kinds = [a.kind for a in await app.store.audit_trail(incident.id)]
    assert kinds.index("opened") < kinds.index("maintenance") < kinds.index("maintenance_ended")
    assert app.metrics.maintenance.labels("database-down", "resumed")._value.get() == 1
    # The alert resolves: recovered, and still nobody was paged.
    assert await post_alerts(app.port, [resolved("maint-db", "fp-1")]) == [200]
    await eventually(lambda: incident_status(app, incident.id, "resolved"))

    async def settled() -> list[Any]:  # the restart's result may land just after the resolution
        steps = await app.store.steps(incident.id)
        return steps if all(s.status != "started" for s in steps) else []

    steps = await eventually(settled)
    assert [(s.name, s.status) for s in steps] == [("container.restart", "ok")]
    assert capture_server.requests == []
    cancelled = await app.store.audit_trail(None, kinds=["maintenance_cancelled"])
    assert len(cancelled) == 1 and "@" in cancelled[0].detail["cancelled_by"]


async def incident_status(app: App, incident_id: int, status: str) -> bool:
    found = await app.store.get_incident(incident_id)
    return found is not None and found.status == status


async def test_a_window_scheduled_ahead_holds_from_its_start_and_its_end_on_time_starts_the_ladder(
    daemon: Callable[..., Any], docker_daemon: DockerDaemon, capture_server: CaptureServer
) -> None:
    await asyncio.to_thread(docker_daemon.run_container, "maint-app")
    before = await asyncio.to_thread(docker_daemon.started_at, "maint-app")
    app = await daemon()
    start = time.time() + 1.0
    body = {
        "target": "maint-app",
        "policy": "database-down",
        "for_s": 2.5,
        "start": start,
        "reason": "upgrade",
    }
    status, declared = await api(app, "POST", "/api/maintenance", body)
    assert status == 201 and declared["window"]["state"] == "scheduled" and declared["warnings"] == []
    await asyncio.sleep(max(0.0, start - time.time()) + 0.1)
    status, listed = await api(app, "GET", "/api/maintenance")
    assert [w["state"] for w in listed["windows"]] == ["in force"]

    assert await post_alerts(app.port, [firing("maint-app", "fp-2")]) == [200]
    assert app.intake is not None
    await app.intake.join()
    incident = await incident_of(app, "maint-app")
    assert incident.status == "maintenance"
    assert await asyncio.to_thread(docker_daemon.started_at, "maint-app") == before
    # The window ends on time (no one cancels it); the alert still fires: the container is restarted.
    await eventually(
        lambda: asyncio.to_thread(lambda: docker_daemon.started_at("maint-app") != before), timeout=20
    )
    assert time.time() >= start + 2.5
    ended = [a for a in await app.store.audit_trail(incident.id) if a.kind == "maintenance_ended"]
    assert len(ended) == 1 and "ladder starts" in ended[0].detail["then"]
    assert capture_server.requests == []
    status, listed = await api(app, "GET", "/api/maintenance?all=1")
    assert [w["state"] for w in listed["windows"]] == ["ended"]


async def test_an_alert_that_resolves_during_a_window_closes_quietly(
    daemon: Callable[..., Any], docker_daemon: DockerDaemon, capture_server: CaptureServer
) -> None:
    await asyncio.to_thread(docker_daemon.run_container, "maint-cache")
    before = await asyncio.to_thread(docker_daemon.started_at, "maint-cache")
    app = await daemon()
    status, declared = await api(
        app, "POST", "/api/maintenance", {"target": "maint-cache", "for_s": 600, "reason": "reindex"}
    )
    assert status == 201
    assert await post_alerts(app.port, [firing("maint-cache", "fp-3")]) == [200]
    assert app.intake is not None
    await app.intake.join()
    incident = await incident_of(app, "maint-cache")
    assert incident.status == "maintenance"
    assert await post_alerts(app.port, [resolved("maint-cache", "fp-3")]) == [200]
    await app.intake.join()
    assert await incident_status(app, incident.id, "resolved")
    status, _ = await api(app, "DELETE", f"/api/maintenance/{declared['window']['id']}")
    assert status == 200
    await asyncio.sleep(1.0)  # passes after the end: nothing to resume
    assert await asyncio.to_thread(docker_daemon.started_at, "maint-cache") == before
    assert capture_server.requests == []
    assert await app.store.steps(incident.id) == []
    assert await app.store.outbox_entries(incident.id) == []
    # Cancelling it again: it is over.
    status, again = await api(app, "DELETE", f"/api/maintenance/{declared['window']['id']}")
    assert status == 200 and again["window"]["state"] == "cancelled"


async def test_a_window_too_long_is_refused_and_one_on_an_unknown_target_is_warned_about(
    daemon: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    app = await daemon(REMEDIATOR_MAINTENANCE__MAX_S="3600")
    assert await cli(app, "maintenance", "add", "--target", "maint-db", "--for", "2h", "--reason", "x") == 1
    err = capsys.readouterr().err
    assert "longer than the longest allowed, 3600s (REMEDIATOR_MAINTENANCE__MAX_S)" in err
    status, body = await api(
        app, "POST", "/api/maintenance", {"target": "maint-db", "for_s": 7200, "reason": "x"}
    )
    assert status == 400 and "REMEDIATOR_MAINTENANCE__MAX_S" in body["error"]
    for bad, why in (
        ({"target": "maint-db", "for_s": 60}, "reason is required"),
        ({"target": "maint-db", "for_s": "1h", "reason": "x"}, "for_s"),
        ({"target": "maint-db", "for_s": 60, "reason": "x", "start": "tomorrow"}, "not an ISO 8601 time"),
        ({"target": "maint-db", "for_s": 60, "reason": "x", "start": time.time() - 120}, "in the past"),
    ):
        status, body = await api(app, "POST", "/api/maintenance", bad)
        assert status == 400 and why in body["error"], body
    assert await cli(app, "maintenance", "add", "--target", "maint-db", "--for", "soon", "--reason", "x") == 1
    assert "is not a duration" in capsys.readouterr().err
    assert await cli(app, "maintenance", "add", "--target", "maint-db", "--reason", "x") == 1
    assert "maintenance add needs --for" in capsys.readouterr().err

    # An unknown target (no policy admits it), host and policy: stored, and said.
    args = (
        "maintenance",
        "add",
        "--target",
        "billing-db",
        "--host",
        "db-9",
        "--policy",
        "nope",
        "--for",
        "30m",
    )
    assert await cli(app, *args, "--reason", "vendor work") == 0
    err = capsys.readouterr().err
    assert "warning: no policy 'nope' is loaded" in err
    assert "admits target 'billing-db'" in err and "warning: Docker host 'db-9' is not configured" in err
    status, listed = await api(app, "GET", "/api/maintenance")
    assert [w["target"] for w in listed["windows"]] == ["billing-db"]
    # The API needs the token like every other route.
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{app.port}/api/maintenance") as r:
        assert r.status == 401
    assert await cli(app, "maintenance", "cancel", "99") == 1
    assert "no maintenance window 99" in capsys.readouterr().err


RETRYING = """\
name: database-down
match: [alertname = DatabaseDown]
target: {kind: container, from_label: container, allow: ["maint-[a-z0-9]+"]}
steps:
  - act: container.restart
    with: {timeout_s: 2}
    attempts: 10
    verify: {resolved_within_s: 1}
  - escalate: oncall
limits:
  cooldown_s: 0
  max_actions: {count: 100, window_s: 3600}
"""


async def test_a_window_that_begins_while_the_ladder_runs_stops_it_before_its_next_restart(
    start_app: Callable[..., Any], docker_daemon: DockerDaemon, capture_server: CaptureServer
) -> None:
    await asyncio.to_thread(docker_daemon.run_container, "maint-busy")
    app = await start_app(
        policies={"database-down.yaml": RETRYING},
        retry=RetryPolicy(tries=2, initial_s=0.05, max_s=0.1),
        REMEDIATOR_DOCKER__HOST=docker_daemon.host,
        REMEDIATOR_ESCALATION__TARGETS=json.dumps({"oncall": {"url": f"{capture_server.url}/hook"}}),
        REMEDIATOR_MAINTENANCE__TICK_S="0.2",
        REMEDIATOR_STORE__LEASE_S="1.5",
    )
    assert await post_alerts(app.port, [firing("maint-busy", "fp-5")]) == [200]
    assert app.intake is not None
    await app.intake.join()
    incident = await incident_of(app, "maint-busy")

    async def restarts() -> int:
        return len([s for s in await app.store.steps(incident.id) if s.name == "container.restart"])

    await eventually(lambda: _at_least(restarts, 2), timeout=20)  # the ladder restarts, again and again
    status, _ = await api(
        app, "POST", "/api/maintenance", {"target": "maint-busy", "for_s": 600, "reason": "hands on"}
    )
    assert status == 201
    held = await app.store.get_incident(incident.id)
    assert held is not None and held.status == "maintenance"
    await eventually(lambda: app.runner.running == 0, timeout=10)  # the keeper stopped the fenced ladder
    settled = await restarts()
    started = await asyncio.to_thread(docker_daemon.started_at, "maint-busy")
    await asyncio.sleep(3.0)  # without the window: three more attempts by now
    assert await restarts() == settled
    assert await asyncio.to_thread(docker_daemon.started_at, "maint-busy") == started
    assert capture_server.requests == []  # and nobody was paged
    kinds = [a.kind for a in await app.store.audit_trail(incident.id)]
    assert kinds.count("maintenance") == 1
    assert app.metrics.maintenance.labels("database-down", "held")._value.get() == 1


async def _at_least(count: Callable[[], Any], n: int) -> bool:
    return bool(await count() >= n)


async def test_a_chat_notice_is_sent_once_per_incident_and_window_when_set_and_never_to_a_pager(
    start_app: Callable[..., Any], docker_daemon: DockerDaemon, capture_server: CaptureServer
) -> None:
    await asyncio.to_thread(docker_daemon.run_container, "maint-chat")
    before = await asyncio.to_thread(docker_daemon.started_at, "maint-chat")
    notifiers = {
        "oncall": {"url": f"{capture_server.url}/hook"},
        "chat": {"url": f"{capture_server.url}/chat"},
    }
    pager = json.dumps({"pd": {"routing_key": "R" * 32, "url": f"{capture_server.url}/pd"}})
    with pytest.raises(ConfigError, match="'pd' is a PagerDuty notifier; a maintenance notice must not page"):
        await start_app(
            policies={"database-down.yaml": POLICY},
            REMEDIATOR_ESCALATION__PAGERDUTY=pager,
            REMEDIATOR_MAINTENANCE__NOTIFY="pd",
        )
    app = await start_app(
        policies={"database-down.yaml": POLICY},
        REMEDIATOR_DOCKER__HOST=docker_daemon.host,
        REMEDIATOR_ESCALATION__TARGETS=json.dumps(notifiers),
        REMEDIATOR_MAINTENANCE__NOTIFY="chat",
        REMEDIATOR_MAINTENANCE__TICK_S="0.2",
    )
    status, _ = await api(
        app, "POST", "/api/maintenance", {"target": "maint-chat", "for_s": 600, "reason": "vacuum"}
    )
    assert status == 201
    assert await post_alerts(app.port, [firing("maint-chat", "fp-6")]) == [200]
    (notice,) = await capture_server.wait_for(1)
    assert notice.path == "/chat" and notice.json["event"] == "maintenance"
    assert notice.json["status"] == "maintenance" and "vacuum" in notice.json["reason"]
    assert (
        notice.json["target"] == "maint-chat" and "maintenance window holds maint-chat" in notice.json["next"]
    )
    # A re-send and another alert of the same target: still the one notice; the alert resolves: quietly.
    second = notification(alert("DatabaseDown", fingerprint="fp-7", container="maint-chat"))
    assert await post_alerts(app.port, [firing("maint-chat", "fp-6"), second]) == [200, 200]
    assert await post_alerts(app.port, [resolved("maint-chat", "fp-6"), resolved("maint-chat", "fp-7")]) == [
        200,
        200,
    ]
    assert app.intake is not None
    await app.intake.join()
    incident = await incident_of(app, "maint-chat")
    assert incident.status == "resolved"
    await asyncio.sleep(1.0)
    assert [r.path for r in capture_server.requests] == ["/chat"]
    assert await asyncio.to_thread(docker_daemon.started_at, "maint-chat") == before
    kinds = [a.kind for a in await app.store.audit_trail(incident.id)]
    assert kinds.count("maintenance_notice_queued") == 1 and "maintenance_notice_delivered" in kinds


def test_a_maintenance_notice_reads_as_one_in_slack_and_in_the_log() -> None:
    labels = {"alertname": "DatabaseDown", "container": "sms-db"}
    incident = Incident(7, "database-down", "sms-db", "maintenance", "critical", 100.0, 100.0, labels)
    window = MaintenanceWindow(3, "sms-db", "", "", 90.0, 7290.0, "disk swap", "alice@ops", 90.0)
    payload = build_payload(
        incident,
        None,
        [],
        window.held_reason,
        120.0,
        priority="P1",
        status="maintenance",
        event="maintenance",
    )
    message = slack_message(payload, "remediator-7-maintenance-3-chat")
    header = message["blocks"][0]["text"]["text"]
    assert header == ":construction: P1 In maintenance, nothing acts: DatabaseDown on sms-db"
    texts = json.dumps(message["blocks"])
    assert "Why nothing acts" in texts and "window 3" in texts and "Remediation failed" not in texts
    assert headline(payload) == "P1 in maintenance, nothing acts: DatabaseDown on sms-db"
