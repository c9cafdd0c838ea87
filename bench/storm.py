"""Storm: 10,000 notifications (2,000 alerts x 5 re-sends) naming 10 containers, as fast as 32 connections
take them. remediator must act exactly as much as its limits allow, stay small, and be done quickly.

remediator runs as `python -m remediator serve` (SQLite store on disk) against a private Docker daemon
(tests/realparts/) with ten running containers. Every alert stays firing. The baseline is the bare
aiohttp handler taking the same 10,000 notifications.

How many restarts are allowed is computed from the policy and the settings, not written down: while an
incident is open, every alert naming its target attaches to it, so each target gets one incident; that
incident's ladder runs the first attempt of its first act step and then waits in verification (a window far
longer than the storm), so it may act once, if the policy's rate limit (max_actions) allows at least one and a
single incident does not already count as flapping; and the global budget (REMEDIATOR_GUARDS__BUDGET_COUNT)
caps the total. With the policy below (default limits) and the default budget: 10 targets x 1 = 10.

Measured from the first notification sent: all acknowledged; drained (intake's backlog empty and every
allowed restart finished). Then, a second later, that no further restart happened. Targets: restarts ==
allowed; peak RSS < 150 MB; drained < 10 s.

    .venv/bin/python bench/storm.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import common
from common import Row

TARGETS = 10
ALERTS = 2_000
RESENDS = 5
CONNECTIONS = 32

POLICY = """\
name: storm
match:
  - alertname = StormDown
target:
  kind: container
  from_label: container
  allow: ["storm-[0-9]+"]
steps:
  - act: container.restart
    with: {timeout_s: 10}
    verify: {resolved_within_s: 600}
    attempts: 2
  - escalate: oncall
"""


def allowed_restarts(policies_dir: Path, targets: int, horizon_s: float) -> int:
    """What the policy's limits and the global budget allow while every alert stays firing for horizon_s."""
    from remediator.app import load_policies
    from remediator.settings import Settings

    settings = Settings(policies_dir=policies_dir)
    (policy,) = load_policies(settings)
    if policy.dry_run or settings.guards.dry_run:
        return 0
    first_act = next(s for s in policy.steps if s.kind == "act")
    assert first_act.name == "container.restart"
    assert first_act.verify is not None and first_act.verify.window_s > horizon_s, (
        "the verification window must outlast the storm, or second attempts would follow"
    )
    per_incident = 1  # the first attempt; the next one only after the verification window
    per_target = min(per_incident, policy.limits.max_actions.count)
    if policy.limits.flapping.count <= 1:  # one incident per target would already count as flapping
        per_target = 0
    return min(targets * per_target, settings.guards.budget_count)


def storm_requests(port: int) -> list[bytes]:
    alerts = [
        common.alert_json(
            "StormDown",
            f"storm-{i:05d}",
            starts_at=f"2026-11-23T10:{i // 60 % 60:02d}:{i % 60:02d}Z",
            container=f"storm-{i % TARGETS}",
            instance=f"10.1.{i // 250}.{i % 250}:9100",
        )
        for i in range(ALERTS)
    ]
    # Alertmanager re-sends every group on each repeat_interval: the same alerts, in rounds.
    return [common.post_request(port, common.notification_json(a)) for _ in range(RESENDS) for a in alerts]


def one_round(
    docker: Any, events: common.Events, policies: Path, round_no: int, against: Path | None
) -> dict[str, float]:
    names = [f"storm-{i}" for i in range(TARGETS)]
    for name in names:
        docker.run_container(name)
    allowed = allowed_restarts(policies, TARGETS, horizon_s=60)
    work = common.workdir(f"storm{round_no}")
    out: dict[str, float] = {"allowed": allowed}

    bare = common.start_bare_handler(work)
    try:
        load = storm_requests(bare.port)
        result = asyncio.run(common.closed_loop(bare.port, load, CONNECTIONS, 60))
        out["bare acked"] = result.elapsed_s
        out["bare ok"] = result.ok
        out["bare rss"] = bare.peak_rss_mb()
    finally:
        bare.stop()

    phases: list[tuple[str, Path | None]] = [("", None)]
    if against is not None:  # alternate which daemon goes first, so neither is favoured
        phases.insert(round_no % 2, ("before ", against))
    try:
        for prefix, source in phases:
            (work / prefix.strip()).mkdir(exist_ok=True)
            daemon = common.start_remediator(
                work / prefix.strip(), policies, source=source, REMEDIATOR_DOCKER__HOST=docker.host
            )
            try:
                for key, value in storm(daemon, events, names, allowed).items():
                    out[prefix + key] = value
            finally:
                daemon.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"round {round_no}: acked in {out['acked']:.2f} s, drained in {out['drained']:.2f} s, "
        f"{out['restarts']:.0f}/{allowed} restarts, peak RSS {out['rss']:.0f} MiB"
        + (f"; before: drained in {out['before drained']:.2f} s" if against is not None else ""),
        flush=True,
    )
    return out


def storm(daemon: common.Process, events: common.Events, names: list[str], allowed: int) -> dict[str, float]:
    """The storm against one daemon: acknowledged, drained, what it did."""
    out: dict[str, float] = {}
    before = {n: events.count(n, "restart") for n in names}
    load = storm_requests(daemon.port)
    started = time.perf_counter()
    result = asyncio.run(common.closed_loop(daemon.port, load, CONNECTIONS, 60))
    out["acked"] = time.perf_counter() - started
    out["ok"] = result.ok
    out["p99 ack"] = result.pct_ms(99)

    def drained() -> bool:
        if common.backlog(daemon) != 0:
            return False
        text = common.http_text(daemon.url + "/metrics")
        finished = common.metric_sum(text, "remediator_actions_total", action="container.restart")
        return finished >= allowed

    common.wait_for(drained, timeout=60, what="storm drained", interval=0.01)
    out["drained"] = time.perf_counter() - started
    time.sleep(1.0)  # anything more that would run has had time to start
    text = common.http_text(daemon.url + "/metrics")
    out["restarts"] = sum(events.count(n, "restart") - before[n] for n in names)
    out["restart actions"] = common.metric_sum(text, "remediator_actions_total", action="container.restart")
    out["ok actions"] = common.metric_sum(
        text, "remediator_actions_total", action="container.restart", outcome="ok"
    )
    out["opened"] = common.metric_sum(text, "remediator_decisions_total", decision="opened")
    out["refusals"] = common.metric_sum(text, "remediator_refusals_total")
    out["received"] = common.metric_sum(text, "remediator_alerts_received_total")
    out["rss"] = daemon.peak_rss_mb()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--against",
        metavar="REF",
        help="also storm the daemon of commit REF in each round, beside this tree's",
    )
    args = parser.parse_args()
    audit = common.CpuAudit.quiet_start()

    realparts = common.realparts()
    work = common.workdir("storm")
    policies = work / "policies"
    policies.mkdir()
    (policies / "storm.yaml").write_text(POLICY)
    against = common.checkout(args.against, work) if args.against else None
    docker = realparts.DockerDaemon()
    events = None
    rounds: dict[str, list[float]] = defaultdict(list)
    try:
        events = common.Events(docker.client)
        for round_no in range(1, args.rounds + 1):
            for key, value in one_round(docker, events, policies, round_no, against).items():
                rounds[key].append(value)
    finally:
        if events is not None:
            events.close()
        docker.close()
        shutil.rmtree(work, ignore_errors=True)

    m = {k: common.median(v) for k, v in rounds.items()}
    allowed = m["allowed"]
    exact = all(r == a for r, a in zip(rounds["restarts"], rounds["allowed"], strict=True))
    total = ALERTS * RESENDS
    rows = [
        Row(
            "notifications answered 200",
            m["ok"],
            m["bare ok"],
            "",
            f"= {total:,}",
            all(v == total for v in rounds["ok"]),
            0,
        ),
        Row(
            "restarts done (docker events), every round",
            m["restarts"],
            None,
            "",
            f"= {allowed:.0f} allowed",
            exact,
            0,
        ),
        Row("  restart actions recorded", m["restart actions"], None, "", digits=0),
        Row("  incidents opened", m["opened"], None, "", digits=0),
        Row("  refusals", m["refusals"], None, "", digits=0),
        Row("all acknowledged after", m["acked"], m["bare acked"], "s", digits=2),
        Row("drained after", m["drained"], m["bare acked"], "s", "< 10", max(rounds["drained"]) < 10, 2),
        Row("p99 acknowledgement latency", m["p99 ack"], None, "ms", digits=1),
        Row("peak RSS", m["rss"], m["bare rss"], "MiB", "< 150 MB", max(rounds["rss"]) * 1.048576 < 150, 0),
    ]
    if args.against:
        ref = args.against
        rows += [
            Row(f"commit {ref}: restarts done, every round", m["before restarts"], None, "", digits=0),
            Row(f"commit {ref}: all acknowledged after", m["before acked"], m["bare acked"], "s", digits=2),
            Row(f"commit {ref}: drained after", m["before drained"], m["bare acked"], "s", digits=2),
            Row(f"commit {ref}: peak RSS", m["before rss"], m["bare rss"], "MiB", digits=0),
            Row(f"this tree against {ref}: drained, ratio", m["drained"], m["before drained"], "s", digits=2),
            # Each round's own ratio, then their median: the machine's drift between rounds cancels.
            Row(
                "  ratio, median of the rounds' ratios",
                common.median(
                    [a / b for a, b in zip(rounds["drained"], rounds["before drained"], strict=True)]
                ),
                None,
                "x",
                digits=2,
            ),
        ]
    note = (
        f"{args.rounds} rounds, medians (targets hold in every round); {ALERTS:,} alerts x {RESENDS} re-sends over "
        f"{TARGETS} targets, {CONNECTIONS} connections; baseline: the bare aiohttp handler. {common.command_line()}"
    )
    met = common.print_table("storm: 10,000 notifications, 10 targets", rows, "bare aiohttp", note, audit)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
