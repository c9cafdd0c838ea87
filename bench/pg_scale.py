"""PostgreSQL at scale: ingest with the PostgreSQL store, one replica and three replicas on one PostgreSQL, beside
the SQLite store, in the same run.

What it measures: `python -m remediator serve` daemons taking alerts that a policy matches (alertname
ScaleDown, 50 containers, a new alert each time), so that every alert goes through intake's per-target
advisory locks (record_intake locks every (policy, target) and fingerprint key of its batch, sorted, for the
whole transaction). After the first alert of each target opens its incident, the others attach to it. The
policy's action never runs (REMEDIATOR_GUARDS__DRY_RUN=true): what is measured is ingest and intake. Three
configurations, in alternating phases of each round:

- sqlite: one daemon, the SQLite store on the real disk (the baseline);
- pg x1: one daemon, PostgreSQL;
- pg x3: three daemons (replicas) on one database; every notification goes to every replica (as
  docs/operations.md says to configure Alertmanager), each replica through its own 16 connections;
- pg x3 disjoint (for information: the ceiling without lock contention): the same three replicas, but each
  gets alerts of its own on targets of its own, so no two replicas ever want the same advisory lock.

Per phase: a closed loop for --seconds, then the wait until intake's backlog is empty. Figures: acknowledged
alerts/s (all replicas together: "in total"), processed alerts/s (acknowledged / (phase + drain)), and, from
pg_stat_activity sampled every 20 ms during pg phases, the share of samples in which some backend waited on an
advisory lock. Medians over rounds. Target: pg x3 >= 1,500 alerts/s in total (processed). The PostgreSQL is
tests/realparts' throwaway cluster, which runs with fsync=off (its commits are not flushed; SQLite's are), so
the PostgreSQL figures are an upper bound of what a durable one does.

    .venv/bin/python bench/pg_scale.py [--rounds 3] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import shutil
import sys
import threading
import time
from collections import defaultdict

import asyncpg
import common
import scale_common
from common import Row

TARGETS = 50
CONNECTIONS = 32
REPLICA_CONNECTIONS = 16
CONFIGS = ("sqlite", "pg x1", "pg x3", "pg x3 disjoint")
_ids = itertools.count()

POLICY = """\
name: scale
match:
  - alertname = ScaleDown
target:
  kind: container
  from_label: container
  allow: ["scale-[0-9]+"]
steps:
  - act: container.restart
    verify: {resolved_within_s: 3600}
"""

SETTINGS = {
    "REMEDIATOR_GUARDS__DRY_RUN": "true",
    "REMEDIATOR_LOG__FORMAT": "json",
    "REMEDIATOR_PROMETHEUS__URL": "",
    "REMEDIATOR_DOCKER__HOST": "unix:///nonexistent/docker.sock",
}


def bodies(count: int, group: int = 0) -> list[dict[str, object]]:
    """``count`` notifications of one new ScaleDown alert each, on the TARGETS containers of ``group``."""
    out = []
    for _ in range(count):
        i = next(_ids)
        alert = common.alert_json(
            "ScaleDown",
            f"scale-{i:09d}",
            container=f"scale-{group * 1000 + i % TARGETS}",
            instance=f"10.3.0.{i % 200}:9100",
        )
        out.append(common.notification_json(alert))
    return out


class LockWaits:
    """Samples pg_stat_activity: how often some backend waits on an advisory lock."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.samples = 0
        self.waiting = 0
        self.max_waiters = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        db = await asyncpg.connect(self.dsn)
        try:
            while not self._stop.is_set():
                n = await db.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND wait_event = 'advisory'"
                )
                self.samples += 1
                self.waiting += n > 0
                self.max_waiters = max(self.max_waiters, n)
                await asyncio.sleep(0.02)
        finally:
            await db.close()

    def __enter__(self) -> LockWaits:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def share(self) -> float:
        return self.waiting / self.samples if self.samples else 0.0


def phase(
    servers: list[common.Process], seconds: float, connections: int, disjoint: bool = False
) -> tuple[float, float, int]:
    """Every server gets the same notifications (as Alertmanager sends one to each replica), or with
    ``disjoint`` each its own, on targets of its own; returns (acked alerts/s in total, processed alerts/s in
    total, non-200 answers)."""
    count = int(seconds * 6_000)
    shared = bodies(count)

    async def run() -> list[common.LoadResult]:
        loads = [
            [common.post_request(s.port, body) for body in (bodies(count, r + 1) if disjoint else shared)]
            for r, s in enumerate(servers)
        ]
        return await asyncio.gather(
            *(
                common.closed_loop(s.port, load, connections, seconds)
                for s, load in zip(servers, loads, strict=True)
            )
        )

    started = time.perf_counter()
    results = asyncio.run(run())
    loaded = time.perf_counter() - started
    for server in servers:
        common.wait_drained(server, timeout=300)
    total = time.perf_counter() - started
    ok = sum(r.ok for r in results)
    bad = sum(n for r in results for code, n in r.statuses.items() if code != 200)
    return ok / loaded, ok / total, bad


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    args = parser.parse_args()

    work = common.workdir("pgscale")
    policies = work / "policies"
    policies.mkdir()
    (policies / "scale.yaml").write_text(POLICY)
    pg = scale_common.realparts().Postgres()
    servers: dict[str, list[common.Process]] = {}
    figures: dict[str, list[float]] = defaultdict(list)
    non_200 = 0
    try:
        base = pg.dsn.rsplit("/", 1)[0]

        async def create() -> None:
            db = await asyncpg.connect(pg.dsn)
            try:
                for name in ("one", "three"):
                    await db.execute(f'CREATE DATABASE "{name}"')
            finally:
                await db.close()

        asyncio.run(create())

        def daemon(name: str, replica: str, **env: str) -> common.Process:
            d = work / name
            d.mkdir(exist_ok=True)
            return common.start_remediator(d, policies, REMEDIATOR_REPLICA_ID=replica, **SETTINGS, **env)

        servers["sqlite"] = [daemon("sqlite", "s")]
        servers["pg x1"] = [daemon("pg1", "one-a", REMEDIATOR_STORE__URL=f"{base}/one")]
        servers["pg x3"] = [
            daemon(f"pg3{r}", f"three-{r}", REMEDIATOR_STORE__URL=f"{base}/three") for r in "abc"
        ]
        audit = None if args.no_wait else common.CpuAudit.quiet_start()
        for round_no in range(1, args.rounds + 1):
            for name in CONFIGS:
                group = servers[name.removesuffix(" disjoint")]
                conns = CONNECTIONS if len(group) == 1 else REPLICA_CONNECTIONS
                dsn = f"{base}/{'one' if name == 'pg x1' else 'three'}"
                disjoint = name.endswith("disjoint")
                if name == "sqlite":
                    acked, processed, bad = phase(group, args.seconds, conns)
                    share = float("nan")
                else:
                    with LockWaits(dsn) as waits:
                        acked, processed, bad = phase(group, args.seconds, conns, disjoint)
                    share = waits.share
                    figures[f"{name} max waiters"].append(waits.max_waiters)
                figures[f"{name} acked"].append(acked)
                figures[f"{name} processed"].append(processed)
                figures[f"{name} lock share"].append(share)
                non_200 += bad
            print(
                f"round {round_no}: processed/s sqlite {figures['sqlite processed'][-1]:,.0f},"
                f" pg x1 {figures['pg x1 processed'][-1]:,.0f}, pg x3 {figures['pg x3 processed'][-1]:,.0f}"
                f" (advisory waits in {figures['pg x3 lock share'][-1]:.0%} of samples),"
                f" pg x3 disjoint {figures['pg x3 disjoint processed'][-1]:,.0f}"
                f" ({figures['pg x3 disjoint lock share'][-1]:.0%})",
                flush=True,
            )
        # The log notifier writes each escalation (dry-run ladders escalate) at ERROR, by design.
        errors = {
            name: [
                e
                for e in scale_common.log_problems(s.log)[0]
                if "remediator.escalation.log: ESCALATION" not in e
            ]
            for group in servers.values()
            for s in group
            for name in [s.log.parent.name]
        }
    finally:
        for group in servers.values():
            for server in group:
                server.stop()
        pg.close()
        shutil.rmtree(work, ignore_errors=True)

    m = {key: common.median(values) for key, values in figures.items()}
    rows = []
    for name in CONFIGS:
        rows += [
            Row(
                f"{name}: acknowledged, in total", m[f"{name} acked"], m["sqlite acked"], "alerts/s", digits=0
            ),
            Row(
                f"{name}: processed (ack + drain), in total",
                m[f"{name} processed"],
                m["sqlite processed"],
                "alerts/s",
                ">= 1,500" if name == "pg x3" else "",
                m[f"{name} processed"] >= 1500 if name == "pg x3" else None,
                0,
            ),
        ]
        if name != "sqlite":
            rows.append(
                Row(
                    f"{name}: samples with an advisory-lock waiter",
                    m[f"{name} lock share"] * 100,
                    None,
                    "%",
                    digits=0,
                )
            )
    n_errors = sum(len(v) for v in errors.values())
    rows += [
        Row("answers other than 200", non_200, None, "", "0", non_200 == 0, 0),
        Row("ERROR lines in the daemons' logs", n_errors, None, "", "0", n_errors == 0, 0),
    ]
    note = (
        f"matched alerts ({TARGETS} targets, dry-run), one per notification; {args.rounds} rounds x {args.seconds:g} s"
        f" phases + drain, medians; pg x3: each notification to each of 3 replicas, {REPLICA_CONNECTIONS}"
        f" connections each; PostgreSQL with fsync=off. {common.command_line()}"
    )
    for name, lines in errors.items():
        for line in lines[:5]:
            print(f"  ERROR in {name}: {line}")
    met = common.print_table("PostgreSQL at scale: ingest, 1 and 3 replicas", rows, "sqlite", note, audit)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
