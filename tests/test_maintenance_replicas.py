"""Maintenance windows with several replicas on one PostgreSQL, as real processes, and the CLI as a process: a
window declared through one replica holds the alerts every replica receives, survives a replica's restart, and
cancelled through another replica, the container is restarted exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from typing import Any

from helpers import REPO, TOKEN, alert, eventually, notification
from realparts import DockerDaemon
from test_replicas import Replica, post_everywhere, replicas  # noqa: F401 (replicas: the fixture)


def cli(replica: Replica, *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("REMEDIATOR_")}
    return subprocess.run(
        [sys.executable, "-m", "remediator", *args, "--url", replica.url, "--token", TOKEN],
        cwd=REPO,
        env=base,
        capture_output=True,
        text=True,
        timeout=60,
    )


def get(replica: Replica, path: str) -> Any:
    request = urllib.request.Request(f"{replica.url}{path}", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read())


async def test_a_window_holds_on_every_replica_survives_a_restart_and_its_cancel_restarts_once(
    replicas: Callable[..., list[Replica]],  # noqa: F811
    docker_daemon: DockerDaemon,
) -> None:
    await asyncio.to_thread(docker_daemon.run_container, "rep-71")
    before = await asyncio.to_thread(docker_daemon.started_at, "rep-71")
    a, b = await asyncio.to_thread(replicas, 2, 30, 2, REMEDIATOR_MAINTENANCE__TICK_S="0.3")
    added = await asyncio.to_thread(
        cli, a, "maintenance", "add", "--target", "rep-71", "--for", "1h", "--reason", "replica test"
    )
    assert added.returncode == 0, added.stderr
    assert "maintenance window 1 on rep-71" in added.stdout

    body = notification(alert("ReplicaAlert", fingerprint="fp-rep-71", container="rep-71"))
    await post_everywhere([a, b], [body])

    def held() -> list[Any]:
        return get(b, "/api/incidents?status=maintenance")["incidents"]

    (incident,) = await eventually(lambda: asyncio.to_thread(held))
    await asyncio.sleep(1.5)  # several passes on both replicas
    assert await asyncio.to_thread(docker_daemon.started_at, "rep-71") == before

    # A restart of the replica it was declared on: the window is still there, and still holds.
    await asyncio.to_thread(a.stop)
    (c,) = await asyncio.to_thread(replicas, 1, 30, 2, REMEDIATOR_MAINTENANCE__TICK_S="0.3")
    listed = await asyncio.to_thread(cli, c, "maintenance", "list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert [(w["id"], w["state"]) for w in json.loads(listed.stdout)["windows"]] == [(1, "in force")]
    await post_everywhere([b, c], [body])  # Alertmanager's re-send
    await asyncio.sleep(1.0)
    assert await asyncio.to_thread(docker_daemon.started_at, "rep-71") == before

    # Cancelled through the other replica: restarted, exactly once, by one replica.
    cancelled = await asyncio.to_thread(cli, b, "maintenance", "cancel", "1")
    assert cancelled.returncode == 0, cancelled.stderr
    await eventually(
        lambda: asyncio.to_thread(lambda: docker_daemon.started_at("rep-71") != before), timeout=20
    )
    gone = alert("ReplicaAlert", status="resolved", fingerprint="fp-rep-71", container="rep-71")
    await post_everywhere([b, c], [notification(gone)])

    def shown() -> Any:
        # Resolved, and the restart's result recorded (it may land just after the resolution).
        found = get(c, f"/api/incidents/{incident['id']}")
        settled = all(s["status"] != "started" for s in found["steps"])
        return found if found["status"] == "resolved" and settled else None

    final = await eventually(lambda: asyncio.to_thread(shown), timeout=20)
    restarts = [s for s in final["steps"] if s["name"] == "container.restart"]
    assert [s["status"] for s in restarts] == ["ok"]
