"""An alert's episodes (fingerprint, startsAt): a seen episode is never a new problem, a resolution resolves
exactly its own episode, and a new episode is never swallowed by an incident that waits on an old one.

On both stores (real SQLite and PostgreSQL), whatever the arrival order: clustered Alertmanagers deliver one
peer's stale firing milliseconds after the other's resolved (issue 12 item 2, issue 19 items 3 and 4).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from test_store import make, ref, resolved

from remediator.store.base import Firing, FiringResult, Store

S1 = "2026-11-23T10:00:00+00:00"
S2 = "2026-11-23T11:00:00+00:00"


@pytest_asyncio.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    opened = make(store_url)
    await opened.open()
    yield opened
    await opened.close()


async def fire(store: Store, fp: str = "f1", starts: str = S1, now: float = 100.0) -> FiringResult:
    (result,) = await store.record_intake([Firing("p", "db", ref(fp, starts=starts))], [], now, "a", now + 15)
    assert isinstance(result, FiringResult)
    return result


async def test_a_late_copy_of_a_resolved_firing_opens_nothing(store: Store) -> None:
    first = await fire(store)
    assert first.created and first.incident is not None
    (closed,) = await store.record_intake([resolved("f1", S1)], [], 101, "a", 0)
    assert [i.id for i in closed] == [first.incident.id]  # type: ignore[union-attr]
    late = await fire(store, now=101.01)  # the other Alertmanager peer's stale firing
    assert late.stale and late.incident is None and not late.created
    assert await store.open_incidents() == []
    assert "stale_firing" in [a.kind for a in await store.audit_trail()]


async def test_a_resolved_that_overtakes_its_firing_still_wins(store: Store) -> None:
    assert await store.record_intake([resolved("f1", S1)], [], 100, "a", 0) == [[]]
    late = await fire(store, now=100.01)
    assert late.stale and late.incident is None
    assert await store.open_incidents() == []


async def test_a_late_resolved_of_an_earlier_episode_leaves_the_current_one_open(store: Store) -> None:
    await fire(store, starts=S1)
    second = await fire(store, starts=S2, now=200)  # S1 ended unseen: S2 is a new episode
    assert second.created and second.incident is not None
    assert await store.record_intake([resolved("f1", S1)], [], 201, "a", 0) == [[]]
    (still,) = await store.open_incidents()
    assert still.id == second.incident.id
    # Alertmanager's next repeat of firing(S2) is a re-send, not a new problem.
    again = await fire(store, starts=S2, now=202)
    assert again.duplicate and again.duplicate_of == second.incident.id


async def test_an_older_episode_never_seen_before_is_stale(store: Store) -> None:
    await fire(store, starts=S2)
    old = await fire(store, starts=S1, now=101)
    assert old.stale and old.incident is None
    assert len(await store.open_incidents()) == 1


async def test_a_new_episode_is_not_swallowed_by_an_incident_waiting_on_the_old_one(store: Store) -> None:
    first = await fire(store, starts=S1)
    assert first.incident is not None
    await store.set_status(first.incident.id, "escalated", "ladder ran out", 150)
    # S1 resolved without us hearing it, and the alert fired again: a new episode, so a new incident.
    second = await fire(store, starts=S2, now=200)
    assert second.created and second.incident is not None
    assert second.incident.id != first.incident.id and second.incident.status == "active"
    assert [i.id for i in second.superseded] == [first.incident.id]
    assert (await store.get_incident(first.incident.id)).status == "resolved"  # type: ignore[union-attr]
    kinds = [a.kind for a in await store.audit_trail(first.incident.id)]
    assert "alert_superseded" in kinds and kinds[-1] == "resolved"


async def test_another_alert_still_firing_keeps_the_incident_open(store: Store) -> None:
    first = await fire(store, "f1", S1)
    await fire(store, "f2", S1)  # another alert on the same target attaches
    second = await fire(store, "f1", S2, now=200)
    assert not second.created and second.superseded == ()
    assert second.incident is not None and first.incident is not None
    assert second.incident.id == first.incident.id


async def test_the_store_remembers_episodes_across_a_restart(store_url: str, tmp_path: Path) -> None:
    a = make(store_url)
    await a.open()
    await fire(a)
    await a.record_intake([resolved("f1", S1)], [], 101, "a", 0)
    await a.close()
    b = make(store_url)
    await b.open()
    try:
        assert (await fire(b, now=300)).stale
    finally:
        await b.close()


async def test_a_new_alert_on_a_waiting_incident_makes_it_active_again(store: Store) -> None:
    first = await fire(store, "f1", S1)
    assert first.incident is not None
    await store.set_status(first.incident.id, "waiting", "recovered; waiting for the alert to resolve", 150)
    other = await fire(store, "f2", S1, now=200)  # another alert on the same target: a new problem
    assert other.reactivated and other.incident is not None and other.incident.id == first.incident.id
    assert other.incident.status == "active" and other.incident.lease_epoch == first.incident.lease_epoch + 1
    again = await fire(store, "f2", S1, now=201)  # its re-send is only a re-send
    assert again.duplicate and not again.reactivated


async def test_a_later_episode_that_resolved_unseen_ends_the_earlier_one(store: Store) -> None:
    first = await fire(store, starts=S1)
    assert first.incident is not None
    # S2 fired and resolved within one group interval (or its firing was lost): only its resolved arrives.
    (closed,) = await store.record_intake([resolved("f1", S2)], [], 300, "a", 0)
    assert [i.id for i in closed] == [first.incident.id]  # type: ignore[union-attr]
    assert await store.open_incidents() == []
