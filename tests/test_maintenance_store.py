"""Maintenance windows in the store, on both stores (real SQLite and PostgreSQL): an alert a window holds opens an
incident in ``maintenance`` that is never claimed or confirmed (so never run); a window that begins takes an
active incident's lease away (its token is stale); when no window holds it any more, one pass (of one replica
only) makes it active again, leased with a new token, or it was closed when its alerts resolved. The rule is one
pure function (``covering``, ``firing_outcome``), tested here on its own too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from test_store import firing, make, ref, resolved

from remediator.domain.fencing import Fence, current_fence
from remediator.domain.maintenance import ANY, MaintenanceWindow, covering
from remediator.errors import LeaseLost
from remediator.store.base import Firing, Store, firing_outcome

T0 = 1_000.0


def window(
    wid: int = 1,
    target: str = "db",
    host: str = ANY,
    policy: str = ANY,
    starts: float = 0.0,
    ends: float = 100.0,
    cancelled: float | None = None,
) -> MaintenanceWindow:
    return MaintenanceWindow(wid, target, host, policy, starts, ends, "why", "me", 0.0, cancelled)


def test_a_window_holds_its_target_on_its_host_for_its_policy_while_in_force() -> None:
    w = window(host="db-1", policy="p")
    assert covering([w], "p", "db-1", "db", 50) == w
    assert covering([w], "p", "db-2", "db", 50) is None  # another host
    assert covering([w], "q", "db-1", "db", 50) is None  # another policy
    assert covering([w], "p", "db-1", "web", 50) is None  # another target
    assert covering([w], "p", "db-1", "db", 100) is None  # over (the end is exclusive)
    assert covering([w], "p", "db-1", "db", -1) is None  # not begun
    assert covering([window()], "any-policy", "any-host", "db", 0) is not None  # '' matches any
    assert covering([window(cancelled=10)], "p", "default", "db", 50) is None


def test_overlapping_windows_hold_as_their_union() -> None:
    early, late = window(1, ends=60), window(2, starts=40, ends=120)
    assert covering([early, late], "p", "default", "db", 50) == late  # the one that ends last
    assert covering([early, late], "p", "default", "db", 10) == early
    assert covering([early, late], "p", "default", "db", 100) == late
    assert covering([early, late], "p", "default", "db", 120) is None


def test_the_firing_outcome_never_runs_a_held_or_refused_incident() -> None:
    assert firing_outcome(None, refused=False, held=False) == "open"
    assert firing_outcome(None, refused=False, held=True) == "open_held"
    # A refused target is escalated, window or not: a person owns it, and it is never runnable (A2).
    assert firing_outcome(None, refused=True, held=True) == "open_escalated"
    assert firing_outcome("active", refused=False, held=True) == "hold"
    assert firing_outcome("waiting", refused=False, held=True) == "hold"
    assert firing_outcome("waiting", refused=False, held=False) == "reactivate"
    for status in ("maintenance", "escalated"):
        assert firing_outcome(status, refused=False, held=True) == "attach"
        assert firing_outcome(status, refused=False, held=False) == "attach"
    assert firing_outcome("active", refused=False, held=False) == "attach"


@pytest_asyncio.fixture
async def stores(store_url: str) -> AsyncIterator[Callable[[], Any]]:
    opened: list[Store] = []

    async def open_one() -> Store:
        store = make(store_url)
        await store.open()
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        await store.close()


def fire(fp: str = "f1", target: str = "db", policy: str = "p", host: str = "default") -> Firing:
    return Firing(policy, target, ref(fp, container=target), host=host)


async def declare(store: Store, starts: float = T0, ends: float = T0 + 3600, **kw: str) -> MaintenanceWindow:
    return await store.maintenance_add(
        kw.get("target", "db"),
        kw.get("host", ANY),
        kw.get("policy", ANY),
        starts,
        ends,
        kw.get("reason", "disk swap CHG-1"),
        "alice@ops",
        T0,
    )


async def test_an_alert_in_a_window_opens_an_incident_that_is_never_claimed_or_run(
    stores: Callable[[], Any],
) -> None:
    store = await stores()
    w = await declare(store)
    (result,) = await firing(store, fire(), now=T0 + 1)
    incident = result.incident
    assert result.created and result.held == w and incident is not None
    assert incident.status == "maintenance" and incident.lease_owner == ""
    assert "window 1" in incident.reason and "disk swap CHG-1" in incident.reason
    # Long after any lease would have expired, no replica claims it, and no backend call is confirmed for it.
    assert await store.claim_expired("b", T0 + 500, T0 + 515) == []
    with pytest.raises(LeaseLost):
        await store.lease_confirm(Fence(incident.id, "a", incident.lease_epoch), T0 + 2, T0 + 30)
    trail = await store.audit_trail(incident.id)
    kinds = [a.kind for a in trail]
    assert kinds == ["opened", "maintenance"]
    assert trail[1].detail["window"] == w.id and trail[1].detail["reason"] == "disk swap CHG-1"
    assert trail[1].detail["by"] == "alice@ops"
    # A re-send and a second alert of the same target attach to it, still held.
    (again,) = await firing(store, fire("f2"), now=T0 + 2)
    assert not again.created and again.held is None and again.incident is not None
    assert again.incident.status == "maintenance"
    added = await store.audit_trail(None, kinds=["maintenance_added"])
    assert added[0].detail["target"] == "db" and added[0].detail["by"] == "alice@ops"


async def test_a_window_on_another_host_or_policy_holds_nothing_here(stores: Callable[[], Any]) -> None:
    store = await stores()
    await declare(store, host="db-1", policy="p")
    (other_host,) = await firing(store, fire("f1", host="db-2"), now=T0 + 1)
    (other_policy,) = await firing(store, fire("f2", policy="q", host="db-1"), now=T0 + 1)
    (held,) = await firing(store, fire("f3", policy="p", host="db-1"), now=T0 + 1)
    assert other_host.incident is not None and other_host.incident.status == "active"
    assert other_policy.incident is not None and other_policy.incident.status == "active"
    assert held.incident is not None and held.incident.status == "maintenance"


async def test_a_refused_target_in_a_window_is_still_escalated(stores: Callable[[], Any]) -> None:
    store = await stores()
    await declare(store, target="db")
    refused = Firing("p", "db", ref("f1"), reason="target 'db' is not in the allow list")
    (result,) = await firing(store, refused, now=T0 + 1)
    assert result.incident is not None and result.incident.status == "escalated" and result.held is None


async def test_a_window_that_begins_fences_the_running_ladder_and_its_end_resumes_it_once(
    stores: Callable[[], Any],
) -> None:
    a, b = await stores(), await stores()
    (opened,) = await firing(a, fire(), now=T0 - 10)
    incident = opened.incident
    assert incident is not None and incident.status == "active"
    old = Fence(incident.id, "a", incident.lease_epoch)
    await declare(a, starts=T0, ends=T0 + 60)  # scheduled ahead: nothing held before it begins
    assert (await a.maintenance_pass("a", T0 - 1, T0 + 14)).held == ()
    changes = await a.maintenance_pass("a", T0 + 1, T0 + 16)
    assert [(i.id, i.status) for i, _ in changes.held] == [(incident.id, "maintenance")]
    # The ladder that was running holds a stale token: it can neither write nor call a backend.
    with pytest.raises(LeaseLost):
        await a.lease_confirm(old, T0 + 2, T0 + 30)
    token = current_fence.set(old)
    try:
        with pytest.raises(LeaseLost):
            await a.step_started(incident.id, 0, "act", "container.restart", 1, T0 + 2)
    finally:
        current_fence.reset(token)
    # In force: another pass changes nothing.
    assert await b.maintenance_pass("b", T0 + 30, T0 + 45) == type(changes)()
    # It ends on time, its alert still firing: both replicas pass at once, exactly one resumes it.
    passes = await asyncio.gather(
        a.maintenance_pass("a", T0 + 60, T0 + 75), b.maintenance_pass("b", T0 + 60, T0 + 75)
    )
    resumed = [i for p in passes for i in p.resumed]
    assert len(resumed) == 1
    after = resumed[0]
    assert after.id == incident.id and after.status == "active"
    assert after.lease_epoch > incident.lease_epoch + 1 and after.lease_owner in ("a", "b")
    # Leased: nobody else claims it before the lease expires.
    assert await b.claim_expired("c", T0 + 61, T0 + 76, reclaim_own=False) == []
    kinds = [x.kind for x in await a.audit_trail(incident.id)]
    assert kinds[-2:] == ["maintenance", "maintenance_ended"]


async def test_cancelling_a_window_releases_what_it_held_and_a_running_ladder_is_left_alone(
    stores: Callable[[], Any],
) -> None:
    store = await stores()
    w = await declare(store)
    (held,) = await firing(store, fire(), now=T0 + 1)
    assert held.incident is not None
    # Still in force: the pass skips nothing to release.
    assert (await store.maintenance_pass("a", T0 + 2, T0 + 17)).resumed == ()
    cancelled = await store.maintenance_cancel(w.id, "bob@ops", T0 + 5)
    assert cancelled is not None and cancelled.cancelled_at == T0 + 5
    # An old ladder of this incident still running here: the pass leaves it for the next one.
    assert (await store.maintenance_pass("a", T0 + 6, T0 + 21, running=[held.incident.id])).resumed == ()
    (resumed,) = (await store.maintenance_pass("a", T0 + 7, T0 + 22)).resumed
    assert resumed.id == held.incident.id and resumed.status == "active" and resumed.lease_owner == "a"
    # A second cancel changes nothing; an unknown window is None.
    again = await store.maintenance_cancel(w.id, "carol@ops", T0 + 8)
    assert again is not None and again.cancelled_at == T0 + 5
    assert await store.maintenance_cancel(999, "x", T0 + 8) is None
    audit = await store.audit_trail(None, kinds=["maintenance_cancelled"])
    assert [a.detail["cancelled_by"] for a in audit] == ["bob@ops"]


async def test_overlapping_windows_hold_until_the_last_ends(stores: Callable[[], Any]) -> None:
    store = await stores()
    first = await declare(store, ends=T0 + 60)
    await declare(store, starts=T0 + 30, ends=T0 + 120)
    (held,) = await firing(store, fire(), now=T0 + 1)
    assert held.incident is not None
    await store.maintenance_cancel(first.id, "bob", T0 + 40)
    assert (await store.maintenance_pass("a", T0 + 41, T0 + 56)).resumed == ()
    assert (await store.maintenance_pass("a", T0 + 100, T0 + 115)).resumed == ()
    (resumed,) = (await store.maintenance_pass("a", T0 + 120, T0 + 135)).resumed
    assert resumed.id == held.incident.id


async def test_an_alert_that_resolves_in_a_window_closes_its_incident_quietly(
    stores: Callable[[], Any],
) -> None:
    store = await stores()
    await declare(store)
    (held,) = await firing(store, fire(), now=T0 + 1)
    assert held.incident is not None
    (closed,) = await store.record_intake([resolved("f1")], [], T0 + 2, "a", 0)
    assert [i.status for i in closed] == ["resolved"]  # type: ignore[union-attr]
    assert await store.open_incidents() == []
    assert await store.outbox_entries(held.incident.id) == []  # nobody was told anything
    changes = await store.maintenance_pass("a", T0 + 4000, T0 + 4015)
    assert changes.resumed == () and changes.closed == ()


async def test_a_new_alert_on_a_waiting_incident_in_a_window_is_held_not_reactivated(
    stores: Callable[[], Any],
) -> None:
    store = await stores()
    (opened,) = await firing(store, fire("f1"), now=T0 - 10)
    assert opened.incident is not None
    await store.set_status(opened.incident.id, "waiting", "recovered", T0 - 5)
    await declare(store)
    (second,) = await firing(store, fire("f2"), now=T0 + 1)
    assert not second.reactivated and second.held is not None and second.incident is not None
    assert second.incident.status == "maintenance" and second.incident.id == opened.incident.id
    # A waiting incident is not held by a window that merely begins: its ladder is over, not running.
    (other,) = await firing(store, fire("f3", target="web"), now=T0 - 10)
    assert other.incident is not None
    await store.set_status(other.incident.id, "waiting", "recovered", T0 - 5)
    await declare(store, target="web")
    assert (await store.maintenance_pass("a", T0 + 2, T0 + 17)).held == ()


async def test_windows_are_listed_until_they_end_and_survive_a_restart(store_url: str) -> None:
    store = make(store_url)
    await store.open()
    try:
        past = await declare(store, starts=T0 - 100, ends=T0 - 50)
        now_on = await declare(store)
        ahead = await declare(store, starts=T0 + 7200, ends=T0 + 9000)
    finally:
        await store.close()
    store = make(store_url)  # a restart, or another replica
    await store.open()
    try:
        assert [w.id for w in await store.maintenance_windows(T0)] == [now_on.id, ahead.id]
        assert [w.id for w in await store.maintenance_windows(T0 - 86_400)] == [past.id, now_on.id, ahead.id]
        assert ahead.state(T0) == "scheduled" and now_on.state(T0) == "in force" and past.state(T0) == "ended"
        assert (await store.table_rows())["maintenance"] == 3
    finally:
        await store.close()


async def test_a_new_alert_on_an_active_incident_in_a_window_holds_it_and_fences_its_ladder(
    stores: Callable[[], Any],
) -> None:
    store = await stores()
    (opened,) = await firing(store, fire("f1"), now=T0 - 10)
    assert opened.incident is not None and opened.incident.status == "active"
    old = Fence(opened.incident.id, "a", opened.incident.lease_epoch)
    await declare(store)  # no pass has run yet: intake holds it with the next alert
    (second,) = await firing(store, fire("f2"), now=T0 + 1)
    assert second.held is not None and second.incident is not None
    assert second.incident.status == "maintenance" and second.incident.id == opened.incident.id
    assert second.incident.lease_epoch == old.epoch + 1 and second.incident.lease_owner == ""
    with pytest.raises(LeaseLost):
        await store.lease_confirm(old, T0 + 2, T0 + 30)
    assert await store.claim_expired("b", T0 + 500, T0 + 515) == []
