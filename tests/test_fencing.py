"""Fencing tokens on both stores (issue 20): once another replica was granted an incident's (or an outbox
entry's) lease, every write made under the old token is refused with LeaseLost, and nothing of it lands."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
from realparts import DockerDaemon
from test_store import make, ref

from remediator.actions.docker import ContainerRestart, DockerBackend, RestartParams
from remediator.domain.fencing import Fence, call_deadline, call_guard, current_fence
from remediator.errors import LateCall, LeaseLost
from remediator.store.base import Firing, FiringResult, Store


@pytest_asyncio.fixture
async def two(store_url: str) -> AsyncIterator[tuple[Store, Store]]:
    a, b = make(store_url), make(store_url)
    await a.open()
    await b.open()
    yield a, b
    await a.close()
    await b.close()


async def fenced(fence: Fence, write: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``write`` as a ladder task holding ``fence`` would."""

    async def run() -> Any:
        current_fence.set(fence)
        return await write()

    return await asyncio.create_task(run(), context=contextvars.Context())


async def test_a_replica_that_lost_the_lease_can_write_nothing_for_the_incident(
    two: tuple[Store, Store],
) -> None:
    a, b = two
    (r,) = await a.record_intake([Firing("p", "db", ref())], [], 100, "a", 115)
    assert isinstance(r, FiringResult) and r.incident is not None
    incident = r.incident
    mine = Fence(incident.id, "a", incident.lease_epoch)
    step = await fenced(mine, lambda: a.step_started(incident.id, 0, "act", "container.restart", 1, 101))
    await fenced(mine, lambda: a.lease_confirm(mine, 101, 150))

    (taken,) = await b.claim_expired("b", now=200, lease_until=215)  # a froze past its lease
    assert taken.lease_epoch == incident.lease_epoch + 1
    theirs = Fence(incident.id, "b", taken.lease_epoch)
    await fenced(theirs, lambda: b.step_finished(step, "interrupted", "the daemon stopped mid-step", 201))
    before_steps, before_audit = await b.steps(incident.id), await b.audit_trail(incident.id)

    # a wakes up: every write it tries for this incident is refused, and none of it lands.
    attempts: list[Callable[[], Awaitable[Any]]] = [
        lambda: a.step_finished(step, "ok", "restarted db", 202),
        lambda: a.step_started(incident.id, 0, "act", "container.restart", 2, 202),
        lambda: a.audit(incident.id, "verified", {"step": "container.restart"}, 202),
        lambda: a.set_status(incident.id, "escalated", "late", 202),
        lambda: a.outbox_put(incident.id, "oncall", "k-late", {"n": 1}, 202, "a", 217),
        lambda: a.lease_confirm(mine, 202, 260),
    ]
    for write in attempts:
        with pytest.raises(LeaseLost):
            await fenced(mine, write)
    assert await b.steps(incident.id) == before_steps
    assert await b.audit_trail(incident.id) == before_audit
    assert (await b.get_incident(incident.id)).status == "active"  # type: ignore[union-attr]
    assert await b.outbox_pending() == []
    # The holder of the new token writes as usual.
    await fenced(theirs, lambda: b.audit(incident.id, "resumed", {"index": 0}, 203))
    await fenced(theirs, lambda: b.lease_confirm(theirs, 203, 260))


async def test_a_lease_is_confirmed_only_for_an_active_incident(two: tuple[Store, Store]) -> None:
    a, _ = two
    (r,) = await a.record_intake([Firing("p", "db", ref())], [], 100, "a", 115)
    assert isinstance(r, FiringResult) and r.incident is not None
    fence = Fence(r.incident.id, "a", r.incident.lease_epoch)
    await fenced(fence, lambda: a.set_status(r.incident.id, "escalated", "a human owns it", 101))  # type: ignore[union-attr]
    with pytest.raises(LeaseLost):
        await a.lease_confirm(fence, 102, 150)


async def test_a_refused_target_is_never_claimable(two: tuple[Store, Store]) -> None:
    a, b = two
    (r,) = await a.record_intake(
        [Firing("p", "db;rm", ref(), reason="outside the allow list")], [], 100, "a", 115
    )
    assert isinstance(r, FiringResult) and r.incident is not None and r.incident.status == "escalated"
    assert await b.claim_expired("b", now=1000, lease_until=1015) == []
    assert await a.claim_expired("a", now=1000, lease_until=1015) == []


async def test_renewals_never_shorten_a_lease_an_action_extended(two: tuple[Store, Store]) -> None:
    a, b = two
    (r,) = await a.record_intake([Firing("p", "db", ref())], [], 100, "a", 115)
    assert isinstance(r, FiringResult) and r.incident is not None
    fence = Fence(r.incident.id, "a", r.incident.lease_epoch)
    await a.lease_confirm(fence, 101, 400)  # a long action: its lease covers the action's timeout
    assert await a.renew_leases("a", [(r.incident.id, fence.epoch)], 120) == [r.incident.id]
    assert await b.claim_expired("b", now=300, lease_until=315) == []  # still a's, at 300 < 400


async def test_a_stale_delivery_cannot_record_its_outcome(two: tuple[Store, Store]) -> None:
    a, b = two
    (r,) = await a.record_intake([Firing("p", "db", ref())], [], 100, "a", 115)
    assert isinstance(r, FiringResult) and r.incident is not None
    entry = await a.outbox_put(r.incident.id, "oncall", "k1", {"n": 1}, 100, "a", 115)
    await a.outbox_confirm(entry, 101, 116)
    (taken,) = await b.outbox_claim("b", 200, 215)
    with pytest.raises(LeaseLost):
        await a.outbox_confirm(entry, 201, 216)
    with pytest.raises(LeaseLost):
        await a.outbox_update(entry.id, "delivered", 1, "", 201, (entry.lease_owner, entry.lease_epoch))
    assert [e.id for e in await b.outbox_pending()] == [entry.id]  # still b's to deliver
    await b.outbox_update(taken.id, "delivered", 1, "", 202, (taken.lease_owner, taken.lease_epoch))
    assert await b.outbox_pending() == []


async def test_a_docker_call_past_its_deadline_is_dropped_not_sent(docker_daemon: DockerDaemon) -> None:
    """F3: the process froze (or the call waited) between the lease confirmation and the request: the pool
    thread sends nothing (LateCall, which makes the runner confirm the lease again), unless the guard confirms
    it again first."""
    docker_daemon.run_container("fence-0")
    before = docker_daemon.started_at("fence-0")
    backend = DockerBackend(docker_daemon.host, timeout_s=20, threads=1)
    restart = ContainerRestart(backend)
    try:

        async def late() -> str:
            call_deadline.set(time.monotonic() - 1)  # the lease-safe moment passed while frozen
            return await restart.run("fence-0", RestartParams(timeout_s=1))

        with pytest.raises(LateCall):  # the runner confirms its lease again, then retries
            await asyncio.create_task(late(), context=contextvars.Context())
        assert docker_daemon.started_at("fence-0") == before

        confirmed: list[float] = []

        async def reconfirm() -> float:  # what the runner's guard does: confirm again, a new deadline
            confirmed.append(time.monotonic())
            return time.monotonic() + 5

        async def queued() -> str:
            call_deadline.set(time.monotonic() - 1)
            call_guard.set(reconfirm)
            return await restart.run("fence-0", RestartParams(timeout_s=1))

        assert "restarted fence-0" in await asyncio.create_task(queued(), context=contextvars.Context())
        assert len(confirmed) == 1 and docker_daemon.started_at("fence-0") != before
    finally:
        backend.close()
        docker_daemon.client.containers.get("fence-0").remove(force=True)


async def test_two_answers_to_one_approval_cannot_both_win(two: tuple[Store, Store]) -> None:
    """A link clicked as the request times out (or two replicas answering): one answer wins, the other is told
    nothing is pending, and the record says who won (it used to be read, then overwritten)."""
    from remediator.engine.approvals import Approvals

    a, b = two
    (r,) = await a.record_intake([Firing("p", "db", ref())], [], 100, "a", 115)
    assert isinstance(r, FiringResult) and r.incident is not None
    clock = iter(range(200, 300)).__next__
    here, there = Approvals(a, clock), Approvals(b, clock)
    await here.request(r.incident, "container.restart", 60)
    results = await asyncio.gather(
        here.decide(r.incident.id, False, by="timeout after 60s"),
        there.decide(r.incident.id, True, by="approval link"),
    )
    assert sorted(results) == [False, True]
    answer = await here.get(r.incident.id)
    assert answer is not None
    assert (answer.state, answer.by) in (("denied", "timeout after 60s"), ("approved", "approval link"))
    assert [x.kind for x in await a.audit_trail(r.incident.id)].count(answer.state) == 1
