"""Retention (issue 14 item 1) on both stores: it deletes exactly what is old and no longer needed, never a row
something still needs (an open incident, an undelivered escalation, an unprocessed notification, what the
guards count, a young episode tombstone), keeps the SQLite file from growing, survives a full disk, and
refuses a bad setting."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from helpers import REPO, FakeClock, eventually, fill
from pydantic import ValidationError

from remediator.actions.catalogue import SPECS
from remediator.domain.policies import Policy
from remediator.engine.retention import Retention, guard_window_s
from remediator.errors import StoreError
from remediator.guards import limits
from remediator.metrics import Metrics
from remediator.policy.loader import load_dir
from remediator.settings import GuardSettings, RetentionSettings, Settings
from remediator.store.base import AlertRef, Firing, FiringResult, History, Note, Resolved, Store
from remediator.store.postgres import PostgresStore
from remediator.store.sqlite import SqliteStore
from remediator.store.sqlite.retention import old_prefix_end

T = 1_000_000.0
"""'now' of every test: the times below are seconds before it."""

POLICY = """
name: db
match: [alertname = DatabaseDown]
target: {kind: container, from_label: container, allow: ["db[0-9]*"]}
steps:
  - act: container.restart
    verify: {resolved_within_s: 60}
  - escalate: log
limits:
  cooldown_s: 600
  max_actions: {count: 3, window_s: 3600}
  flapping: {count: 2, window_s: 7200}
"""
GUARDS = GuardSettings(budget_window_s=3600)
SHORT = RetentionSettings(
    inbox_s=3600, incidents_s=600, outbox_s=600, audit_s=600, episodes_s=600, batch=2, pause_s=0.001
)
"""Every retention far shorter than the guard windows (the longest: flapping, 7200 s)."""


def make(url: str) -> Store:
    if url.startswith("sqlite:"):
        return SqliteStore(Path(url.removeprefix("sqlite:")))
    return PostgresStore(url)


@pytest.fixture
def policies(tmp_path: Path) -> list[Policy]:
    directory = tmp_path / "policies"
    directory.mkdir()
    (directory / "db.yaml").write_text(POLICY)
    return load_dir(directory, SPECS)


@pytest_asyncio.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    opened = make(store_url)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


def retention(store: Store, policies: list[Policy], settings: RetentionSettings = SHORT) -> Retention:
    return Retention(store, settings, GUARDS, lambda: policies, Metrics(), FakeClock(T))


def ref(fp: str, container: str, starts: str = "2026-11-23T10:00:00+00:00", ts: float = 1.0) -> AlertRef:
    return AlertRef(fp, starts, {"alertname": "DatabaseDown", "container": container}, {}, ts)


async def fire(store: Store, target: str, at: float) -> int:
    (result,) = await store.record_intake(
        [Firing("db", target, ref(f"fp-{target}", target))], [], T - at, "a", T - at + 15
    )
    assert isinstance(result, FiringResult) and result.incident is not None
    return result.incident.id


async def act(store: Store, incident_id: int, at: float) -> None:
    step = await store.step_started(incident_id, 1, "act", "container.restart", 1, T - at)
    await store.step_finished(step, "ok", "", T - at + 5)


async def resolve(store: Store, target: str, at: float) -> None:
    await store.record_intake([Resolved(f"fp-{target}", ref("", "").starts_at, 1.0)], [], T - at, "a", 0)


async def escalate(store: Store, incident_id: int, at: float, delivered: bool) -> None:
    entry = await store.outbox_put(incident_id, "log", f"k-{incident_id}-{at}", {}, T - at, "a", T - at + 15)
    if delivered:
        await store.outbox_update(entry.id, "delivered", 1, "", T - at + 1)


async def notify(store: Store, at: float, processed: bool) -> int:
    inbox_id = await store.inbox_put('{"n": 1}', T - at)
    if processed:
        await store.record_intake([Note("unmatched", {"at": at})], [inbox_id], T - at, "a", 0)
    return inbox_id


async def history(store: Store, policy: Policy, target: str) -> History:
    lim = policy.limits
    return await store.history(
        "db",
        target,
        0,
        since_target=T - lim.max_actions.window_s,
        since_budget=T - GUARDS.budget_window_s,
        since_flap=T - lim.flapping.window_s,
    )


def decisions(h: History, policy: Policy, target: str) -> list[str | None]:
    """What the gate would decide from this history (limits.py), refusal reasons or None."""
    lim = policy.limits
    refusals = [
        limits.flapping(h.incidents_opened, lim.flapping.count, lim.flapping.window_s, target),
        limits.cooldown(h.last_other_action_at, T, lim.cooldown_s, target),
        limits.rate_limit(h.target_actions, lim.max_actions.count, lim.max_actions.window_s, target),
        limits.budget(h.all_actions, GUARDS.budget_count, GUARDS.budget_window_s),
    ]
    return [None if r is None else r.reason for r in refusals]


async def test_retention_deletes_exactly_the_old_rows_nobody_needs(
    store: Store, policies: list[Policy]
) -> None:
    # Old and finished: everything of it goes (incident, step, alert, audit, delivered entry, episode).
    gone = await fire(store, "db1", at=20_000)
    await act(store, gone, at=19_990)
    await resolve(store, "db1", at=19_000)
    await escalate(store, gone, at=18_500, delivered=True)
    # Resolved long ago, but acted 5000 s ago: inside the rate-limit window the guards count.
    acted = await fire(store, "db2", at=20_000)
    await act(store, acted, at=5_000)
    await resolve(store, "db2", at=4_000)
    await escalate(store, acted, at=18_500, delivered=True)  # delivered long ago, its incident resolved: goes
    # Opened 5000 s ago, no action: inside the flapping window.
    flapped = await fire(store, "db3", at=5_000)
    await resolve(store, "db3", at=4_900)
    # Still open, everything old; its delivered entry says whom a resolution must reach.
    still_open = await fire(store, "db4", at=20_000)
    await act(store, still_open, at=19_990)
    await escalate(store, still_open, at=18_500, delivered=True)
    # Resolved long ago with an escalation not yet delivered.
    undelivered = await fire(store, "db5", at=20_000)
    await resolve(store, "db5", at=19_000)
    await escalate(store, undelivered, at=18_500, delivered=False)
    # The inbox: old processed (goes), old unprocessed and young processed (stay); each processed one
    # leaves an unattached audit record of its time.
    await notify(store, at=5_000, processed=True)
    unprocessed = await notify(store, at=5_000, processed=False)
    young = await notify(store, at=100, processed=True)
    # Episode tombstones (a resolved with no firing seen): old goes, young stays.
    await store.record_intake([Resolved("tomb-old", "s", 1.0)], [], T - 5_000, "a", 0)
    await store.record_intake([Resolved("tomb-young", "s", 1.0)], [], T - 100, "a", 0)

    kept = {i: (await store.steps(i), await store.audit_trail(i), await store.outbox_entries(i))
            for i in (acted, flapped, still_open, undelivered)}  # fmt: skip
    before = await store.table_rows()
    deleted = await retention(store, policies).run_once()

    assert deleted == {
        "inbox": 1,
        "audit": 3 + 1,  # opened, resolved and the alert's resolution of db1; one unmatched note
        "steps": 1,
        "incident_alerts": 1,
        "incidents": 1,
        "outbox": 2,  # db1's and db2's; never db4's (open) nor db5's (undelivered)
        "episodes": 2,  # db1's episode (its incident is gone) and the old tombstone
    }
    after = await store.table_rows()
    assert {t: before[t] - after[t] for t in before if before[t] != after[t]} == deleted
    assert await store.get_incident(gone) is None and await store.steps(gone) == []
    assert await store.audit_trail(gone) == [] and await store.outbox_entries(gone) == []
    for incident_id, rows in kept.items():
        assert await store.get_incident(incident_id) is not None
        assert (await store.steps(incident_id), await store.audit_trail(incident_id)) == rows[:2]
        assert await store.outbox_entries(incident_id) == ([] if incident_id == acted else rows[2])
    assert [i for i, _ in await store.inbox_pending()] == [unprocessed]
    assert [a.detail["at"] for a in await store.audit_trail(kinds=["unmatched"])] == [100]
    assert young > unprocessed
    # The young tombstone still makes a late firing of its episode stale; the old one was forgotten.
    late = [Firing("db", "db9", AlertRef(fp, "s", {"container": "db9"}, {}, 1.0)) for fp in ("tomb-young",)]
    (result,) = await store.record_intake(late, [], T, "a", T + 15)
    assert isinstance(result, FiringResult) and result.stale
    # A second run finds nothing more.
    assert await retention(store, policies).run_once() == {}


async def test_the_guards_decide_the_same_before_and_after_a_run(
    store: Store, policies: list[Policy]
) -> None:
    (policy,) = policies
    for n, target in enumerate(("db1", "db2", "db3")):
        for episode in range(3):  # three incidents per target, the last ones inside every window
            at = 9_000 - 3_000 * episode + n
            incident = (await store.record_intake(
                [Firing("db", target, ref(f"{target}-{episode}", target, f"s{episode}", float(episode)))],
                [], T - at, "a", T - at + 15,
            ))[0]  # fmt: skip
            assert isinstance(incident, FiringResult) and incident.incident is not None
            await act(store, incident.incident.id, at=at - 10)
            await store.record_intake(
                [Resolved(f"{target}-{episode}", f"s{episode}", float(episode))], [], T - at + 60, "a", 0
            )
    targets = ("db1", "db2", "db3", "db4")
    before = {t: await history(store, policy, t) for t in targets}
    assert before["db1"].target_actions == 1 and before["db1"].incidents_opened == 2  # the windows matter
    assert guard_window_s(policies, GUARDS) == 7200
    deleted = await retention(store, policies).run_once()
    assert deleted["incidents"] == 3  # the oldest of each target went
    after = {t: await history(store, policy, t) for t in targets}
    assert after == before  # the kept incidents hold the latest action, so even the cooldown's input is equal
    assert {t: decisions(after[t], policy, t) for t in targets} == {
        t: decisions(before[t], policy, t) for t in targets
    }


async def test_several_replicas_run_retention_at_once(fresh_pg_url: str, policies: list[Policy]) -> None:
    stores = [PostgresStore(fresh_pg_url) for _ in range(3)]
    for s in stores:
        await s.open()
    try:
        first = stores[0]
        for n in range(60):
            await notify(first, at=5_000, processed=True)
            incident = await fire(first, f"db{n}", at=20_000)
            await act(first, incident, at=19_990)
            await resolve(first, f"db{n}", at=19_000)
        settings = SHORT.model_copy(update={"batch": 7})
        runs = await asyncio.gather(*(retention(s, policies, settings).run_once() for s in stores))
        total: dict[str, int] = {}
        for run in runs:
            for table, count in run.items():
                total[table] = total.get(table, 0) + count
        assert total == {
            "inbox": 60,
            "audit": 60 * 4,
            "steps": 60,
            "incident_alerts": 60,
            "incidents": 60,
            "episodes": 60,
        }
        rows = await first.table_rows()
        assert {t: n for t, n in rows.items() if n} == {}
    finally:
        for s in stores:
            await s.close()


def _on_disk(path: Path) -> int:
    return sum(os.stat(p).st_size for p in (path, Path(f"{path}-wal")) if p.exists())


async def test_the_sqlite_file_stops_growing_across_fill_and_retain_cycles(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    store = SqliteStore(path)
    await store.open()
    clock = FakeClock(T)
    settings = RetentionSettings(inbox_s=60, audit_s=60, batch=500, pause_s=0.001)
    job = Retention(store, settings, GUARDS, list, Metrics(), clock)
    body = json.dumps({"padding": "x" * 2_000})
    sizes = []
    try:
        for _cycle in range(6):
            ids = await asyncio.gather(*(store.inbox_put(body, clock()) for _ in range(1_500)))
            await store.record_intake([Note("unmatched", {"body": body})], ids, clock(), "a", 0)
            await store._wal.checkpoint()  # what its thread does every second: the rows reach the file
            full = path.stat().st_size
            clock.advance(3_600)
            await job.run_once()
            await store._wal.checkpoint()
            assert path.stat().st_size < full / 4, "the freed pages were not given back"
            sizes.append(_on_disk(path))
        assert max(sizes[2:]) <= sizes[1] * 1.1, sizes  # the file and its WAL stopped growing
        rows = await store.table_rows()
        assert rows["inbox"] == 0 and rows["audit"] == 0
    finally:
        await store.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # INCREMENTAL, set on the new file


async def test_a_resolved_incident_whose_alert_still_fires_is_kept(
    store: Store, policies: list[Policy]
) -> None:
    # Resolved while its alert still fires (its ladder ended, or by hand): the alert's episode is kept while it
    # fires and every re-send is recorded as a duplicate of this incident, so the incident must outlive it.
    incident = await fire(store, "db1", at=20_000)
    await store.set_status(incident, "resolved", "closed by hand", T - 19_000)
    deleted = await retention(store, policies).run_once()
    assert "incidents" not in deleted and await store.get_incident(incident) is not None
    (resend,) = await store.record_intake([Firing("db", "db1", ref("fp-db1", "db1"))], [], T, "a", T + 15)
    assert isinstance(resend, FiringResult) and resend.duplicate and resend.duplicate_of == incident
    assert (await store.audit_trail(incident))[-1].kind == "duplicate"
    # Once the alert resolves, the incident goes with the next run like any other.
    await resolve(store, "db1", at=5_000)
    assert (await retention(store, policies).run_once()).get("incidents") == 1
    assert await store.get_incident(incident) is None


def test_the_old_prefix_of_a_table_is_found_by_id_whatever_the_gaps() -> None:
    # SQLite's inbox and unattached audit records have no index on their time (D45): retention finds where
    # the old rows end by looking ids up, which must be exact with ids deleted anywhere.
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, at REAL NOT NULL)")
    assert old_prefix_end(db, "t", "at", 10.0) == 0  # empty
    db.executemany("INSERT INTO t VALUES (?, ?)", [(i, float(i)) for i in range(1, 201)])
    db.execute("DELETE FROM t WHERE id % 7 = 0 OR id BETWEEN 40 AND 90")
    ids = [row[0] for row in db.execute("SELECT id FROM t ORDER BY id")]
    for cut in (0.0, 1.0, 1.5, 39.0, 40.0, 41.0, 60.0, 91.0, 91.5, 150.0, 200.0, 200.5, 1e9):
        end = old_prefix_end(db, "t", "at", cut)
        assert all(i < end for i in ids if i < cut), (cut, end)  # every old row is below it
        assert all(i >= end for i in ids if i >= cut), (cut, end)  # no younger row is
    # Rows written while the clock was a year ahead, then the clock put right: they do not hide the old rows
    # after them from a search told what is too far ahead to be honest.
    db.execute("DELETE FROM t")
    db.executemany("INSERT INTO t VALUES (?, ?)", [(i, 1e9 + i) for i in range(1, 5_001)])  # ahead
    db.executemany("INSERT INTO t VALUES (?, ?)", [(i, i - 5_000.0) for i in range(5_001, 6_001)])  # old
    db.executemany("INSERT INTO t VALUES (?, ?)", [(i, i - 4_000.0) for i in range(6_001, 7_001)])  # young
    assert old_prefix_end(db, "t", "at", 1_500.0) < 5_001  # taken for young, the block would hide them
    assert old_prefix_end(db, "t", "at", 1_500.0, future=1e6) == 6_001


async def test_a_clock_stepped_back_never_gets_a_young_row_deleted(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.sqlite3")
    await store.open()
    try:
        settings = RetentionSettings(inbox_s=60, audit_s=60, batch=500, pause_s=0.001)
        # Written in this order: old, young, then old again (the clock went back), then young.
        times = [T - 5_000, T - 10, T - 4_000, T - 5]
        for at in times:
            inbox_id = await store.inbox_put("{}", at)
            await store.record_intake([Note("unmatched", {"at": at})], [inbox_id], at, "a", 0)
        # The range read (the backtest's source) still finds every row in it.
        assert sorted(at for at, _ in await store.inbox_received(T - 5_000, T - 4_000)) == [
            T - 5_000,
            T - 4_000,
        ]
        await Retention(store, settings, GUARDS, list, Metrics(), FakeClock(T)).run_once()
        # The first old row goes, the young ones stay; the old one written after a younger one may have to
        # wait for it to age.
        for left in (
            {at for at, _ in await store.inbox_received(0, T)},
            {a.detail["at"] for a in await store.audit_trail(kinds=["unmatched"])},
        ):
            assert T - 5_000 not in left and {T - 10, T - 5} <= left, left
    finally:
        await store.close()


async def test_a_full_disk_during_a_run_fails_the_run_and_leaves_a_store_that_opens_and_reads(
    small_disk: Path, policies: list[Policy]
) -> None:
    path = small_disk / "store.sqlite3"
    store = SqliteStore(path)
    await store.open()
    metrics = Metrics()
    settings = RetentionSettings(inbox_s=60, audit_s=60, batch=50, pause_s=0.001, interval_s=0.05)
    job = Retention(store, settings, GUARDS, lambda: policies, metrics, FakeClock(T))
    ids = await asyncio.gather(*(store.inbox_put('{"n": 1}', T - 5_000) for _ in range(2_000)))
    await store.record_intake([Note("unmatched", {})], ids, T - 5_000, "a", 0)
    open_incident = await fire(store, "db1", at=20_000)
    # The WAL emptied, so that deleting needs new room on the disk, and none is left.
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    filler = await asyncio.to_thread(fill, small_disk)
    task = asyncio.create_task(job.run())
    try:
        await eventually(lambda: metrics.retention_last_run._value.get() > 0, timeout=10)
        assert metrics.retention_last_success._value.get() == 0
        await asyncio.sleep(0.2)
        assert not task.done()  # the failed run is retried, never the end of the task
        assert len(await store.list_incidents()) == 1  # it still reads
        filler.unlink()
        await eventually(lambda: metrics.retention_last_success._value.get() == 1, timeout=10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()
    reopened = SqliteStore(path)
    await reopened.open()
    try:
        assert (await reopened.table_rows())["inbox"] == 0
        assert [i.id for i in await reopened.open_incidents()] == [open_incident]
    finally:
        await reopened.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


async def test_a_failed_store_call_is_a_store_error_not_a_crash(
    tmp_path: Path, policies: list[Policy]
) -> None:
    store = SqliteStore(tmp_path / "never-opened.sqlite3")
    with pytest.raises(StoreError):
        await retention(store, policies).run_once()


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("REMEDIATOR_RETENTION__INBOX_S", "0", "retention.inbox_s"),
        ("REMEDIATOR_RETENTION__INCIDENTS_S", "-86400", "retention.incidents_s"),
        ("REMEDIATOR_RETENTION__EPISODES_S", "0", "retention.episodes_s"),
        ("REMEDIATOR_RETENTION__BATCH", "0", "retention.batch"),
        ("REMEDIATOR_RETENTION__INTERVAL_S", "-1", "retention.interval_s"),
    ],
)
def test_a_zero_or_negative_retention_is_refused_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as refused:
        Settings()
    message = str(refused.value)
    assert field in message and "greater than 0" in message


def test_serve_refuses_to_start_with_a_zero_retention(tmp_path: Path) -> None:
    env = {**os.environ, "REMEDIATOR_STATE_DIR": str(tmp_path), "REMEDIATOR_RETENTION__OUTBOX_S": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "remediator", "serve", "--port", "0"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2  # a configuration error: one line, named as it was set, no traceback
    assert "error: REMEDIATOR_RETENTION__OUTBOX_S: Input should be greater than 0: '0'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "remediator.sqlite3").exists()  # refused before anything was opened


def test_store_stats_shows_rows_per_table_and_size(store_url: str, tmp_path: Path) -> None:
    async def fill_some() -> None:
        store = make(store_url)
        await store.open()
        try:
            await notify(store, at=10, processed=True)
            await fire(store, "db1", at=10)
        finally:
            await store.close()

    asyncio.run(fill_some())
    where = (
        {"REMEDIATOR_STORE__PATH": store_url.removeprefix("sqlite:")}
        if store_url.startswith("sqlite:")
        else {"REMEDIATOR_STORE__URL": store_url}
    )
    env = {**os.environ, "REMEDIATOR_STATE_DIR": str(tmp_path / "state"), **where}
    args = [sys.executable, "-m", "remediator", "store", "stats"]
    shown = subprocess.run(
        [*args, "-o", "json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    stats = json.loads(shown.stdout)
    assert stats["tables"]["inbox"] == 1 and stats["tables"]["incidents"] == 1
    assert stats["tables"]["audit"] == 2 and stats["tables"]["episodes"] == 1
    assert stats["size_bytes"] > 0
    text = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert "incidents" in text.stdout and "size on disk" in text.stdout


async def test_the_daemon_runs_retention_and_exports_its_metrics(start_app: Callable[..., Any]) -> None:
    app = await start_app(REMEDIATOR_RETENTION__INTERVAL_S="0.2")
    await app.store.inbox_put("{}", 1.0)  # 1970: far past any retention, but unprocessed, so it stays
    await eventually(lambda: app.metrics.retention_last_success._value.get() == 1, timeout=10)
    samples = {
        (s.name, s.labels.get("table", "")): s.value
        for m in app.metrics.registry.collect()
        for s in m.samples
    }
    assert samples[("remediator_store_rows", "inbox")] >= 1
    assert samples[("remediator_store_size_bytes", "")] > 0
