"""Ingest: how many Alertmanager notifications remediator acknowledges per second, and how fast, against a
bare aiohttp handler measured in the same run.

remediator runs as `python -m remediator serve` with its durable SQLite store (WAL, every acknowledgement
flushed with fdatasync) on the real disk and the shipped policies; the baseline is bench/bare_handler.py
(parse the JSON, answer 200). Each notification carries one new alert that no policy takes, so what is measured is the webhook (auth,
validation, the inbox write that must commit before the 200) and intake's bookkeeping running beside it,
not actions. Phases, alternating between the two servers, repeated for each round:

- max: 32 keep-alive connections send as fast as answers come (closed loop) -> alerts/s;
- fixed rates (500, 1000, 2000 alerts/s, open loop): latency from when each request was due to its
  answer, so falling behind shows as latency.

After each remediator phase the bench waits for intake's backlog to drain (reported, not part of the
figures). The throughput ratio is the median over rounds of each round's ratio (remediator's max phase
against the bare handler's just before it), so the machine's drift between rounds cancels.
Targets: >= 2,000 alerts/s; >= 0.5x the bare handler's throughput; p99 < 25 ms at 500 alerts/s.

    .venv/bin/python bench/ingest.py [--rounds 5] [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import shutil
import sys
from collections import defaultdict

import common
from common import Row

RATES = (500, 1000, 2000)
CONNECTIONS = 32
_ids = itertools.count()


def requests(port: int, count: int) -> list[bytes]:
    out = []
    for _ in range(count):
        i = next(_ids)
        body = common.notification_json(
            common.alert_json(
                "IngestBench", f"ingest-{i:08d}", container=f"svc-{i % 50}", instance=f"10.0.0.{i % 200}:9100"
            )
        )
        out.append(common.post_request(port, body))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each phase")
    parser.add_argument(
        "--against",
        metavar="REF",
        help="also measure the daemon of commit REF in the same run (its max phases beside this tree's)",
    )
    args = parser.parse_args()
    audit = common.CpuAudit.quiet_start()

    work = common.workdir("ingest")
    rem = common.start_remediator(work, common.REPO / "policies")
    bare = common.start_bare_handler(work)
    before = None
    if args.against:
        source = common.checkout(args.against, work)
        (work / "before").mkdir()
        before = common.start_remediator(work / "before", source / "policies", source=source)
    figures: dict[str, list[float]] = defaultdict(list)
    statuses: dict[str, dict[int, int]] = {"remediator": {}, "bare": {}, "before": {}}
    try:
        for round_no in range(1, args.rounds + 1):
            phases = [("bare", bare), ("remediator", rem)]
            if (
                before is not None
            ):  # alternate which of the two follows the bare phase, so neither is favoured
                phases.insert(1 + round_no % 2, ("before", before))
            for name, server in phases:
                load = requests(server.port, int(args.seconds * 12_000))
                cpu_before = server.cpu_s()
                result = asyncio.run(common.closed_loop(server.port, load, CONNECTIONS, args.seconds))
                if server is not bare:
                    figures[f"{name} drain after max"].append(common.wait_drained(server))
                figures[f"{name} max"].append(result.throughput)
                if (
                    server is not bare
                ):  # paired with the bare phase of its round: drift between rounds cancels
                    figures[f"{name} max ratio"].append(result.throughput / figures["bare max"][-1])
                # Intake's share (the drain) is part of what an alert costs.
                figures[f"{name} cpu"].append((server.cpu_s() - cpu_before) / max(result.ok, 1) * 1e6)
                for code, n in result.statuses.items():
                    statuses[name][code] = statuses[name].get(code, 0) + n
            for rate in RATES:
                for name, server in (("bare", bare), ("remediator", rem)):
                    load = requests(server.port, int(rate * args.seconds))
                    result = asyncio.run(common.open_loop(server.port, load, rate))
                    figures[f"{name} {rate} p50"].append(result.pct_ms(50))
                    figures[f"{name} {rate} p99"].append(result.pct_ms(99))
                    figures[f"{name} {rate} thr"].append(result.throughput)
                    for code, n in result.statuses.items():
                        statuses[name][code] = statuses[name].get(code, 0) + n
                    if server is rem:
                        common.wait_drained(rem)
            print(
                f"round {round_no}: max {figures['remediator max'][-1]:,.0f}/s vs bare {figures['bare max'][-1]:,.0f}/s;"
                f" p99 at 500/s {figures['remediator 500 p99'][-1]:.1f} ms",
                flush=True,
            )
        rem_rss = rem.peak_rss_mb()
        bare_rss = bare.peak_rss_mb()
    finally:
        rem.stop()
        bare.stop()
        if before is not None:
            before.stop()

    m = {key: common.median(values) for key, values in figures.items()}
    non_200 = sum(n for code, n in statuses["remediator"].items() if code != 200)
    rows = [
        Row(
            "max throughput",
            m["remediator max"],
            m["bare max"],
            "alerts/s",
            ">= 2,000",
            m["remediator max"] >= 2000,
            0,
        ),
        Row(
            "  ratio to the bare handler (median of rounds)",
            m["remediator max ratio"],
            None,
            "x",
            ">= 0.50",
            m["remediator max ratio"] >= 0.5,
            2,
        ),
    ]
    for rate in RATES:
        p99_ok = m[f"remediator {rate} p99"] < 25 if rate == 500 else None
        rows += [
            Row(
                f"at {rate}/s: achieved",
                m[f"remediator {rate} thr"],
                m[f"bare {rate} thr"],
                "alerts/s",
                digits=0,
            ),
            Row(
                f"at {rate}/s: p50 ack latency",
                m[f"remediator {rate} p50"],
                m[f"bare {rate} p50"],
                "ms",
                digits=2,
            ),
            Row(
                f"at {rate}/s: p99 ack latency",
                m[f"remediator {rate} p99"],
                m[f"bare {rate} p99"],
                "ms",
                "< 25" if rate == 500 else "",
                p99_ok,
                2,
            ),
        ]
    rows += [
        Row("intake drain after a max phase", m["remediator drain after max"], None, "s", digits=2),
        Row("server CPU per alert (intake included)", m["remediator cpu"], m["bare cpu"], "us", digits=0),
        Row("peak RSS", rem_rss, bare_rss, "MiB", digits=0),
        Row("answers other than 200", non_200, None, "", "0", non_200 == 0, 0),
    ]
    if before is not None:
        rows += [
            Row(
                f"commit {args.against}: max throughput", m["before max"], m["bare max"], "alerts/s", digits=0
            ),
            Row(
                f"commit {args.against}: ratio (median of rounds)", m["before max ratio"], None, "x", digits=2
            ),
            Row(
                f"commit {args.against}: server CPU per alert", m["before cpu"], m["bare cpu"], "us", digits=0
            ),
            Row(
                f"this tree against {args.against}: ratio of ratios",
                m["remediator max ratio"] / m["before max ratio"],
                None,
                "x",
                digits=2,
            ),
        ]
    note = (
        f"{args.rounds} rounds x {args.seconds:g} s phases, medians; one alert per notification;"
        f" {CONNECTIONS} connections for max. {common.command_line()}"
    )
    met = common.print_table(
        "ingest: POST /alerts to 200, durable SQLite store", rows, "bare aiohttp", note, audit
    )
    shutil.rmtree(work, ignore_errors=True)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
