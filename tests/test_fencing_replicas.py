"""Fencing with real processes (issue 20): two replicas on one PostgreSQL and a private dockerd; replica A is
frozen with SIGSTOP at a point of its ladder, kept frozen past its lease while B takes the incident over, then
resumed. A must neither act nor write after the takeover: the restarts are what the ladder allows for one
incident, and the incident's steps read as one story."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from datetime import UTC, datetime

import aiohttp
import pytest
from helpers import TOKEN, alert, eventually, notification
from realparts import DockerDaemon
from test_replicas import Replica, db_rows, post_everywhere, restarts
from test_replicas import replicas as replicas  # the fixture, for the pair below

POLICY = """\
name: fenced
match: [alertname = FenceAlert]
target: {kind: container, from_label: container, allow: ["rep-f[0-9]+"]}
steps:
  - act: container.restart
    attempts: 2
    with: {timeout_s: RESTART_TIMEOUT}
    verify: {resolved_within_s: VERIFY}
  - escalate: log
limits:
  cooldown_s: 0
  max_actions: {count: 100, window_s: 3600}
  flapping: {count: 100, window_s: 3600}
"""

LEASE_S = 3.0


@pytest.fixture
def pair(replicas: Callable[..., list[Replica]]) -> Callable[..., list[Replica]]:
    """Two replicas (A and B) with a short lease; a call's lease covers its timeout (restart timeout + the
    Docker timeout set here), so the takeover comes within seconds."""

    def start(verify_s: float, restart_timeout_s: int, policy: str = POLICY) -> list[Replica]:
        return replicas(
            2,
            verify_s,
            restart_timeout_s,
            policy,
            REMEDIATOR_STORE__LEASE_S=str(LEASE_S),
            REMEDIATOR_DOCKER__TIMEOUT_S="5",
            REMEDIATOR_LOG__FORMAT="text",
        )

    return start


async def act_steps(url: str) -> list[tuple[int, str]]:
    return [
        (r["attempt"], r["status"])
        for r in await db_rows(url, "SELECT * FROM steps WHERE kind = 'act' ORDER BY id")
    ]


async def escalated(url: str) -> bool:
    return bool(await db_rows(url, "SELECT 1 FROM incidents WHERE status = 'escalated'"))


async def test_a_replica_frozen_during_its_docker_call_neither_records_nor_acts_after_the_takeover(
    pair: Callable[..., list[Replica]], docker_daemon: DockerDaemon, fresh_pg_url: str
) -> None:
    # No init: PID 1 ignores SIGTERM, so the restart takes its whole 4 s stop timeout: A is frozen mid-call.
    await asyncio.to_thread(docker_daemon.run_container, "rep-f0", init=False)
    since = datetime.now(UTC)
    a, _b = await asyncio.to_thread(pair, 1.0, 4)
    await post_everywhere([a], [notification(alert("FenceAlert", fingerprint="x0", container="rep-f0"))])
    await eventually(lambda: act_steps(fresh_pg_url), timeout=30)
    a.proc.send_signal(signal.SIGSTOP)
    try:
        # B takes over once A's lease (extended to cover the call) runs out, reconciles the interrupted
        # step by verification, tries its second attempt and escalates.
        await eventually(lambda: escalated(fresh_pg_url), timeout=60)
    finally:
        a.proc.send_signal(signal.SIGCONT)
    await asyncio.sleep(2 * LEASE_S)  # A's late result, and anything A would do next, had time to land
    steps = await act_steps(fresh_pg_url)
    assert steps[0] == (1, "interrupted"), steps  # never overwritten with A's late "ok"
    assert [s for s in steps if s[0] == 1] == [(1, "interrupted")]
    counts = await asyncio.to_thread(restarts, docker_daemon, since)
    # At most one restart per recorded attempt, as the ladder allows. A may have been frozen just before its
    # request went out: then the deadline check drops it when A wakes, and only B's restart happened.
    assert 1 <= counts.get("rep-f0", 0) <= len(steps) <= 2, (counts, steps)
    # A learnt it lost the lease (from its keeper, or from a refused write): either way it stopped.
    assert "lease" in a.log.read_text()


async def test_a_replica_frozen_during_verification_does_not_act_again(
    pair: Callable[..., list[Replica]], docker_daemon: DockerDaemon, fresh_pg_url: str
) -> None:
    await asyncio.to_thread(docker_daemon.run_container, "rep-f1")
    since = datetime.now(UTC)
    a, _b = await asyncio.to_thread(pair, 8.0, 2)
    await post_everywhere([a], [notification(alert("FenceAlert", fingerprint="x1", container="rep-f1"))])

    async def first_ok() -> bool:
        return (1, "ok") in await act_steps(fresh_pg_url)

    await eventually(first_ok, timeout=30)
    a.proc.send_signal(signal.SIGSTOP)  # A is waiting out its verification window
    try:
        await eventually(lambda: escalated(fresh_pg_url), timeout=60)
    finally:
        a.proc.send_signal(signal.SIGCONT)
    await asyncio.sleep(10)  # past A's verification window: without fencing it would now try attempt 2
    steps = await act_steps(fresh_pg_url)
    assert steps == [(1, "ok"), (2, "ok")], steps  # A's first attempt, B's second: what the ladder allows
    counts = await asyncio.to_thread(restarts, docker_daemon, since)
    assert counts.get("rep-f1", 0) == 2
    assert "lease" in a.log.read_text()


APPROVAL_POLICY = """\
name: fenced
match: [alertname = FenceAlert]
target: {kind: container, from_label: container, allow: ["rep-f[0-9]+"]}
steps:
  - act: container.restart
    approval: {timeout_s: 120}
    verify: {resolved_within_s: 2}
  - escalate: log
limits:
  cooldown_s: 0
  max_actions: {count: 100, window_s: 3600}
  flapping: {count: 100, window_s: 3600}
"""


async def test_a_replica_frozen_while_waiting_for_approval_does_not_act_on_the_answer(
    pair: Callable[..., list[Replica]], docker_daemon: DockerDaemon, fresh_pg_url: str
) -> None:
    await asyncio.to_thread(docker_daemon.run_container, "rep-f2")
    since = datetime.now(UTC)
    a, b = await asyncio.to_thread(pair, 0, 2, APPROVAL_POLICY)
    await post_everywhere([a], [notification(alert("FenceAlert", fingerprint="x2", container="rep-f2"))])

    async def requested() -> bool:
        return bool(await db_rows(fresh_pg_url, "SELECT 1 FROM audit WHERE kind = 'approval_requested'"))

    await eventually(requested, timeout=30)
    a.proc.send_signal(signal.SIGSTOP)  # before its step is even recorded: it waits for a human
    try:

        async def asked_again() -> bool:
            rows = await db_rows(fresh_pg_url, "SELECT 1 FROM audit WHERE kind = 'approval_requested'")
            return len(rows) >= 2  # B took over and asked again

        await eventually(asked_again, timeout=60)
        await post_approval(b)
        await eventually(lambda: act_steps(fresh_pg_url), timeout=30)
    finally:
        a.proc.send_signal(signal.SIGCONT)
    await asyncio.sleep(2 * LEASE_S)  # A sees the approval when it wakes: it must not act on it
    assert len(await act_steps(fresh_pg_url)) == 1
    counts = await asyncio.to_thread(restarts, docker_daemon, since)
    assert counts.get("rep-f2", 0) == 1
    assert "lease" in a.log.read_text()


async def post_approval(replica: Replica) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{replica.url}/api/incidents/1/approve", headers=headers) as r,
    ):
        assert r.status == 200, await r.text()
