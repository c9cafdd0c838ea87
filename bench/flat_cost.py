"""Flat cost: does remediator slow down as its store fills? A store holding a long history against an empty
one, measured in the same run.

The full store is pre-filled through the store API (SqliteStore, or PostgresStore with --store postgres):
1,000,000 processed notifications (inbox_put, then record_intake of an "unmatched" decision, in batches: an
inbox row and an audit row each) and 100,000 closed incidents (record_intake of a Firing that opens one, an
act step started and finished, and a Resolved that closes it), spread over 1,000 targets of one policy (100
incidents per target), all with timestamps between 20 h and 1 h ago. Measured, full against empty:

- ingest: the real daemon, `python -m remediator serve`, on each store (two daemons, the shipped policies),
  alternating 3-second closed-loop phases of 32 connections sending new alerts no policy takes (the method
  of bench/ingest.py); the ratio is the median over rounds of full/empty throughput, each full phase against
  the empty phase just before it;
- the guards' admission check: store.history(...) exactly as engine/gate.py calls it (default windows:
  budget 3600 s, the policy's default rate limit and flapping windows), for an open incident of a target that
  has 100 closed incidents (each with an action) in the full store and none in the empty one, and for one of a
  target without history in either; blocks of calls alternating between the stores; ratio = empty median
  latency / full median latency (both must be >= 0.9);
- `incidents list` (list_incidents(limit=100)) the same way, for information; so that both return 100 rows,
  the "empty" store holds one page of 100 closed incidents (of other targets, 2 h old).

Retention: the pre-fill is younger than every default retention period (inbox 24 h, incidents 90 days), so the
daemons' retention run (a minute after start) deletes nothing during the measurement; it does count the rows
of every table at the end of its run, which the full store pays for (that is what a real daemon does).

Targets: ingest ratio >= 0.9; admission-check ratios >= 0.9. With --explain, SQLite's query plans of history()'s
statements are printed.

    .venv/bin/python bench/flat_cost.py [--notifications 1000000] [--incidents 100000] [--rounds 5]
        [--store sqlite|postgres] [--keep DIR] [--reuse DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import shutil
import sqlite3
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import common
import scale_common
from common import Row

from remediator.store.base import AlertRef, Firing, FiringResult, Note, Resolved, Store
from remediator.store.postgres import PostgresStore
from remediator.store.sqlite import SqliteStore

POLICY = "flat"
COOLDOWN_S = 300.0  # remediator.domain.policies.Limits().cooldown_s
TARGETS = 1_000
BATCH = 1_000
CONNECTIONS = 32
MEASURED_TARGET = "flat-0007"
NEW_TARGET = "fresh-0001"
PAGE = 100
_ids = itertools.count()


def notification_body(i: int) -> str:
    """A notification as Alertmanager sends it (what the webhook stores in the inbox)."""
    alert = common.alert_json(
        "FlatNoise",
        f"fill-{i:09d}",
        container=f"svc-{i % 50}",
        instance=f"10.0.{i // 250 % 250}.{i % 250}:9100",
    )
    return json.dumps(common.notification_json(alert))


def alert_ref(fingerprint: str, starts_ts: float, target: str) -> AlertRef:
    starts = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(starts_ts))
    labels = {"alertname": "FlatDown", "severity": "critical", "container": target}
    return AlertRef(fingerprint, starts, labels, {"summary": "FlatDown fired"}, starts_ts)


async def prefill(
    store: Store, notifications: int, incidents: int, now: float, progress: bool = True
) -> None:
    """Fill ``store`` with ``notifications`` processed notifications and ``incidents`` closed incidents, all
    between 20 h and 1 h before ``now``."""
    span = 19 * 3600
    t0 = now - 20 * 3600
    started = time.monotonic()
    for first in range(0, notifications, BATCH):
        count = min(BATCH, notifications - first)
        at = t0 + span * first / max(notifications, 1)
        ids = await asyncio.gather(*(store.inbox_put(notification_body(first + j), at) for j in range(count)))
        events = [
            Note("unmatched", {"fingerprint": f"fill-{first + j:09d}", "labels": {"alertname": "FlatNoise"}})
            for j in range(count)
        ]
        await store.record_intake(events, list(ids), at + 0.01, "prefill", at)
        if progress and (first // BATCH) % 100 == 0:
            print(f"  notifications {first:,} ({time.monotonic() - started:.0f} s)", flush=True)
    rounds = max(1, incidents // TARGETS)
    targets = [f"flat-{k:04d}" for k in range(min(TARGETS, incidents))]
    for r in range(rounds):
        at = t0 + span * r / rounds
        for first in range(0, len(targets), BATCH):
            keys = targets[first : first + BATCH]
            firing = [Firing(POLICY, t, alert_ref(f"hist-{t}", at - 5, t), policy_version="v1") for t in keys]
            results = await store.record_intake(firing, [], at, "prefill", at + 15)
            opened = [res.incident.id for res in results if isinstance(res, FiringResult) and res.incident]
            step_ids = await asyncio.gather(
                *(store.step_started(i, 1, "act", "container.restart", 1, at + 1) for i in opened)
            )
            await asyncio.gather(*(store.step_finished(s, "ok", "restarted", at + 1.4) for s in step_ids))
            resolved = [Resolved(f"hist-{t}", alert_ref("", at - 5, t).starts_at, at - 5) for t in keys]
            await store.record_intake(resolved, [], at + 30, "prefill", at + 45)
        if progress and r % 10 == 0:
            print(f"  incidents {r * len(targets):,} ({time.monotonic() - started:.0f} s)", flush=True)


async def open_measured_incident(store: Store, now: float, target: str = MEASURED_TARGET) -> int:
    """An incident whose admission is checked: open, of ``target``."""
    firing = Firing(POLICY, target, alert_ref(f"measured-{target}", now - 10, target), policy_version="v1")
    (result,) = await store.record_intake([firing], [], now, "bench", now + 3600)
    assert isinstance(result, FiringResult) and result.incident is not None
    return result.incident.id


async def one_page(store: Store, now: float) -> None:
    """PAGE closed incidents of other targets, 2 h old: the empty store's `incidents list` returns as many rows
    as the full one's (a list of 1 row against one of 100 would measure the rows, not the store)."""
    at = now - 7200
    firing = [
        Firing(POLICY, f"page-{k:03d}", alert_ref(f"page-{k}", at - 5, f"page-{k:03d}")) for k in range(PAGE)
    ]
    await store.record_intake(firing, [], at, "prefill", at + 15)
    resolved = [Resolved(f"page-{k}", alert_ref("", at - 5, "x").starts_at, at - 5) for k in range(PAGE)]
    await store.record_intake(resolved, [], at + 30, "prefill", at + 45)


async def timed_block(call: Callable[[], Awaitable[Any]], count: int) -> list[float]:
    out = []
    for _ in range(count):
        t0 = time.perf_counter()
        await call()
        out.append(time.perf_counter() - t0)
    return out


async def measure_reads(full: Store, empty: Store, rounds: int, calls: int) -> dict[str, list[float]]:
    """Medians (s) per block of history() and list_incidents(), alternating between the stores."""
    now = time.time()
    await one_page(empty, now)
    stores = {"full": full, "empty": empty}
    ids = {
        (name, target): await open_measured_incident(store, now, target)
        for name, store in stores.items()
        for target in (MEASURED_TARGET, NEW_TARGET)
    }
    out: dict[str, list[float]] = defaultdict(list)
    for _ in range(rounds):
        for name in ("empty", "full"):
            store = stores[name]
            for label, target in (("history", MEASURED_TARGET), ("history new", NEW_TARGET)):
                incident_id = ids[(name, target)]

                def history(
                    store: Store = store, incident_id: int = incident_id, target: str = target
                ) -> Awaitable[Any]:
                    t = time.time()
                    # As engine/gate.py asks it, with the default windows (max_actions and flapping 3600 s, the
                    # cooldown the default Limits gives).
                    return store.history(
                        POLICY,
                        target,
                        incident_id,
                        t - 3600,
                        t - 3600,
                        t - 3600,
                        since_cooldown=t - COOLDOWN_S,
                    )

                out[f"{name} {label}"].append(statistics.median(await timed_block(history, calls)))

            def listing(store: Store = store) -> Awaitable[Any]:
                return store.list_incidents(limit=PAGE)

            out[f"{name} list"].append(statistics.median(await timed_block(listing, calls // 4)))
        for label in ("history", "history new", "list"):
            out[f"{label} ratio"].append(out[f"empty {label}"][-1] / out[f"full {label}"][-1])
    return out


def explain(path: Path) -> str:
    """SQLite's plans for history()'s four statements (remediator/store/sqlite/store.py)."""
    statements = [
        "SELECT count(*) FROM steps s JOIN incidents i ON i.id = s.incident_id"
        " WHERE s.kind = 'act' AND s.started_at >= ? AND i.target = ?",
        "SELECT count(*) FROM steps WHERE kind = 'act' AND started_at >= ?",
        "SELECT max(coalesce(s.finished_at, s.started_at)) FROM steps s JOIN incidents i ON i.id = s.incident_id"
        " WHERE s.kind = 'act' AND i.policy = ? AND i.target = ? AND i.id != ?",
        "SELECT count(*) FROM incidents WHERE policy = ? AND target = ? AND opened_at >= ?",
    ]
    args = [(0.0, "t"), (0.0,), ("p", "t", 0), ("p", "t", 0.0)]
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    lines = []
    try:
        for sql, params in zip(statements, args, strict=True):
            lines.append(sql)
            for row in db.execute("EXPLAIN QUERY PLAN " + sql, params):
                lines.append(f"    {row[3]}")
    finally:
        db.close()
    return "\n".join(lines)


def ingest_requests(port: int, count: int) -> list[bytes]:
    out = []
    for _ in range(count):
        i = next(_ids)
        body = common.notification_json(
            common.alert_json(
                "IngestBench", f"flat-{i:08d}", container=f"svc-{i % 50}", instance=f"10.0.0.{i % 200}:9100"
            )
        )
        out.append(common.post_request(port, body))
    return out


def measure_ingest(
    work: Path, full_env: dict[str, str], empty_env: dict[str, str], rounds: int, seconds: float
) -> tuple[dict[str, list[float]], dict[str, str]]:
    for sub in ("d-full", "d-empty"):
        (work / sub).mkdir(exist_ok=True)
    full = common.start_remediator(work / "d-full", common.REPO / "policies", **full_env)
    empty = common.start_remediator(work / "d-empty", common.REPO / "policies", **empty_env)
    figures: dict[str, list[float]] = defaultdict(list)
    non_200 = 0
    try:
        for round_no in range(1, rounds + 1):
            for name, server in (("empty", empty), ("full", full)):
                load = ingest_requests(server.port, int(seconds * 8_000))
                result = asyncio.run(common.closed_loop(server.port, load, CONNECTIONS, seconds))
                figures[f"{name} drain"].append(common.wait_drained(server, timeout=120))
                figures[name].append(result.throughput)
                figures[f"{name} p99"].append(result.pct_ms(99))
                non_200 += sum(n for code, n in result.statuses.items() if code != 200)
            figures["ratio"].append(figures["full"][-1] / figures["empty"][-1])
            print(
                f"  ingest round {round_no}: full {figures['full'][-1]:,.0f}/s, empty {figures['empty'][-1]:,.0f}/s"
                f" ({figures['ratio'][-1]:.2f}x)",
                flush=True,
            )
        figures["non-200"].append(non_200)
        logs = {"full": full.log_tail(2000), "empty": empty.log_tail(2000)}
    finally:
        full.stop()
        empty.stop()
    return figures, logs


async def open_store(kind: str, where: Path | str) -> Store:
    store: Store = SqliteStore(Path(where)) if kind == "sqlite" else PostgresStore(str(where))
    await store.open()
    return store


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notifications", type=int, default=1_000_000)
    parser.add_argument("--incidents", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each ingest phase")
    parser.add_argument("--calls", type=int, default=2_000, help="history() calls per block")
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--keep", type=Path, help="keep the pre-filled SQLite file here (to --reuse it)")
    parser.add_argument("--reuse", type=Path, help="a pre-filled SQLite file from --keep (skips the fill)")
    parser.add_argument("--explain", action="store_true", help="print SQLite's plans of history()")
    parser.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    args = parser.parse_args()

    work = common.workdir("flat")
    pg = None
    try:
        if args.store == "postgres":
            pg = scale_common.realparts().Postgres()
            full_where: Path | str = pg.dsn
            empty_where: Path | str = pg.dsn.rsplit("/", 1)[0] + "/empty"
            _create_database(pg.dsn, "empty")
            full_env = {"REMEDIATOR_STORE__URL": str(full_where)}
            empty_env = {"REMEDIATOR_STORE__URL": str(empty_where)}
        else:
            full_where = work / "full.sqlite3"
            empty_where = work / "empty.sqlite3"
            if args.reuse:
                shutil.copy(args.reuse, full_where)
            full_env = {"REMEDIATOR_STORE__PATH": str(full_where)}
            empty_env = {"REMEDIATOR_STORE__PATH": str(empty_where)}

        async def fill_and_read(audit: Any = None) -> tuple[dict[str, list[float]], float]:
            full = await open_store(args.store, full_where)
            empty = await open_store(args.store, empty_where)
            try:
                started = time.monotonic()
                if not args.reuse:
                    await prefill(full, args.notifications, args.incidents, time.time())
                fill_s = time.monotonic() - started
                rows = await full.table_rows()
                print(
                    f"pre-filled in {fill_s:.0f} s: {rows}; {await full.size_bytes() / 2**20:,.0f} MiB",
                    flush=True,
                )
                if args.keep and args.store == "sqlite":
                    await full.close()
                    shutil.copy(full_where, args.keep)
                    full = await open_store(args.store, full_where)
                return await measure_reads(full, empty, args.rounds, args.calls), fill_s
            finally:
                await full.close()
                await empty.close()

        # The fill is not measured; the machine must be quiet for what follows it.
        audit = None
        if not args.no_wait:
            audit = common.CpuAudit.quiet_start()
        reads, fill_s = asyncio.run(fill_and_read())
        if not args.no_wait:
            audit = common.CpuAudit.quiet_start()
        ingest, _logs = measure_ingest(work, full_env, empty_env, args.rounds, args.seconds)
        if args.explain and args.store == "sqlite":
            print(explain(Path(full_where)))
    finally:
        if pg is not None:
            pg.close()
        shutil.rmtree(work, ignore_errors=True)

    m = {
        key: common.median(values)
        for key, values in {**reads, **{f"ingest {k}": v for k, v in ingest.items()}}.items()
    }
    rows = [
        Row("ingest, max throughput", m["ingest full"], m["ingest empty"], "alerts/s", digits=0),
        Row(
            "  ratio full/empty (median of rounds)",
            m["ingest ratio"],
            None,
            "x",
            ">= 0.90",
            m["ingest ratio"] >= 0.9,
            2,
        ),
        Row("  p99 ack latency", m["ingest full p99"], m["ingest empty p99"], "ms", digits=1),
        Row("  intake drain after a phase", m["ingest full drain"], m["ingest empty drain"], "s", digits=2),
        Row(
            "admission check: history(), median",
            m["full history"] * 1e6,
            m["empty history"] * 1e6,
            "us",
            digits=0,
        ),
        Row(
            "  ratio empty/full latency (median of rounds)",
            m["history ratio"],
            None,
            "x",
            ">= 0.90",
            m["history ratio"] >= 0.9,
            2,
        ),
        Row(
            "  the same for a target without history of its own",
            m["full history new"] * 1e6,
            m["empty history new"] * 1e6,
            "us",
            digits=0,
        ),
        Row(
            "  ratio empty/full latency (median of rounds)",
            m["history new ratio"],
            None,
            "x",
            ">= 0.90",
            m["history new ratio"] >= 0.9,
            2,
        ),
        Row("incidents list (100), median", m["full list"] * 1e6, m["empty list"] * 1e6, "us", digits=0),
        Row("  ratio empty/full latency", m["list ratio"], None, "x", digits=2),
        Row("answers other than 200", m["ingest non-200"], None, "", "0", m["ingest non-200"] == 0, 0),
    ]
    note = (
        f"{args.store}: full = {args.notifications:,} processed notifications + {args.incidents:,} closed incidents"
        f" ({TARGETS:,} targets; filled in {fill_s:.0f} s), empty = a new store; {args.rounds} rounds; ingest"
        f" {args.seconds:g} s phases, {CONNECTIONS} connections. {common.command_line()}"
    )
    met = common.print_table("flat cost: a full store against an empty one", rows, "empty store", note, audit)
    return 0 if met else 1


def _create_database(dsn: str, name: str) -> None:
    import asyncpg

    async def create() -> None:
        db = await asyncpg.connect(dsn)
        try:
            await db.execute(f'CREATE DATABASE "{name}"')
        finally:
            await db.close()

    asyncio.run(create())


if __name__ == "__main__":
    sys.exit(main())
