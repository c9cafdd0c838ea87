"""Grafana annotations (issue 17 item 5): each action and each escalation is posted to Grafana's annotations API
through the durable outbox, from a real daemon restarting a real container on a real dockerd. Grafana cannot run
here: a stand-in checks every request against Grafana's documented format (POST /api/annotations, a Bearer
service account token, JSON {time, timeEnd?, tags, text} with integer milliseconds and no dashboard, so it is
dashboard-wide) and answers as Grafana does, 400 or 401 to a request it would refuse."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from helpers import REPO, TOKEN, alert, eventually, notification, post_alerts
from realparts import CaptureServer, DockerDaemon

from remediator.app import App
from remediator.escalation.grafana import tags
from remediator.settings import EscalationSettings

GRAFANA_TOKEN = "glsa_0123456789abcdefABCDEF_0a1b2c3d"  # the shape of a service account token
POLICY = """\
name: graf-db
match: [alertname = DatabaseDown]
target: {kind: container, from_label: container, allow: ["graf-db"]}
steps:
  - act: container.restart
    attempts: 2
    verify: {resolved_within_s: 0.3}
  - escalate: oncall
"""


class GrafanaStandIn:
    """Grafana's POST /api/annotations as documented
    (https://grafana.com/docs/grafana/latest/developers/http_api/annotations/#create-annotation): what it
    refuses is refused here too, so a wrong request cannot be delivered; the valid ones are kept."""

    def __init__(self) -> None:
        self.annotations: list[dict[str, Any]] = []
        self.refused: list[str] = []
        self.unavailable = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _create(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {GRAFANA_TOKEN}":
            self.refused.append("authorization")
            return web.json_response({"message": "Unauthorized"}, status=401)
        if self.unavailable > 0:
            self.unavailable -= 1
            return web.json_response({"message": "database is locked"}, status=503)
        if request.content_type != "application/json":
            self.refused.append(f"content type {request.content_type}")
            return web.json_response({"message": "bad request data"}, status=400)
        body = await request.json()
        problems = _problems(body)
        if problems:
            self.refused.append("; ".join(problems))
            return web.json_response({"message": "; ".join(problems)}, status=400)
        self.annotations.append(body)
        return web.json_response({"message": "Annotation added", "id": len(self.annotations)})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/annotations", self._create)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(self._runner, sock).start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def _problems(body: Any) -> list[str]:
    if not isinstance(body, dict):
        return ["the body is not a JSON object"]
    found = []
    known = {"dashboardUID", "dashboardId", "panelId", "time", "timeEnd", "tags", "text", "data"}
    found += [f"unknown field {k}" for k in body if k not in known]
    found += [f"{k}: not dashboard-wide" for k in ("dashboardUID", "dashboardId", "panelId") if k in body]
    for key in ("time", "timeEnd"):
        if key in body and not (isinstance(body[key], int) and not isinstance(body[key], bool)):
            found.append(f"{key} must be epoch milliseconds (an integer)")
    if "time" in body and isinstance(body["time"], int) and body["time"] < 10**12:
        found.append("time looks like seconds, not milliseconds")
    if "timeEnd" in body and body.get("timeEnd", 0) < body.get("time", 0):
        found.append("timeEnd before time")
    if not (isinstance(body.get("tags"), list) and all(isinstance(t, str) and t for t in body["tags"])):
        found.append("tags must be a list of strings")
    if not (isinstance(body.get("text"), str) and body["text"]):
        found.append("text is required")
    return found


@pytest_asyncio.fixture
async def grafana() -> AsyncIterator[GrafanaStandIn]:
    stand_in = GrafanaStandIn()
    try:
        await stand_in.start()
        yield stand_in
    finally:
        await stand_in.close()


async def test_each_action_and_the_escalation_become_annotations_through_the_outbox(
    start_app: Callable[..., Any],
    docker_daemon: DockerDaemon,
    grafana: GrafanaStandIn,
    capture_server: CaptureServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await asyncio.to_thread(docker_daemon.run_container, "graf-db")
    grafana.unavailable = 2  # Grafana down at first: the outbox retries until it takes them
    app: App = await start_app(
        policies={"db.yaml": POLICY},
        REMEDIATOR_DOCKER__HOST=docker_daemon.host,
        REMEDIATOR_PROMETHEUS__URL="",
        REMEDIATOR_SERVER__PUBLIC_URL="https://remediator.example.com",
        REMEDIATOR_SERVER__SHUTDOWN_GRACE_S="0",
        REMEDIATOR_ESCALATION__BACKOFF_MAX_S="0.2",
        REMEDIATOR_ESCALATION__TARGETS=json.dumps({"oncall": {"url": f"{capture_server.url}/hook"}}),
        REMEDIATOR_ESCALATION__GRAFANA=json.dumps({"grafana": {"url": grafana.url, "token": GRAFANA_TOKEN}}),
    )
    began = time.time()
    await post_alerts(app.port, [notification(alert(container="graf-db", fingerprint="g1"))])
    await eventually(lambda: len(grafana.annotations) >= 3, timeout=30)
    await eventually(lambda: _delivered(app), timeout=10)
    ended = time.time()

    assert grafana.refused == []  # every request had Grafana's format and the token
    actions = [a for a in grafana.annotations if "event:action" in a["tags"]]
    escalations = [a for a in grafana.annotations if "event:escalation" in a["tags"]]
    assert len(actions) == 2 and len(escalations) == 1 and len(grafana.annotations) == 3
    tags = ["remediator", "policy:graf-db", "target:graf-db", "host:default"]
    for annotation in grafana.annotations:
        assert annotation["tags"][:4] == tags
        assert began * 1000 - 1000 <= annotation["time"] <= ended * 1000 + 1000
        assert "Report: https://remediator.example.com/api/incidents/1/report" in annotation["text"]
    steps = [s for s in await app.store.steps(1) if s.kind == "act"]
    assert [s.attempt for s in steps] == [1, 2]
    for annotation, step in zip(sorted(actions, key=lambda a: a["time"]), steps, strict=True):
        assert annotation["timeEnd"] >= annotation["time"]  # a region over the restart
        assert step.finished_at is not None
        assert annotation["timeEnd"] == pytest.approx(step.finished_at * 1000, abs=50)
        assert annotation["text"].startswith(
            f"remediator: container.restart on graf-db (attempt {step.attempt}) -> ok: restarted graf-db"
        )
    (escalation,) = escalations
    assert escalation["text"].startswith(
        "remediator escalated incident 1 (DatabaseDown) at P1: container.restart"
    )
    assert "timeEnd" not in escalation
    # The people's notifier still gets the escalation as routed; Grafana is in addition, never instead.
    (hook,) = await capture_server.wait_for(1)
    assert hook.json["event"] == "escalate"
    assert all(GRAFANA_TOKEN not in r.getMessage() for r in caplog.records)

    # The incident's report says whom it was escalated to: people, not the graphs.
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"http://127.0.0.1:{app.port}/api/incidents/1/report?format=json",
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as r,
    ):
        report = await r.json()
    assert [e["notifier"] for e in report["escalations"]] == ["oncall"]
    assert not any("grafana" in e["text"] for e in report["timeline"])


async def _delivered(app: App) -> bool:
    kinds = [a.kind for a in await app.store.audit_trail(1)]
    return kinds.count("annotation_delivered") == 2 and "escalation_delivered" in kinds


def test_a_grafana_notifier_is_named_like_any_other() -> None:
    grafana = {"url": "http://grafana:3000", "token": GRAFANA_TOKEN}
    settings = EscalationSettings.model_validate({"grafana": {"grafana": grafana}})
    assert settings.notifier_names() == {"grafana"}
    assert GRAFANA_TOKEN not in repr(settings)
    with pytest.raises(ValueError, match="configured in both"):
        EscalationSettings.model_validate(
            {"grafana": {"ops": grafana}, "targets": {"ops": {"url": "http://hook"}}}
        )
    with pytest.raises(ValueError, match="reserved"):
        EscalationSettings.model_validate({"grafana": {"log": grafana}})


def test_the_shipped_dashboard_shows_remediators_annotations() -> None:
    dashboard = json.loads((REPO / "deploy" / "grafana" / "dashboards" / "remediator.json").read_text())
    (query,) = [a for a in dashboard["annotations"]["list"] if a.get("name") == "remediator"]
    assert query["datasource"] == {"type": "grafana", "uid": "-- Grafana --"} and query["enable"] is True
    assert query["target"]["type"] == "tags" and query["target"]["tags"] == ["remediator"]
    assert query["target"]["matchAny"] is False
    # The tag it filters on is the one every annotation carries.
    assert "remediator" in tags({"policy": "p", "target": "t"}, "action")  # type: ignore[typeddict-item]
