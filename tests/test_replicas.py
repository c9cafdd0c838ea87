"""Several replicas on one PostgreSQL, as real processes: each incident acts once, and a replica killed with
SIGKILL in the middle of a restart loses its incidents to the others, which reconcile instead of repeating."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from helpers import REPO, TOKEN, alert, eventually, notification
from realparts import DockerDaemon, free_port

POLICY = """\
name: replicated
match: [alertname = ReplicaAlert]
target: {kind: container, from_label: container, allow: ["rep-[0-9]+"]}
steps:
  - act: container.restart
    with: {timeout_s: RESTART_TIMEOUT}
    verify: {resolved_within_s: VERIFY}
  - escalate: log
limits:
  cooldown_s: 0
  max_actions: {count: 100, window_s: 3600}
  flapping: {count: 100, window_s: 3600}
"""


class Replica:
    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name = name
        self.port = free_port()
        self.log = Path(env["REMEDIATOR_STATE_DIR"]) / f"{name}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        # The child keeps its own copy of the log descriptor; ours is closed at once.
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "remediator", "serve", "--port", str(self.port)],
                cwd=REPO,
                env={**os.environ, **env, "REMEDIATOR_REPLICA_ID": name},
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"replica {self.name} exited: {self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"replica {self.name} not ready: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def replicas(
    tmp_path: Path, fresh_pg_url: str, docker_daemon: DockerDaemon
) -> Iterator[Callable[..., list[Replica]]]:
    started: list[Replica] = []

    def start(
        n: int, verify_s: float, restart_timeout_s: int, policy: str = POLICY, **extra: str
    ) -> list[Replica]:
        """``n`` replicas on the policy template (VERIFY and RESTART_TIMEOUT filled in); ``extra`` settings."""
        policies = tmp_path / "policies"
        policies.mkdir(exist_ok=True)
        text = policy.replace("VERIFY", str(verify_s)).replace("RESTART_TIMEOUT", str(restart_timeout_s))
        (policies / "replicated.yaml").write_text(text)
        env = {
            "REMEDIATOR_STATE_DIR": str(tmp_path / "state"),
            "REMEDIATOR_POLICIES_DIR": str(policies),
            "REMEDIATOR_SERVER__TOKEN": TOKEN,
            "REMEDIATOR_STORE__URL": fresh_pg_url,
            "REMEDIATOR_STORE__LEASE_S": "3",
            "REMEDIATOR_DOCKER__HOST": docker_daemon.host,
            "REMEDIATOR_SERVER__SHUTDOWN_GRACE_S": "2",
            "REMEDIATOR_LOG__FORMAT": "json",
            **extra,
        }
        new = [Replica(f"replica-{len(started) + i}", env) for i in range(n)]
        started.extend(new)
        for replica in new:
            replica.wait_ready()
        return new

    yield start
    for replica in started:
        if replica.proc.poll() is None:
            replica.proc.send_signal(signal.SIGCONT)  # a test may have left one frozen
        replica.stop()
    remove_containers(docker_daemon, "rep-")


def remove_containers(docker_daemon: DockerDaemon, prefix: str) -> None:
    for container in docker_daemon.client.containers.list(all=True):
        if container.name.startswith(prefix):
            container.remove(force=True)


async def post_everywhere(replicas: list[Replica], bodies: list[dict[str, Any]]) -> None:
    """Alertmanager in HA sends every notification to every replica."""
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http:

        async def send(replica: Replica, body: dict[str, Any]) -> None:
            async with http.post(f"{replica.url}/alerts", data=json.dumps(body), headers=headers) as r:
                assert r.status == 200, await r.text()

        for start in range(0, len(bodies), 50):
            chunk = bodies[start : start + 50]
            await asyncio.gather(*(send(r, b) for b in chunk for r in replicas))


def restarts(docker_daemon: DockerDaemon, since: datetime) -> dict[str, int]:
    events = docker_daemon.client.api.events(
        since=since, until=datetime.now(UTC), decode=True, filters={"type": "container", "event": "restart"}
    )
    counts: dict[str, int] = {}
    for event in events:
        name = event["Actor"]["Attributes"]["name"]
        counts[name] = counts.get(name, 0) + 1
    return counts


async def db_rows(url: str, sql: str) -> list[asyncpg.Record]:
    db = await asyncpg.connect(url)
    try:
        return list(await db.fetch(sql))
    finally:
        await db.close()


async def test_three_replicas_same_500_alerts_each_incident_restarts_once(
    replicas: Callable[..., list[Replica]], docker_daemon: DockerDaemon, fresh_pg_url: str
) -> None:
    names = [f"rep-{n}" for n in range(20)]
    for name in names:
        await asyncio.to_thread(docker_daemon.run_container, name)
    since = datetime.now(UTC)
    group = await asyncio.to_thread(replicas, 3, 60, 2)
    alerts = [alert("ReplicaAlert", fingerprint=f"r{i:03d}", container=names[i % 20]) for i in range(500)]
    await post_everywhere(group, [notification(a) for a in alerts])

    await eventually(
        lambda: db_rows(fresh_pg_url, "SELECT 1 FROM steps WHERE kind = 'act' AND status = 'ok'"), timeout=60
    )

    async def all_acted() -> bool:
        rows = await db_rows(
            fresh_pg_url, "SELECT count(*) AS n FROM steps WHERE kind = 'act' AND status <> 'started'"
        )
        return rows[0]["n"] >= 20

    await eventually(all_acted, timeout=60)
    await asyncio.sleep(1)  # would a second replica act too? give it the chance to be wrong
    counts = await asyncio.to_thread(restarts, docker_daemon, since)
    assert counts == dict.fromkeys(names, 1)
    incidents = await db_rows(fresh_pg_url, "SELECT policy, target FROM incidents")
    assert sorted(r["target"] for r in incidents) == sorted(names)

    async def inbox_processed() -> bool:
        rows = await db_rows(fresh_pg_url, "SELECT count(*) AS n FROM inbox WHERE processed_at IS NULL")
        return rows[0]["n"] == 0

    # Every acknowledged notification is processed; how soon depends on the machine's load (three replicas'
    # intakes queue on the same per-target locks), so this waits rather than asserting at once.
    await eventually(inbox_processed, timeout=60)
    received = await db_rows(fresh_pg_url, "SELECT count(*) AS n FROM inbox")
    assert received[0]["n"] == 1500


async def test_a_replica_killed_mid_restart_loses_its_incidents_to_the_others(
    replicas: Callable[..., list[Replica]], docker_daemon: DockerDaemon, fresh_pg_url: str
) -> None:
    names = [f"rep-{n}" for n in range(6)]
    for name in names:
        # no init: PID 1 ignores SIGTERM, so each restart takes the full 3 s stop timeout
        await asyncio.to_thread(docker_daemon.run_container, name, init=False)
    since = datetime.now(UTC)
    # A Docker call holds its lease for the call's own timeout plus a lease (F2): with the default 60 s timeout
    # the others would take the killed replica's incidents over only after a minute.
    group = await asyncio.to_thread(replicas, 3, 4, 3, REMEDIATOR_DOCKER__TIMEOUT_S="10")
    await post_everywhere(
        group, [notification(alert("ReplicaAlert", fingerprint=n, container=n)) for n in names]
    )

    async def busy_owner() -> str | None:
        rows = await db_rows(
            fresh_pg_url,
            "SELECT i.lease_owner FROM steps s JOIN incidents i ON i.id = s.incident_id WHERE s.status = 'started'",
        )
        return rows[0]["lease_owner"] if rows else None

    victim_name = await eventually(busy_owner, timeout=30)
    victim = next(r for r in group if r.name == victim_name)
    victim.proc.kill()  # SIGKILL, mid-restart
    victim.proc.wait()

    async def all_escalated() -> bool:
        rows = await db_rows(fresh_pg_url, "SELECT status FROM incidents")
        return len(rows) == 6 and all(r["status"] == "escalated" for r in rows)

    await eventually(all_escalated, timeout=90)
    interrupted = await db_rows(
        fresh_pg_url,
        "SELECT i.target, i.id FROM steps s JOIN incidents i ON i.id = s.incident_id WHERE s.status = 'interrupted'",
    )
    assert interrupted, "the killed replica's restart is marked interrupted, then reconciled by verification"
    cut = {r["target"] for r in interrupted}
    counts = await asyncio.to_thread(restarts, docker_daemon, since)
    # Nothing is done twice: no container restarted more than once, and the interrupted restart was not
    # repeated (dockerd may or may not have finished it when its client died); nothing is lost: every other
    # container was restarted exactly once and every incident ended escalated.
    assert all(n == 1 for n in counts.values()), counts
    assert set(counts) >= set(names) - cut, counts
    acts = await db_rows(
        fresh_pg_url,
        "SELECT i.target, count(*) AS n FROM steps s JOIN incidents i ON i.id = s.incident_id"
        " WHERE s.kind = 'act' GROUP BY i.target",
    )
    assert {r["target"]: r["n"] for r in acts} == dict.fromkeys(names, 1)
    owners = await db_rows(fresh_pg_url, "SELECT lease_owner FROM incidents")
    assert victim_name not in {r["lease_owner"] for r in owners}
    resumed = await db_rows(fresh_pg_url, "SELECT count(*) AS n FROM audit WHERE kind = 'resumed'")
    assert resumed[0]["n"] >= 1
