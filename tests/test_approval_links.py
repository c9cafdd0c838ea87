"""One-click approval: the escalation carries a signed link; opening it shows what would run and acts on nothing;
only the form's POST decides; the link is worthless once answered, and a wrong signature opens nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from helpers import alert, eventually, notification
from realparts import CaptureServer, DockerDaemon

from remediator.escalation.log import LogNotifier

POLICY = """\
name: database-down
match:
  - alertname = DatabaseDown
target:
  kind: container
  from_label: container
  allow: ["approve-db"]
steps:
  - act: container.restart
    with: {timeout_s: 5}
    approval: {timeout_s: 60, on_timeout: deny}
    verify: {resolved_within_s: 60}
  - escalate: oncall
"""


async def test_an_approval_link_shows_the_step_and_only_its_form_decides(
    start_app: Callable[..., Any], docker_daemon: DockerDaemon, capture_server: CaptureServer
) -> None:
    await asyncio.to_thread(docker_daemon.run_container, "approve-db")
    before = await asyncio.to_thread(docker_daemon.started_at, "approve-db")
    app = await start_app(
        policies={"db.yaml": POLICY},
        REMEDIATOR_DOCKER__HOST=docker_daemon.host,
        REMEDIATOR_ESCALATION__TARGETS=json.dumps({"oncall": {"url": f"{capture_server.url}/hook"}}),
    )
    base = f"http://127.0.0.1:{app.port}"
    # No Authorization header anywhere below: a person clicking a link in a chat has no API token.
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {app.escalator.link_key}", "Content-Type": "application/json"}
        body = json.dumps(notification(alert(container="approve-db"))).encode()
        async with http.post(f"{base}/alerts", data=body, headers=headers) as r:
            assert r.status == 200
        await capture_server.wait_for(1)
        ask = capture_server.requests[0].json
        assert ask["event"] == "approval_requested"
        link = ask["approval_url"]
        assert link.startswith(f"{base}/approval/1?sig=")

        async with http.get(link) as r:  # what a link preview or a click does
            page = await r.text()
            assert r.status == 200 and "container.restart" in page and "approve-db" in page
            assert r.headers["Cache-Control"] == "no-store" and r.headers["Referrer-Policy"] == "no-referrer"
        assert (await app.gate.approvals.get(1)).state  # type: ignore[union-attr] == "pending"  # type: ignore[index]

        for wrong in (
            link[:-4] + "0000",
            f"{base}/approval/1",
            f"{base}/approval/2?sig={link.split('=')[1]}",
        ):
            async with http.get(wrong) as r:
                assert r.status == 404, wrong
            async with http.post(wrong, data={"decision": "approve"}) as r:
                assert r.status == 404, wrong
        async with http.post(link, data={"decision": "maybe"}) as r:
            assert r.status == 400

        async with http.post(link, data={"decision": "approve"}) as r:
            assert r.status == 200 and "Approved" in await r.text()
        state = await app.gate.approvals.get(1)
        assert state is not None and state.state == "approved" and state.by.startswith("approval link")
        await eventually(lambda: _restarted(docker_daemon, before), timeout=30)

        async with http.get(link) as r:  # answered: the link opens nothing any more
            assert r.status == 404
        async with http.post(link, data={"decision": "deny"}) as r:
            assert r.status == 404


async def _restarted(docker_daemon: DockerDaemon, before: str) -> bool:
    return await asyncio.to_thread(docker_daemon.started_at, "approve-db") != before


async def test_the_log_notifier_withholds_the_link(caplog: pytest.LogCaptureFixture) -> None:
    await LogNotifier().send(
        {"approval_url": "http://h/approval/1?sig=s3cret", "reason": "approval needed"}, "k"
    )
    assert "s3cret" not in caplog.text and "withheld" in caplog.text and "approval needed" in caplog.text
