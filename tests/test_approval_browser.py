"""The approval page in a real headless Chromium (DevTools protocol, JavaScript off), as the on-call engineer
opens it: a real daemon, a policy whose restart needs approval, real containers on the private dockerd.

On a desktop viewport and on a phone's (390x844), the link shows the alert, the target, the countdown and the
evidence; a real click on Approve restarts the container (its StartedAt changes), and the answer says what
happens next; on the phone nothing overflows sideways. Opened again, the used link says who decided and when.
The browser's own requests (a favicon, ...) never count as webhook rejections.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from helpers import alert, eventually, notification
from realparts import CaptureServer, Chromium, DockerDaemon, Page

POLICY = """\
name: database-down
match:
  - alertname = DatabaseDown
target:
  kind: container
  from_label: container
  allow: ["browser-db-[12]"]
steps:
  - diagnose: container.logs
    with: {tail: 20}
  - act: container.restart
    with: {timeout_s: 5}
    approval: {timeout_s: 900, on_timeout: proceed}
    verify: {resolved_within_s: 120}
  - escalate: oncall
"""

TARGETS = ("browser-db-1", "browser-db-2")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Chromium]:
    browser = Chromium()
    try:
        yield browser
    finally:
        browser.close()


@pytest_asyncio.fixture
async def page(chromium: Chromium) -> AsyncIterator[Page]:
    async with chromium.page() as tab:
        # The page must work without JavaScript: the tab runs none (the protocol still reads the DOM).
        await tab.send("Emulation.setScriptExecutionDisabled", value=True)
        yield tab


async def _rejected(http: aiohttp.ClientSession, base: str) -> float:
    async with http.get(f"{base}/metrics") as r:
        found = re.search(r'^remediator_webhook_rejected_total\{code="401"\} (\S+)$', await r.text(), re.M)
    return float(found[1]) if found else 0.0


async def _text(page: Page) -> str:
    return " ".join(str(await page.evaluate("document.body.innerText")).split())


async def _started(docker_daemon: DockerDaemon, name: str) -> str:
    return await asyncio.to_thread(docker_daemon.started_at, name)


async def test_approve_in_chromium_on_a_desktop_and_on_a_phone(
    start_app: Callable[..., Any],
    docker_daemon: DockerDaemon,
    capture_server: CaptureServer,
    page: Page,
) -> None:
    for name in TARGETS:
        await asyncio.to_thread(
            docker_daemon.run_container,
            name,
            command=[
                "/bin/busybox",
                "sh",
                "-c",
                f"echo {name}: FATAL too many connections; exec sleep 100000",
            ],
        )
    before = {name: await _started(docker_daemon, name) for name in TARGETS}
    app = await start_app(
        policies={"db.yaml": POLICY},
        REMEDIATOR_DOCKER__HOST=docker_daemon.host,
        REMEDIATOR_ESCALATION__TARGETS=json.dumps({"oncall": {"url": f"{capture_server.url}/hook"}}),
    )
    base = f"http://127.0.0.1:{app.port}"
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {app.escalator.link_key}"}
        alerts = [
            alert(container=name, fingerprint=f"f{i}", starts_at="2026-11-30T03:00:00Z")
            for i, name in enumerate(TARGETS)
        ]
        async with http.post(f"{base}/alerts", json=notification(*alerts), headers=headers) as r:
            assert r.status == 200
        asks = await capture_server.wait_for(2, timeout=30)
        links = {ask.json["target"]: ask.json["approval_url"] for ask in asks}
        assert set(links) == set(TARGETS)
        rejected = await _rejected(http, base)

        # A desktop browser.
        await page.viewport(1280, 900, mobile=False)
        assert await page.navigate(links["browser-db-1"]) == 200
        text = await _text(page)
        assert "DatabaseDown" in text and "critical" in text and "DatabaseDown fired" in text
        assert "Firing since 2026-11-30 03:00:00 UTC" in text
        assert "container browser-db-1" in text and "container.restart" in text
        assert re.search(
            r"If nobody answers by \S+ \S+ UTC \(in 1[45]m \d+s, counted when this page", text
        ), text
        assert "container.restart runs anyway (on_timeout: proceed)" in text
        assert "browser-db-1: FATAL too many connections" in text  # the evidence: the log tail
        assert await page.evaluate(
            "!!document.querySelector('a[href=\"https://runbooks.example.com/DatabaseDown\"]')"
        )
        approve, deny = await page.evaluate(
            "['.approve', '.deny'].map(s => { const e = document.querySelector(s), c = getComputedStyle(e);"
            " return [e.innerText, c.backgroundColor, c.color, c.fontWeight]; })"
        )
        assert approve[0] == "Approve: run container.restart" and deny[0] == "Deny: escalate to people"
        assert approve[1] != deny[1] and approve[2] != deny[2] and approve[3] != deny[3]  # not look-alikes

        assert await page.click("button.approve") == 200
        text = await _text(page)
        assert text.startswith("Approved Approved by approval link from 127.0.0.1 at"), text
        assert "remediator runs container.restart on browser-db-1 now" in text
        await eventually(lambda: _changed(docker_daemon, "browser-db-1", before), timeout=30)

        # A phone: 390x844 CSS pixels, touch, device scale 3.
        await page.viewport(390, 844, mobile=True, scale=3)
        assert await page.navigate(links["browser-db-2"]) == 200
        text = await _text(page)
        assert "DatabaseDown" in text and "container browser-db-2" in text and "If nobody answers by" in text
        assert "browser-db-2: FATAL too many connections" in text
        assert await page.evaluate("innerWidth") == 390
        assert await page.evaluate("document.documentElement.scrollWidth <= innerWidth")
        # Both buttons are on screen and large enough for a thumb (at least 44 CSS pixels high).
        for selector in (".approve", ".deny"):
            left, right, height = await page.evaluate(
                f"(() => {{ const r = document.querySelector('{selector}').getBoundingClientRect();"
                " return [r.left, r.right, r.height]; })()"
            )
            assert left >= 0 and right <= 390 and height >= 44, (selector, left, right, height)
        assert await page.click("button.approve") == 200
        text = await _text(page)
        assert "Approved by approval link from 127.0.0.1" in text
        assert "remediator runs container.restart on browser-db-2 now" in text
        assert await page.evaluate("document.documentElement.scrollWidth <= innerWidth")
        await eventually(lambda: _changed(docker_daemon, "browser-db-2", before), timeout=30)

        # The used link, opened again (on the phone): who decided, and when; no buttons any more.
        assert await page.navigate(links["browser-db-1"]) == 410
        text = await _text(page)
        assert re.search(r"Approved by approval link from 127\.0\.0\.1 at \S+ \S+ UTC \(\d+s ago\)", text), (
            text
        )
        assert await page.evaluate("document.querySelector('button') === null")
        assert await page.evaluate("document.documentElement.scrollWidth <= innerWidth")

        # Nothing the browser fetched is a webhook rejection; the page loaded nothing but itself.
        assert await _rejected(http, base) == rejected
        assert {url.split("?")[0] for url in page.requested_urls()} <= {
            f"{base}/approval/1",
            f"{base}/approval/2",
        }


async def _changed(docker_daemon: DockerDaemon, name: str, before: dict[str, str]) -> bool:
    return await _started(docker_daemon, name) != before[name]
