"""A real headless Chromium, driven over the DevTools protocol with aiohttp's websocket client (no driver
library): the approval page is checked in the browser an on-call engineer opens it in.

Chromium is started with its own fresh profile directory and ``--remote-debugging-port=0``; it writes the
port it took to ``DevToolsActivePort`` in that directory. ``Chromium.page()`` opens a tab and returns a
``Page``: navigate, read the DOM with JavaScript from the protocol (the page itself may have scripts
disabled), click with real mouse events at an element's position, and emulate a phone's viewport. Each
document response's status is recorded from the Network domain.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from .common import (
    LOOPBACK,
    RealPartError,
    child_env,
    fail,
    http_opener,
    log_tail,
    mkdtemp,
    popen,
    remove_tree,
    terminate,
    track,
    untrack,
    wait_until,
    which,
)

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--no-proxy-server",
    f"--remote-debugging-address={LOOPBACK}",
    "--remote-debugging-port=0",
)


class Chromium:
    """One headless Chromium process with a fresh profile; close() stops it by its pid and removes both."""

    def __init__(self, *, ready_timeout: float = 30.0) -> None:
        binary = which("chromium")
        if binary is None:
            fail("chromium is not installed: apt-get install chromium (scripts/dev installs it)")
        self._closed = False
        self._dir = mkdtemp("chromium-")
        track(self)
        profile = self._dir / "profile"
        self.log = self._dir / "chromium.log"
        self._proc = popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"], self.log, child_env()
        )
        active = profile / "DevToolsActivePort"
        try:
            wait_until(active.exists, what="chromium", timeout=ready_timeout, log=self.log, proc=self._proc)
            # The file is written in two lines (port, then the browser's path); the port may come first alone.
            wait_until(
                lambda: len(active.read_text().splitlines()) >= 2,
                what="chromium's DevTools port",
                timeout=ready_timeout,
                log=self.log,
                proc=self._proc,
            )
            self.port = int(active.read_text().splitlines()[0])
        except BaseException:
            self.close()
            raise
        self.url = f"http://{LOOPBACK}:{self.port}"

    def new_target(self) -> str:
        """A new tab's websocket URL (PUT /json/new, as current Chromium wants it)."""
        request = urllib.request.Request(f"{self.url}/json/new?about:blank", method="PUT")
        with http_opener.open(request, timeout=10) as resp:
            return str(json.loads(resp.read())["webSocketDebuggerUrl"])

    @contextlib.asynccontextmanager
    async def page(self) -> Any:
        """``async with chromium.page() as page``: a new tab, closed afterwards."""
        ws_url = await asyncio.to_thread(self.new_target)
        async with (
            aiohttp.ClientSession(trust_env=False) as session,
            session.ws_connect(ws_url, max_msg_size=64 * 1024 * 1024) as ws,
        ):
            page = Page(ws, self.log)
            reader = asyncio.create_task(page.read())
            try:
                await page.send("Page.enable")
                await page.send("Network.enable")
                await page.send("Runtime.enable")
                yield page
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        proc = getattr(self, "_proc", None)
        if proc is not None:
            terminate(proc, grace=5)
        remove_tree(self._dir)
        untrack(self)


class Page:
    """One tab over the DevTools protocol: commands with their answers, and the events seen so far."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, log: Path) -> None:
        self._ws = ws
        self._log = log
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self._event = asyncio.Event()

    async def read(self) -> None:
        async for message in self._ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            if "id" in data:
                future = self._waiting.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
            else:
                self.events.append(data)
                self._event.set()
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(
                    RealPartError(f"chromium closed the connection; log:\n{log_tail(self._log)}")
                )

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Run one protocol command; its ``result``, or RealPartError with the protocol's error."""
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        await self._ws.send_json({"id": ident, "method": method, "params": params})
        async with asyncio.timeout(30):
            answer = await future
        if "error" in answer:
            raise RealPartError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    async def wait_event(self, method: str, after: int, timeout: float = 20.0) -> dict[str, Any]:
        """The first ``method`` event at index ``after`` or later of ``events``."""
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events[after:]:
                    if event.get("method") == method:
                        return event
                self._event.clear()
                await self._event.wait()

    def document_status(self, after: int = 0) -> int | None:
        """The HTTP status of the last document loaded since event ``after``."""
        found = [
            e["params"]["response"]["status"]
            for e in self.events[after:]
            if e.get("method") == "Network.responseReceived" and e["params"].get("type") == "Document"
        ]
        return int(found[-1]) if found else None

    def requested_urls(self) -> list[str]:
        return [
            e["params"]["request"]["url"]
            for e in self.events
            if e.get("method") == "Network.requestWillBeSent"
        ]

    async def navigate(self, url: str) -> int | None:
        """Load ``url`` and wait for its load event; the document's HTTP status."""
        mark = len(self.events)
        answer = await self.send("Page.navigate", url=url)
        if answer.get("errorText"):
            raise RealPartError(f"navigating to {url}: {answer['errorText']}")
        await self.wait_event("Page.loadEventFired", mark)
        return self.document_status(mark)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (run by the protocol, even with scripts off)."""
        answer = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in answer:
            raise RealPartError(f"{expression}: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    async def click(self, selector: str) -> int | None:
        """Click the element's centre with real mouse events (as a finger would) and wait for the page the
        click loads; its HTTP status."""
        box = await self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " if (!e) return null; e.scrollIntoView({block: 'center'});"
            " const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        if box is None:
            raise RealPartError(f"no element {selector}")
        x, y = box
        mark = len(self.events)
        for kind in ("mousePressed", "mouseReleased"):
            await self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)
        await self.wait_event("Page.loadEventFired", mark)
        return self.document_status(mark)

    async def viewport(self, width: int, height: int, *, mobile: bool, scale: float = 1.0) -> None:
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=scale,
            mobile=mobile,
        )
        if mobile:
            await self.send("Emulation.setTouchEmulationEnabled", enabled=True, maxTouchPoints=5)
