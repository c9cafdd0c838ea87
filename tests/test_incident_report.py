"""The post-incident report (issue 17 item 4): the runbooks' incident report template filled from the store by a
real daemon acting on a real Docker, on SQLite and on PostgreSQL; the same report from ``GET
/api/incidents/ID/report`` (JSON and Markdown) and from ``remediator incidents report ID``; an escalation links
it (webhook, Slack, PagerDuty) and its report says whom it paged at which priority."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from helpers import REPO, TOKEN, alert, eventually, notification, post_alerts
from realparts import CaptureServer, DockerDaemon

from remediator.app import App

POLICY = """\
name: report-db
match: [alertname = DatabaseDown]
target: {kind: container, from_label: container, allow: ["report-db"]}
limits: {cooldown_s: 0}
steps:
  - diagnose: container.logs
    with: {tail: 5}
  - act: container.restart
    verify: {resolved_within_s: WITHIN}
  - escalate: oncall
"""

PUBLIC = "https://remediator.example.com"
TEMPLATE_ORDER = [
    "Title: ",
    "Severity: ",
    "Start Time: ",
    "End Time: ",
    "Duration: ",
    "## Root Cause",
    "## Impact",
    "## Resolution",
    "## Prevention",
    "## Timeline",
    "## Evidence",
]


async def _get(app: App, path: str, token: str | None = TOKEN) -> tuple[int, str, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{app.port}{path}", headers=headers) as r,
    ):
        return r.status, r.content_type, await r.text()


def _cli(app: App, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "remediator",
            *args,
            "--url",
            f"http://127.0.0.1:{app.port}",
            "--token",
            TOKEN,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _store_env(store_url: str) -> dict[str, str]:
    if store_url.startswith("sqlite:"):
        return {"REMEDIATOR_STORE__PATH": store_url.removeprefix("sqlite:")}
    return {"REMEDIATOR_STORE__URL": store_url}


@pytest.fixture
def daemon(
    start_app: Callable[..., Any], docker_daemon: DockerDaemon, capture_server: CaptureServer
) -> Callable[..., Any]:
    """start(within, **env): a daemon on the real dockerd, escalating to webhook, Slack and PagerDuty stand-ins."""

    def start(within: float, **env: str) -> Any:
        url = capture_server.url
        return start_app(
            policies={"db.yaml": POLICY.replace("WITHIN", str(within))},
            REMEDIATOR_DOCKER__HOST=docker_daemon.host,
            REMEDIATOR_PROMETHEUS__URL="",
            REMEDIATOR_SERVER__PUBLIC_URL=PUBLIC,
            REMEDIATOR_SERVER__SHUTDOWN_GRACE_S="0",
            REMEDIATOR_ESCALATION__TARGETS=json.dumps({"oncall": {"url": f"{url}/hook"}}),
            REMEDIATOR_ESCALATION__SLACK=json.dumps({"chat": {"webhook_url": f"{url}/slack"}}),
            REMEDIATOR_ESCALATION__PAGERDUTY=json.dumps(
                {"pd": {"routing_key": "R" * 32, "url": f"{url}/pd"}}
            ),
            **env,
        )

    return start


def _container(docker_daemon: DockerDaemon) -> None:
    script = "echo 'FATAL: the database system is shutting down'; exec /bin/busybox sleep 1000000"
    docker_daemon.run_container("report-db", command=["/bin/sh", "-c", script])


async def test_a_restart_that_worked_fills_the_template(
    daemon: Callable[..., Any], docker_daemon: DockerDaemon, store_url: str
) -> None:
    await asyncio.to_thread(_container, docker_daemon)
    before = await asyncio.to_thread(docker_daemon.started_at, "report-db")
    # The alert's own severity word maps to P2 through the routing settings, as escalation reads it.
    app: App = await daemon(
        60, **_store_env(store_url), REMEDIATOR_ESCALATION__ROUTING__PRIORITIES=json.dumps({"sev-two": "P2"})
    )
    started = (datetime.now(UTC) - timedelta(minutes=3)).replace(microsecond=0)
    firing = alert(container="report-db", severity="sev-two", starts_at=started.isoformat())
    assert await post_alerts(app.port, [notification(firing)]) == [200]
    await eventually(lambda: _restarted(app), timeout=30)
    assert await asyncio.to_thread(docker_daemon.started_at, "report-db") != before
    resolved = alert(container="report-db", status="resolved", starts_at=started.isoformat())
    assert await post_alerts(app.port, [notification(resolved)]) == [200]
    await eventually(lambda: _status(app, "resolved"), timeout=30)
    incident = await app.store.get_incident(1)
    assert incident is not None

    status, kind, text = await _get(app, "/api/incidents/1/report?format=json")
    assert (status, kind) == (200, "application/json"), text
    report = json.loads(text)
    assert report["title"] == "DatabaseDown on report-db: DatabaseDown fired"
    assert report["severity"] == "P2" and report["alert_severity"] == "sev-two"
    assert datetime.fromisoformat(report["start_time"]) == started  # the alert's startsAt, not the opening
    end = datetime.fromisoformat(report["end_time"])
    assert end.timestamp() == pytest.approx(incident.updated_at)
    assert report["duration_s"] == pytest.approx((end - started).total_seconds(), abs=0.01)
    assert report["duration_s"] >= 180
    assert report["outcome"] == "Recovered after container.restart (attempt 1), verified."
    assert [(s["kind"], s["name"], s["status"]) for s in report["resolution"]] == [
        ("diagnose", "container.logs", "ok"),
        ("act", "container.restart", "ok"),
    ]
    assert report["escalations"] == []  # nobody was paged
    (evidence,) = report["evidence"]
    assert (
        evidence["name"] == "container.logs"
        and "FATAL: the database system is shutting down" in evidence["detail"]
    )
    texts = [e["text"] for e in report["timeline"]]
    kinds = [e["kind"] for e in report["timeline"]]
    assert texts[0] == "Alert triggered: DatabaseDown on report-db (sev-two)"
    assert report["timeline"][0]["at"] == report["start_time"]
    assert "remediator acted: container.restart on report-db (attempt 1)" in texts
    for wanted in ("opened", "step_finished", "verified", "alert_resolved", "resolved"):
        assert wanted in kinds, kinds
    assert kinds.index("verified") > texts.index(
        "remediator acted: container.restart on report-db (attempt 1)"
    )
    assert "admitted" not in kinds  # the report's timeline leaves the plumbing out
    assert report["root_cause"].startswith("[") and report["prevention"].startswith("[")
    assert report["runbook_url"] == "https://runbooks.example.com/DatabaseDown"

    status, kind, md = await _get(app, "/api/incidents/1/report")
    assert (status, kind) == (200, "text/markdown"), md
    positions = [md.index(heading) for heading in TEMPLATE_ORDER]
    assert positions == sorted(positions), "the template's order"
    lines = md.splitlines()
    assert f"Start Time: {started.strftime('%Y-%m-%d %H:%M:%S')} UTC" in lines
    assert "Severity: P2 (alert severity sev-two)" in lines
    assert "Recovered after container.restart (attempt 1), verified." in lines
    assert any(line.startswith("2. ") and "act container.restart (attempt 1): ok" in line for line in lines)
    assert f"- {started.strftime('%H:%M:%S')} - Alert triggered: DatabaseDown on report-db (sev-two)" in lines
    assert "On-call responded" not in md  # nobody was paged, so nobody to acknowledge
    assert "FATAL: the database system is shutting down" in md.split("## Evidence")[1]

    # The CLI renders the daemon's report with the same function: the same Markdown but for when it was made.
    done = await asyncio.to_thread(_cli, app, "incidents", "report", "1")
    assert done.returncode == 0, done.stderr
    assert _undated(done.stdout) == _undated(md)
    done = await asyncio.to_thread(_cli, app, "incidents", "report", "1", "-o", "json")
    assert done.returncode == 0, done.stderr
    assert {k: v for k, v in json.loads(done.stdout).items() if k != "generated_at"} == {
        k: v for k, v in report.items() if k != "generated_at"
    }


async def test_an_escalation_links_its_report_which_says_who_was_paged(
    daemon: Callable[..., Any], docker_daemon: DockerDaemon, capture_server: CaptureServer
) -> None:
    await asyncio.to_thread(_container, docker_daemon)
    app: App = await daemon(0.5)  # the alert never resolves within the window: the ladder escalates
    assert await post_alerts(app.port, [notification(alert(container="report-db"))]) == [200]
    (hook,) = await capture_server.wait_for(1, timeout=30)  # no routes: the step's notifier only
    assert hook.path == "/hook" and hook.json["report_url"] == f"{PUBLIC}/api/incidents/1/report"
    await eventually(lambda: _status(app, "escalated"), timeout=30)
    status, _, text = await _get(app, "/api/incidents/1/report?format=json")
    assert status == 200, text
    report = json.loads(text)
    assert report["severity"] == "P1" and report["status"] == "escalated"
    assert report["outcome"].startswith(
        "Escalated to people: container.restart attempt 1/1 ran, but the system"
    )
    assert report["end_time"] is None
    assert [(e["notifier"], e["priority"]) for e in report["escalations"]] == [("oncall", "P1")]
    texts = [e["text"] for e in report["timeline"]]
    assert "Not recovered within 0.5s after container.restart" in texts
    assert "remediator escalated to oncall (P1)" in texts
    status, _, md = await _get(app, "/api/incidents/1/report?format=markdown")
    assert "End Time: - (still open)" in md and "On-call responded: [when a person took it" in md
    assert (
        "- Escalated to oncall at P1: delivered" in md or "- Escalated to oncall at P1: not delivered" in md
    )

    # The token is required; a bad format or an unknown incident is refused with the reason.
    assert (await _get(app, "/api/incidents/1/report", token=None))[0] == 401
    assert (await _get(app, "/api/incidents/1/report?format=pdf"))[0] == 400
    assert (await _get(app, "/api/incidents/99/report"))[0] == 404


async def test_slack_and_pagerduty_link_the_report(
    daemon: Callable[..., Any], docker_daemon: DockerDaemon, capture_server: CaptureServer
) -> None:
    await asyncio.to_thread(_container, docker_daemon)
    app: App = await daemon(0.5, REMEDIATOR_ESCALATION__ROUTING__ROUTES=json.dumps({"P1": ["pd", "chat"]}))
    assert await post_alerts(app.port, [notification(alert(container="report-db"))]) == [200]
    await capture_server.wait_for(3, timeout=30)
    link = f"{PUBLIC}/api/incidents/1/report"
    by_path = {r.path: r.json for r in capture_server.requests}
    assert by_path["/hook"]["report_url"] == link
    assert {"href": link, "text": "Incident report"} in by_path["/pd"]["links"]
    assert by_path["/pd"]["payload"]["custom_details"]["report_url"] == link
    context = [b for b in by_path["/slack"]["blocks"] if b["type"] == "context"]
    assert any(f"<{link}|Incident report>" in e["text"] for b in context for e in b["elements"])


def _undated(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("Generated by remediator at ")]


async def _restarted(app: App) -> bool:
    return any(s.kind == "act" and s.status == "ok" for s in await app.store.steps(1))


async def _status(app: App, wanted: str) -> bool:
    incident = await app.store.get_incident(1)
    return incident is not None and incident.status == wanted
