"""A root task (intake, the inbox sweep, the lease keeper) that ends on its own leaves a daemon that can take no
alert or act on none: it says so on /readyz and stops, for its supervisor to start it again (issue 13)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from helpers import eventually


async def test_a_root_task_that_dies_fails_readiness_and_stops_the_daemon(start_app: Any) -> None:
    app = await start_app()
    url = f"http://127.0.0.1:{app.port}/readyz"
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        assert r.status == 200

    async def broken() -> None:
        await asyncio.sleep(0.05)
        raise RuntimeError("a bug that escaped the loop's own handling")

    app._supervised(broken(), "intake")
    await asyncio.wait_for(app.dead.wait(), 10)
    assert "intake ended" in app.died and "a bug" in app.died

    async def not_ready() -> bool:
        async with aiohttp.ClientSession() as http, http.get(url) as r:
            return r.status == 503

    await eventually(not_ready)


async def test_root_tasks_cancelled_at_stop_are_not_deaths(start_app: Any) -> None:
    app = await start_app()
    await app.stop()
    assert not app.dead.is_set() and app.died == ""
