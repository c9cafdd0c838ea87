"""One-click approval: the escalation carries a signed link; opening it shows what fired, what would run, the
evidence and what silence does, and acts on nothing; only the form's POST decides, and its answer says what
happens next; an answered or expired link says what was decided, by whom and when; a wrong signature opens
nothing. Values from alerts are escaped, and a browser's stray requests (favicon) are not webhook rejections.
(The same page in a real Chromium: test_approval_browser.py.)"""

from __future__ import annotations

import asyncio
import html
import json
import re
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from helpers import alert, eventually, notification
from realparts import CaptureServer, DockerDaemon
from test_store import make, ref

from remediator.engine.approvals import Approvals
from remediator.escalation.log import LogNotifier
from remediator.signing import approval_signature
from remediator.store.base import Firing, FiringResult, Store

POLICY = """\
name: database-down
match:
  - alertname = DatabaseDown
target:
  kind: container
  from_label: container
  allow: ["approve-db"]
steps:
  - diagnose: container.logs
    with: {tail: 20}
  - act: container.restart
    with: {timeout_s: 5}
    approval: {timeout_s: 600, on_timeout: ON_TIMEOUT}
    verify: {resolved_within_s: 60}
  - escalate: oncall
"""


def policy(on_timeout: str = "deny", timeout_s: int = 600) -> str:
    return POLICY.replace("ON_TIMEOUT", on_timeout).replace("600", str(timeout_s))


async def _daemon(
    start_app: Callable[..., Any], docker_daemon: DockerDaemon, capture_server: CaptureServer, text: str
) -> Any:
    return await start_app(
        policies={"db.yaml": text},
        REMEDIATOR_DOCKER__HOST=docker_daemon.host,
        REMEDIATOR_ESCALATION__TARGETS=json.dumps({"oncall": {"url": f"{capture_server.url}/hook"}}),
    )


async def _fire(http: aiohttp.ClientSession, app: Any, the_alert: dict[str, Any]) -> None:
    headers = {"Authorization": f"Bearer {app.escalator.link_key}", "Content-Type": "application/json"}
    body = json.dumps(notification(the_alert)).encode()
    async with http.post(f"http://127.0.0.1:{app.port}/alerts", data=body, headers=headers) as r:
        assert r.status == 200


def _text(page: str) -> str:
    """The page as a person reads it: tags dropped, entities decoded, spaces collapsed."""
    body = re.sub(r"<(style|title)>.*?</\1>", " ", page, flags=re.S)
    body = re.sub(r"</?(b|code|span|a)\b[^>]*>", "", body)  # inline: no space of their own
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


async def test_an_approval_link_shows_the_story_and_only_its_form_decides(
    start_app: Callable[..., Any], docker_daemon: DockerDaemon, capture_server: CaptureServer
) -> None:
    await asyncio.to_thread(
        docker_daemon.run_container,
        "approve-db",
        command=["/bin/busybox", "sh", "-c", "echo FATAL: could not open relation 42; exec sleep 100000"],
    )
    before = await asyncio.to_thread(docker_daemon.started_at, "approve-db")
    app = await _daemon(start_app, docker_daemon, capture_server, policy("deny"))
    base = f"http://127.0.0.1:{app.port}"
    # No Authorization header below: a person clicking a link in a chat has no API token.
    async with aiohttp.ClientSession() as http:
        the_alert = alert(container="approve-db", starts_at="2026-11-23T10:00:00Z")
        the_alert["annotations"]["dashboard_url"] = "https://grafana.example.com/d/db"
        await _fire(http, app, the_alert)
        await capture_server.wait_for(1, timeout=30)
        ask = capture_server.requests[0].json
        assert ask["event"] == "approval_requested"
        link = ask["approval_url"]
        assert link.startswith(f"{base}/approval/1?sig=")

        async with http.get(link) as r:  # what a link preview or a click does
            page = await r.text()
            assert r.status == 200
            assert r.headers["Cache-Control"] == "no-store" and r.headers["Referrer-Policy"] == "no-referrer"
            assert "default-src 'none'" in r.headers["Content-Security-Policy"]
        text = _text(page)
        assert "DatabaseDown critical" in text and "DatabaseDown fired" in text  # alert, severity, summary
        assert "Firing since 2026-11-23 10:00:00 UTC" in text
        assert '<a href="https://runbooks.example.com/DatabaseDown"' in page
        assert '<a href="https://grafana.example.com/d/db"' in page
        assert "Firing since 2026-11-23 10:00:00 UTC (7d" in text  # the alert's startsAt, days ago
        assert "Step container.restart Target container approve-db" in text
        incident = await app.store.get_incident(1)
        host = getattr(incident, "host", "")  # fleets name the Docker host of an incident
        assert (f"Host {host} With timeout_s=5" if host else "approve-db With timeout_s=5") in text
        assert "checks that the alert resolves within 60 s" in text
        assert "FATAL: could not open relation 42" in text  # the evidence: the diagnosis's log tail
        when = re.search(r"If nobody answers by (\S+ \S+ UTC) \(in (\d+)m (\d+)s, counted when", text)
        assert when is not None, text
        assert 590 <= int(when[2]) * 60 + int(when[3]) <= 600
        assert (
            "container.restart does not run and the incident is escalated to people (on_timeout: deny)"
            in text
        )
        assert 'value="approve">Approve: run container.restart</button>' in page
        assert 'value="deny">Deny: escalate to people</button>' in page
        assert '<meta name="viewport"' in page
        # No external asset: nothing is loaded from anywhere, and no script is needed.
        assert "<script" not in page and "src=" not in page and 'rel="stylesheet"' not in page
        assert (await app.gate.approvals.get(1)).state == "pending"  # type: ignore[union-attr]

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
            assert r.status == 200
            done = _text(await r.text())
        assert done.startswith("Approved Approved by approval link from 127.0.0.1 at")
        assert "remediator runs container.restart on approve-db now" in done
        state = await app.gate.approvals.get(1)
        assert state is not None and state.state == "approved" and state.by == "approval link from 127.0.0.1"
        await eventually(lambda: _restarted(docker_daemon, before), timeout=30)

        # Answered: the link decides nothing any more, and tells a second responder who decided and when.
        async with http.get(link) as r:
            assert r.status == 410
            used = _text(await r.text())
        decided = re.search(
            r"Approved by approval link from 127\.0\.0\.1 at (\S+ \S+ UTC) \((\d+)s ago\)", used
        )
        assert decided is not None, used
        assert int(decided[2]) < 60
        assert "DatabaseDown" in used and "approve-db" in used
        assert "Approve: run" not in used  # no form
        await eventually(lambda: _step_ran(http, link), timeout=30)
        async with http.post(link, data={"decision": "deny"}) as r:
            assert r.status == 409 and "Approved by approval link" in _text(await r.text())
        assert (await app.gate.approvals.get(1)).state == "approved"  # type: ignore[union-attr]


async def _step_ran(http: aiohttp.ClientSession, link: str) -> bool:
    async with http.get(link) as r:
        return "act container.restart #1 -> ok" in _text(await r.text())


async def _restarted(docker_daemon: DockerDaemon, before: str) -> bool:
    return await asyncio.to_thread(docker_daemon.started_at, "approve-db") != before


async def test_silence_that_proceeds_says_so_and_a_denial_escalates(
    start_app: Callable[..., Any], docker_daemon: DockerDaemon, capture_server: CaptureServer
) -> None:
    await asyncio.to_thread(docker_daemon.run_container, "approve-db")
    before = await asyncio.to_thread(docker_daemon.started_at, "approve-db")
    app = await _daemon(start_app, docker_daemon, capture_server, policy("proceed"))
    async with aiohttp.ClientSession() as http:
        await _fire(http, app, alert(container="approve-db"))
        (ask,) = await capture_server.wait_for(1, timeout=30)
        link = ask.json["approval_url"]
        assert ask.json["approval"]["on_timeout"] == "proceed"
        async with http.get(link) as r:
            text = _text(await r.text())
        # Before: "Unanswered, the request is denied in 287 s" for a step that silence runs.
        assert "container.restart runs anyway (on_timeout: proceed)" in text
        assert "denied" not in text.lower() and "does not run" not in text

        async with http.post(link, data={"decision": "deny"}) as r:
            assert r.status == 200
            done = _text(await r.text())
        assert "Denied by approval link from 127.0.0.1" in done
        assert "container.restart does not run on approve-db: the incident is escalated to people" in done
        (_, escalation) = await capture_server.wait_for(2, timeout=30)
        assert escalation.json["event"] == "escalate" and "not approved" in escalation.json["reason"]
        async with http.get(link) as r:
            assert r.status == 410
            used = _text(await r.text())
        assert "Denied by approval link from 127.0.0.1 at" in used and "is now escalated" in used
    assert await asyncio.to_thread(docker_daemon.started_at, "approve-db") == before


async def test_an_expired_link_says_that_nobody_answered(
    start_app: Callable[..., Any], docker_daemon: DockerDaemon, capture_server: CaptureServer
) -> None:
    await asyncio.to_thread(docker_daemon.run_container, "approve-db")
    app = await _daemon(start_app, docker_daemon, capture_server, policy("deny", timeout_s=2))
    async with aiohttp.ClientSession() as http:
        await _fire(http, app, alert(container="approve-db"))
        (ask,) = await capture_server.wait_for(1, timeout=30)
        link = ask.json["approval_url"]
        await capture_server.wait_for(2, timeout=30)  # the timeout denied it, and the incident escalated
        async with http.get(link) as r:
            assert r.status == 410
            used = _text(await r.text())
        assert re.search(r"Denied by nobody: it timed out \(timeout after 2s\) at \S+ \S+ UTC", used), used
        async with http.post(link, data={"decision": "approve"}) as r:
            assert r.status == 409
        assert (await app.gate.approvals.get(1)).state == "denied"  # type: ignore[union-attr]


async def test_values_from_alerts_are_escaped_on_the_page(
    start_app: Callable[..., Any], docker_daemon: DockerDaemon, capture_server: CaptureServer
) -> None:
    await asyncio.to_thread(docker_daemon.run_container, "approve-db")
    app = await _daemon(start_app, docker_daemon, capture_server, policy("deny"))
    evil = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
    the_alert = alert(container="approve-db", instance=evil)
    the_alert["annotations"] = {
        "summary": f"down {evil}",
        "description": f"</pre></section>{evil}",
        "runbook_url": "javascript:alert(3)",
        "dashboard_url": 'https://grafana.example.com/d/x?a=1&b="><script>alert(4)</script>',
    }
    async with aiohttp.ClientSession() as http:
        await _fire(http, app, the_alert)
        (ask,) = await capture_server.wait_for(1, timeout=30)
        async with http.get(ask.json["approval_url"]) as r:
            assert r.status == 200
            page = await r.text()
    assert "<script" not in page and "<img" not in page and "javascript:" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img src=x onerror=alert(2)&gt;" in page
    assert 'href="https://grafana.example.com/d/x?a=1&amp;b=&quot;&gt;&lt;script&gt;' in page
    assert "Runbook" not in page  # a javascript: URL is not made a link
    assert page.count("<section") == page.count("</section>")  # the description did not close anything


async def test_a_browsers_stray_requests_are_not_webhook_rejections(start_app: Callable[..., Any]) -> None:
    app = await start_app(REMEDIATOR_DOCKER__HOST="unix:///nonexistent.sock")
    base = f"http://127.0.0.1:{app.port}"

    async def rejected() -> float:
        async with http.get(f"{base}/metrics") as r:
            found = re.search(
                r'^remediator_webhook_rejected_total\{code="401"\} (\S+)$', await r.text(), re.M
            )
        return float(found[1]) if found else 0.0

    async with aiohttp.ClientSession() as http:
        start = await rejected()
        for path in ("/favicon.ico", "/apple-touch-icon.png", "/robots.txt", "/approval", "/"):
            async with http.get(base + path) as r:
                assert r.status in (401, 404), path
        assert await rejected() == start
        async with http.post(f"{base}/alerts", json={}) as r:  # a webhook without its token: this one counts
            assert r.status == 401
        assert await rejected() == start + 1


async def test_the_log_notifier_withholds_the_link(caplog: pytest.LogCaptureFixture) -> None:
    await LogNotifier().send(
        {"approval_url": "http://h/approval/1?sig=s3cret", "reason": "approval needed"}, "k"
    )
    assert "s3cret" not in caplog.text and "withheld" in caplog.text and "approval needed" in caplog.text


async def test_a_link_of_an_earlier_request_says_what_became_of_it(store_url: str) -> None:
    """A request asked again (another attempt, another replica) replaces the record; a link to the earlier one
    still tells what was decided, by whom and when, from the audit trail, and a link we never made tells
    nothing."""
    store = make(store_url)
    await store.open()
    try:
        await _earlier_request(store)
    finally:
        await store.close()


async def _earlier_request(store: Store) -> None:
    (r,) = await store.record_intake([Firing("p", "db", ref())], [], 100, "a", 115)
    assert isinstance(r, FiringResult) and r.incident is not None
    incident, key = r.incident, "link-key"
    times = iter([200.125, 230.5, 260.75]).__next__
    approvals = Approvals(store, times)

    first = await approvals.request(incident, "container.restart", 60, "proceed")
    assert await approvals.decide(incident.id, True, by="api from 10.0.0.7", requested_at=first.requested_at)
    second = await approvals.request(incident, "container.restart", 90, "deny")

    def sig(at: float) -> str:
        return approval_signature(key, incident.id, at)

    old = await approvals.for_link(incident.id, key, sig(first.requested_at))
    assert old is not None
    assert (old.state, old.by, old.decided_at, old.on_timeout) == (
        "approved",
        "api from 10.0.0.7",
        230.5,
        "proceed",
    )
    assert (old.requested_at, old.expires_at, old.step) == (200.125, 260.125, "container.restart")
    current = await approvals.for_link(incident.id, key, sig(second.requested_at))
    assert current == second and current.state == "pending" and current.on_timeout == "deny"
    assert current.expires_at == 260.75 + 90

    for wrong_key, signature, incident_id in (
        (key, "0" * 64, incident.id),
        (None, sig(first.requested_at), incident.id),
        ("other-key", sig(first.requested_at), incident.id),
        (key, sig(first.requested_at), incident.id + 1),
        (key, sig(123.0), incident.id),
    ):
        assert await approvals.for_link(incident_id, wrong_key, signature) is None
