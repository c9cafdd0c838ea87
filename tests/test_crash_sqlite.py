"""Crash safety with the SQLite store: kill -9 the daemon, start it again, and nothing acknowledged is lost and
nothing is done twice."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers import alert, eventually, notification
from realparts import DockerDaemon
from test_replicas import POLICY, Replica, post_everywhere, remove_containers, restarts


@pytest.fixture
def daemon(tmp_path: Path, docker_daemon: DockerDaemon) -> Iterator[Callable[[], Replica]]:
    """A daemon on SQLite; containers named rep-* are removed afterwards, since the slow ones (no init) would
    make every later stop of the shared Docker daemon wait out its timeout."""
    started: list[Replica] = []
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "replicated.yaml").write_text(POLICY.replace("VERIFY", "2").replace("RESTART_TIMEOUT", "3"))
    env = {
        "REMEDIATOR_STATE_DIR": str(tmp_path / "state"),
        "REMEDIATOR_POLICIES_DIR": str(policies),
        "REMEDIATOR_SERVER__TOKEN": "test-token-0123456789",
        "REMEDIATOR_DOCKER__HOST": docker_daemon.host,
        "REMEDIATOR_LOG__FORMAT": "json",
        # long enough for a 3 s restart on a loaded machine: the SIGTERM test checks the action is let finish
        "REMEDIATOR_SERVER__SHUTDOWN_GRACE_S": "30",
    }

    def start() -> Replica:
        replica = Replica("solo", env)  # the same replica id each time: a restart, not a new replica
        started.append(replica)
        replica.wait_ready()
        return replica

    yield start
    for replica in started:
        replica.stop()
    remove_containers(docker_daemon, "rep-")


def query(tmp_path: Path, sql: str) -> list[tuple[object, ...]]:
    db = sqlite3.connect(tmp_path / "state" / "remediator.sqlite3", timeout=10)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


async def test_kill_9_mid_restart_is_reconciled_not_repeated(
    tmp_path: Path, daemon: Callable[[], Replica], docker_daemon: DockerDaemon
) -> None:
    await asyncio.to_thread(docker_daemon.run_container, "rep-99", init=False)  # a 3 s restart
    since = datetime.now(UTC)
    first = await asyncio.to_thread(daemon)
    await post_everywhere(
        [first], [notification(alert("ReplicaAlert", fingerprint="c1", container="rep-99"))]
    )
    await eventually(lambda: query(tmp_path, "SELECT 1 FROM steps WHERE status = 'started'"), timeout=20)
    first.proc.kill()
    first.proc.wait()

    await asyncio.to_thread(daemon)
    await eventually(
        lambda: query(tmp_path, "SELECT 1 FROM incidents WHERE status = 'escalated'"), timeout=30
    )
    steps = query(tmp_path, "SELECT kind, status FROM steps")
    assert steps == [("act", "interrupted")]  # verified after the restart, never run again
    assert [
        k for (k,) in query(tmp_path, "SELECT kind FROM audit WHERE kind IN ('resumed', 'not_recovered')")
    ] == [
        "resumed",
        "not_recovered",
    ]
    counts = await asyncio.to_thread(restarts, docker_daemon, since)
    assert counts.get("rep-99", 0) <= 1


async def test_every_acknowledged_alert_survives_kill_9(
    tmp_path: Path, daemon: Callable[[], Replica]
) -> None:
    first = await asyncio.to_thread(daemon)
    # unmatched alerts: intake records each one, and no action is involved
    bodies = [notification(alert("NoPolicyForThis", fingerprint=f"k{i}")) for i in range(300)]
    await post_everywhere([first], bodies)  # every one answered 200
    first.proc.kill()  # at once: some may still sit in the inbox, not yet processed
    first.proc.wait()

    await asyncio.to_thread(daemon)
    await eventually(
        lambda: query(tmp_path, "SELECT count(*) FROM audit WHERE kind = 'unmatched'")[0][0] == 300
    )
    assert query(tmp_path, "SELECT count(*) FROM inbox WHERE processed_at IS NULL") == [(0,)]
    recorded = {fp for (fp,) in query(tmp_path, "SELECT json_extract(detail, '$.fingerprint') FROM audit")}
    assert recorded == {f"k{i}" for i in range(300)}


async def test_sigterm_lets_the_running_restart_finish_then_exits(
    tmp_path: Path, daemon: Callable[[], Replica], docker_daemon: DockerDaemon
) -> None:
    await asyncio.to_thread(docker_daemon.run_container, "rep-98", init=False)  # a 3 s restart
    replica = await asyncio.to_thread(daemon)
    await post_everywhere(
        [replica], [notification(alert("ReplicaAlert", fingerprint="t1", container="rep-98"))]
    )
    await eventually(lambda: query(tmp_path, "SELECT 1 FROM steps WHERE status = 'started'"), timeout=20)
    replica.proc.terminate()
    assert await asyncio.to_thread(replica.proc.wait, 40) == 0
    # the action in flight was allowed to finish; the verification wait was not (it resumes at the next start)
    steps = query(tmp_path, "SELECT kind, status FROM steps")
    assert steps == [("act", "ok")], replica.log.read_text()[-2000:]
    assert query(tmp_path, "SELECT status FROM incidents") == [("active",)]
