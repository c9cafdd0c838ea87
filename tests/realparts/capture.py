"""A capture server: an aiohttp server on loopback that records every request and answers 200.

It stands in only for receivers that cannot run here (Slack, PagerDuty, a webhook sink); tests check the
recorded requests against the documented format. Unlike the other parts it is not a process but runs in
the test's own event loop, so it has no pid, directory or exit-time close.
"""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from .common import LOOPBACK


@dataclass(frozen=True)
class CapturedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDictProxy[str]  # case-insensitive: headers["authorization"] works
    body: bytes
    json: Any  # the parsed body, or None when it is not JSON
    status: int  # what the capture server answered


class CaptureServer:
    """Records every request it gets and answers 200, or a chosen status for the next N requests.

    Stands in only for receivers that cannot run here (Slack, PagerDuty, a webhook sink); tests check
    the recorded requests against the documented format.
    """

    def __init__(self) -> None:
        self.requests: list[CapturedRequest] = []
        self.url = ""
        self._fail_remaining = 0
        self._fail_status = 503
        self._arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None

    def fail_first(self, n: int, status: int = 503) -> None:
        """Answer `status` to the next n requests (all of them still recorded), then 200 again."""
        self._fail_remaining = n
        self._fail_status = status

    async def wait_for(self, n: int, timeout: float = 10) -> list[CapturedRequest]:
        """Wait until at least n requests have arrived; returns the first n."""
        try:
            async with asyncio.timeout(timeout):
                while len(self.requests) < n:
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            got = [f"{r.method} {r.path} -> {r.status}" for r in self.requests]
            raise AssertionError(f"waited {timeout} s for {n} requests, got {len(got)}: {got}") from None
        return self.requests[:n]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = None
        status = 200
        if self._fail_remaining > 0:
            self._fail_remaining -= 1
            status = self._fail_status
        self.requests.append(
            CapturedRequest(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers=CIMultiDictProxy(CIMultiDict(request.headers)),
                body=body,
                json=parsed,
                status=status,
            )
        )
        self._arrived.set()
        return web.json_response({"ok": status == 200}, status=status)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        # Binding port 0 ourselves avoids the race between picking a free port and listening on it.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((LOOPBACK, 0))
        site = web.SockSite(self._runner, sock)
        await site.start()
        self.url = f"http://{LOOPBACK}:{sock.getsockname()[1]}"

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
