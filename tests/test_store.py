"""The store protocol, the same tests against SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest_asyncio

from remediator.store.base import AlertRef, Firing, FiringResult, Note, Resolved, Store
from remediator.store.postgres import PostgresStore
from remediator.store.sqlite import SqliteStore


def make(url: str) -> Store:
    if url.startswith("sqlite:"):
        return SqliteStore(Path(url.removeprefix("sqlite:")))
    return PostgresStore(url)


@pytest_asyncio.fixture
async def stores(store_url: str) -> AsyncIterator[Callable[[], Any]]:
    """A factory of opened stores on one database (several = several replicas, or a restart)."""
    opened: list[Store] = []

    async def open_one() -> Store:
        store = make(store_url)
        await store.open()
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        await store.close()


STARTS = "2026-11-23T10:00:00+00:00"


def ref(fp: str = "f1", container: str = "db", starts: str = STARTS) -> AlertRef:
    return AlertRef(
        fp,
        starts,
        {"alertname": "DatabaseDown", "severity": "critical", "container": container},
        {"summary": "s"},
        _ts(starts),
    )


def _ts(starts: str) -> float:
    try:
        return datetime.fromisoformat(starts).timestamp()
    except ValueError:
        return 0.0


def resolved(fp: str, starts: str = STARTS) -> Resolved:
    return Resolved(fp, starts, _ts(starts))


async def firing(store: Store, *events: Firing, owner: str = "a", now: float = 100.0) -> list[FiringResult]:
    results = await store.record_intake(list(events), [], now, owner, now + 15)
    assert all(isinstance(r, FiringResult) for r in results)
    return results  # type: ignore[return-value]


async def test_the_inbox_keeps_what_was_acknowledged(stores: Callable[[], Any]) -> None:
    store = await stores()
    ids = await asyncio.gather(*(store.inbox_put(f'{{"n": {n}}}', 1.0) for n in range(20)))
    assert len(set(ids)) == 20
    pending = await store.inbox_pending()
    assert [i for i, _ in pending] == sorted(ids)  # in arrival order
    assert dict(pending) == {i: f'{{"n": {n}}}' for n, i in enumerate(ids)}
    await store.record_intake([Note("truncated", {"count": 1})], sorted(ids)[:15], 2.0, "a", 0)
    assert [i for i, _ in await store.inbox_pending()] == sorted(ids)[15:]
    await store.close()
    reopened = await stores()  # migrations apply once; the data stays
    assert len(await reopened.inbox_pending()) == 5


async def test_one_incident_per_policy_and_target(stores: Callable[[], Any]) -> None:
    store = await stores()
    first, resend, other_alert, other_target = await firing(
        store,
        Firing("db-down", "db", ref("f1")),
        Firing("db-down", "db", ref("f1")),
        Firing("db-down", "db", ref("f2")),
        Firing("db-down", "db2", ref("f3", "db2")),
    )
    assert first.created and not first.duplicate
    # A re-send names its incident without reading it: nothing is done with it.
    assert resend.duplicate and resend.incident is None and resend.duplicate_of == first.incident.id
    assert (
        not other_alert.created and not other_alert.duplicate and other_alert.incident.id == first.incident.id
    )
    assert other_target.created and other_target.incident.id != first.incident.id
    assert first.incident.severity == "critical" and first.incident.labels["container"] == "db"
    trail = [a.kind for a in await store.audit_trail(first.incident.id)]
    assert trail == ["opened", "duplicate", "attached"]


async def test_an_incident_resolves_when_all_its_alerts_have(stores: Callable[[], Any]) -> None:
    store = await stores()
    (first, _) = await firing(store, Firing("db-down", "db", ref("f1")), Firing("db-down", "db", ref("f2")))
    assert await store.record_intake([resolved("f1")], [], 101, "a", 0) == [[]]
    (closed,) = await store.record_intake([resolved("f2")], [], 102, "a", 0)
    assert isinstance(closed, list) and [i.id for i in closed] == [first.incident.id]
    assert closed[0].status == "resolved"
    assert await store.record_intake([resolved("f2")], [], 103, "a", 0) == [[]]  # a re-sent resolution
    (again,) = await firing(store, Firing("db-down", "db", ref("f1", starts="2026-11-23T11:00:00+00:00")))
    assert again.created and again.incident.id != first.incident.id


async def test_history_counts_what_the_guards_read(stores: Callable[[], Any]) -> None:
    store = await stores()
    (a,) = await firing(store, Firing("p", "db", ref("f1")))
    (b,) = await firing(store, Firing("q", "db", ref("f2")))
    await store.step_started(a.incident.id, 0, "act", "container.restart", 1, 100)
    step = await store.step_started(a.incident.id, 0, "act", "container.restart", 2, 200)
    await store.step_finished(step, "ok", "done", 210)
    await store.step_started(a.incident.id, 0, "diagnose", "container.logs", 1, 220)
    await store.record_intake([resolved("f1")], [], 230, "a", 0)
    (c,) = await firing(store, Firing("p", "db", ref("f1", starts="2026-11-23T11:00:00+00:00")), now=240)
    h = await store.history("p", "db", c.incident.id, since_target=150, since_budget=0, since_flap=0)
    assert (h.target_actions, h.all_actions, h.last_other_action_at, h.incidents_opened) == (1, 2, 210, 2)
    # The cooldown reads only actions that ended inside its window (however long the target's history).
    h = await store.history(
        "p", "db", c.incident.id, since_target=150, since_budget=0, since_flap=0, since_cooldown=211
    )
    assert h.last_other_action_at is None
    h = await store.history(
        "p", "db", c.incident.id, since_target=150, since_budget=0, since_flap=0, since_cooldown=205
    )
    assert h.last_other_action_at == 210
    h = await store.history("q", "db", b.incident.id, since_target=0, since_budget=150, since_flap=150)
    assert (h.target_actions, h.all_actions, h.last_other_action_at, h.incidents_opened) == (2, 1, None, 0)


async def test_each_expired_lease_goes_to_exactly_one_replica(stores: Callable[[], Any]) -> None:
    a, b, c = await stores(), await stores(), await stores()
    results = await firing(
        a, *(Firing("p", f"t{n}", ref(f"f{n}", f"t{n}")) for n in range(30)), owner="a", now=100
    )
    ids = sorted(r.incident.id for r in results)
    held = [(i, 1) for i in ids]  # the first grant's fencing token
    assert await b.claim_expired("b", now=110, lease_until=125) == []  # a's leases still run
    assert await a.renew_leases("a", held, 130) == ids
    claims = await asyncio.gather(b.claim_expired("b", 131, 150), c.claim_expired("c", 131, 150))
    got_b, got_c = ({i.id for i in claimed} for claimed in claims)
    assert got_b | got_c == set(ids) and not got_b & got_c
    assert {i.lease_epoch for claimed in claims for i in claimed} == {2}  # each grant a new token
    assert await a.renew_leases("a", held, 160) == []  # a lost them all
    winner, owner = (b, "b") if got_b else (c, "c")
    await winner.release_leases(owner, sorted(got_b or got_c))
    assert {i.id for i in await a.claim_expired("a", 132, 150)} == (got_b or got_c)


async def test_a_replica_reclaims_its_own_leases_after_a_restart(stores: Callable[[], Any]) -> None:
    store = await stores()
    (r,) = await firing(store, Firing("p", "db", ref()), owner="me", now=100)
    assert [i.id for i in await store.claim_expired("me", now=101, lease_until=130)] == [r.incident.id]
    assert await store.claim_expired("other", now=102, lease_until=130) == []
    await store.set_status(r.incident.id, "escalated", "why", 103)
    assert await store.claim_expired("other", now=1000, lease_until=1030) == []  # only active incidents


async def test_admission_is_exclusive(stores: Callable[[], Any]) -> None:
    a, b = await stores(), await stores()
    inside: list[str] = []
    overlap: list[bool] = []

    async def enter(store: Store, name: str) -> None:
        for _ in range(5):
            async with store.admission():
                inside.append(name)
                overlap.append(len(inside) > 1)
                await asyncio.sleep(0.005)
                inside.remove(name)

    await asyncio.gather(enter(a, "a"), enter(b, "b"), enter(a, "a2"))
    assert overlap and not any(overlap)


async def test_outbox_breakers_and_control(stores: Callable[[], Any]) -> None:
    store = await stores()
    (r,) = await firing(store, Firing("p", "db", ref()))
    entry = await store.outbox_put(r.incident.id, "oncall", "k1", {"a": 1}, 100, "a", 115)
    again = await store.outbox_put(r.incident.id, "oncall", "k1", {"a": 2}, 101, "a", 116)
    assert again.id == entry.id and again.payload == {"a": 1}
    assert [e.dedup_key for e in await store.outbox_pending()] == ["k1"]
    await store.outbox_update(entry.id, "delivered", 3, "", 102)
    assert await store.outbox_pending() == []
    await store.breaker_save(
        "backend:docker", {"status": "open", "failures": [1.0], "opened_at": 1.0, "probing_since": None}, 1
    )
    assert (await store.breakers_load())["backend:docker"]["status"] == "open"
    assert await store.control_get("paused") is None
    await store.control_set("paused", "1", 5)
    await store.control_set("paused", "0", 6)
    assert await store.control_get("paused") == "0"


async def test_each_pending_escalation_is_delivered_by_one_replica(stores: Callable[[], Any]) -> None:
    a, b = await stores(), await stores()
    (r,) = await firing(a, Firing("p", "db", ref()))
    entry = await a.outbox_put(r.incident.id, "oncall", "k1", {"n": 1}, 100, "a", 115)
    assert entry.lease_owner == "a"
    # The same escalation stored again by the other replica (a replayed step) stays with the first.
    again = await b.outbox_put(r.incident.id, "oncall", "k1", {"n": 2}, 101, "b", 116)
    assert (again.id, again.lease_owner, again.payload) == (entry.id, "a", {"n": 1})
    assert await b.outbox_claim("b", 110, 125) == []
    assert await a.outbox_renew("a", [(entry.id, entry.lease_epoch)], 130) == [entry.id]
    assert await b.outbox_claim("b", 120, 135) == []  # renewed in time
    # a stops renewing: once its lease ran out b takes the entry, and a learns it lost it.
    (taken,) = await b.outbox_claim("b", 131, 146)
    assert (taken.id, taken.lease_owner, taken.payload) == (entry.id, "b", {"n": 1})
    assert taken.lease_epoch == entry.lease_epoch + 1
    assert await a.outbox_renew("a", [(entry.id, entry.lease_epoch)], 150) == []
    assert await a.outbox_claim("a", 132, 147) == []
    # Released at shutdown: claimable at once; delivered: nobody's any more.
    await b.outbox_release("b", [entry.id])
    assert [e.id for e in await a.outbox_claim("a", 133, 148)] == [entry.id]
    await a.outbox_update(entry.id, "delivered", 1, "", 134)
    assert await b.outbox_claim("b", 1000, 1015) == [] and await b.outbox_pending() == []


async def test_steps_audit_and_listing(stores: Callable[[], Any]) -> None:
    store = await stores()
    (r,) = await firing(store, Firing("p", "db", ref()))
    step = await store.step_started(r.incident.id, 1, "act", "container.restart", 1, 100)
    await store.step_finished(step, "failed", "boom", 101)
    (record,) = await store.steps(r.incident.id)
    assert (record.index, record.status, record.detail, record.finished_at) == (1, "failed", "boom", 101)
    await store.set_status(r.incident.id, "escalated", "ladder ran out", 102)
    incident = await store.get_incident(r.incident.id)
    assert incident is not None and incident.status == "escalated" and incident.reason == "ladder ran out"
    assert [i.id for i in await store.list_incidents("escalated")] == [r.incident.id]
    assert await store.list_incidents("resolved") == []
    assert [i.id for i in await store.open_incidents()] == [r.incident.id]
    assert await store.get_incident(999) is None
    assert [a.kind for a in await store.audit_trail(r.incident.id)] == ["opened", "escalated"]


async def test_the_same_target_on_two_hosts_is_two_incidents_with_their_own_history(
    stores: Callable[[], Any],
) -> None:
    store = await stores()
    (web,) = await firing(store, Firing("p", "db", ref("f1"), host="web-1"))
    (dbh,) = await firing(store, Firing("p", "db", ref("f2"), host="db-1"))
    (again,) = await firing(store, Firing("p", "db", ref("f3"), host="web-1"))
    assert web.created and dbh.created and not again.created
    assert again.incident.id == web.incident.id and dbh.incident.id != web.incident.id
    assert (web.incident.host, dbh.incident.host) == ("web-1", "db-1")
    await store.step_started(web.incident.id, 0, "act", "container.restart", 1, 100)
    h = await store.history(
        "p", "db", dbh.incident.id, since_target=0, since_budget=0, since_flap=0, host="db-1"
    )
    # db-1's target has no action of its own; the budget is global.
    assert (h.target_actions, h.all_actions, h.incidents_opened) == (0, 1, 1)
    h = await store.history(
        "p", "db", web.incident.id, since_target=0, since_budget=0, since_flap=0, host="web-1"
    )
    assert (h.target_actions, h.all_actions, h.incidents_opened) == (1, 1, 1)
    assert (await store.get_incident(dbh.incident.id)).host == "db-1"  # type: ignore[union-attr]
